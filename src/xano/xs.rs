//! XanoScript `realtime_channel` files: a `winnow` grammar, the rules it means, and the
//! writer that turns rules back into XanoScript.
//!
//! ```text
//! file     = ws* (block ws*)*
//! block    = "realtime_channel" ws* string ws* "{" entries("=", value) "}"
//! entries  = (ws* key space* ASSIGN ws* VALUE line_end)* ws* "}"
//! line_end = space* comment? ("," | line break | before "}")
//! value    = bool | integer | string | "{" entries(":", scalar) "}"
//! scalar   = bool | integer | string
//! ws       = whitespace, line breaks and `//` comments
//! string   = '"' (any char but '"', '\', line breaks | '\' ["\/nrt] | '\u' 4 hex) '"'
//! ```
//!
//! Block-level attributes are `key = value`, object entries `key: value`; both end at a
//! line break or a comma (a trailing comma before `}` is allowed), in any order. Which keys
//! exist, their types and `message_history`'s values are checked after parsing, on the
//! syntax tree, so every error points at the offending key or value.

use crate::model::{ChannelRule, ChannelSettings, MessagingFlags};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use winnow::ascii::{digit1, line_ending, multispace1, space0};
use winnow::combinator::{alt, cut_err, fail, opt, peek, repeat};
use winnow::error::{ContextError, ErrMode, StrContext, StrContextValue};
use winnow::stream::{LocatingSlice, Location, Stream};
use winnow::token::{any, one_of, take_till, take_while};
use winnow::{ModalResult, Parser};

/// The history sizes Xano offers; any other `message_history` is an error.
pub const HISTORY_SIZES: [usize; 6] = [0, 25, 50, 100, 250, 1000];

const BLOCK_KEYS: &str = "description, active, public_messaging, private_messaging, settings";
const MESSAGING_KEYS: &str = "active, auth";
const SETTINGS_KEYS: &str =
    "anonymous_clients, nested_channels, message_history, auth_channel, presence";

/// A parse or meaning error, at a 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for XsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for XsError {}

/// A rule and where its `realtime_channel` block starts.
#[derive(Debug, Clone, PartialEq)]
pub struct XsRule {
    pub rule: ChannelRule,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl XsRule {
    /// `file:line:column` of the block, for messages.
    pub fn origin(&self) -> String {
        format!("{}:{}:{}", self.file, self.line, self.column)
    }
}

// ------------------------------------------------------------------ syntax tree

#[derive(Debug)]
enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
    Object(Vec<Entry>),
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_at: usize,
    value: Value,
    value_at: usize,
}

#[derive(Debug)]
struct Block {
    at: usize,
    pattern: String,
    pattern_at: usize,
    entries: Vec<Entry>,
}

// ------------------------------------------------------------------ grammar

type Input<'a> = LocatingSlice<&'a str>;

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

fn line_comment(i: &mut Input<'_>) -> ModalResult<()> {
    ("//", take_till(0.., '\n')).void().parse_next(i)
}

/// Whitespace, line breaks and `//` comments.
fn skip_ws(i: &mut Input<'_>) -> ModalResult<()> {
    repeat(0.., alt((multispace1.void(), line_comment))).parse_next(i)
}

/// Spaces, tabs and a trailing `//` comment, up to (not including) the line break.
fn skip_line_space(i: &mut Input<'_>) -> ModalResult<()> {
    (space0, opt(line_comment)).void().parse_next(i)
}

fn identifier<'a>(i: &mut Input<'a>) -> ModalResult<&'a str> {
    (
        one_of(|c: char| c.is_ascii_alphabetic() || c == '_'),
        take_while(0.., |c: char| c.is_ascii_alphanumeric() || c == '_'),
    )
        .take()
        .parse_next(i)
}

fn string(i: &mut Input<'_>) -> ModalResult<String> {
    '"'.parse_next(i)?;
    let mut out = String::new();
    loop {
        out.push_str(take_till(0.., ['"', '\\', '\n', '\r']).parse_next(i)?);
        match peek(opt(any)).parse_next(i)? {
            Some('"') => {
                any.parse_next(i)?;
                return Ok(out);
            }
            Some('\\') => out.push(escape(i)?),
            _ => {
                return cut_err(fail)
                    .context(expected("a closing `\"` before the end of the line"))
                    .parse_next(i)
            }
        }
    }
}

fn escape(i: &mut Input<'_>) -> ModalResult<char> {
    '\\'.parse_next(i)?;
    let c = cut_err(one_of(['"', '\\', '/', 'n', 'r', 't', 'u']))
        .context(expected(
            "an escape after `\\`: \\\" \\\\ \\/ \\n \\r \\t or \\uXXXX",
        ))
        .parse_next(i)?;
    Ok(match c {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'u' => cut_err(
            take_while(4, |c: char| c.is_ascii_hexdigit())
                .verify_map(|hex: &str| u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)),
        )
        .context(expected(
            "four hex digits of a Unicode scalar value after `\\u`",
        ))
        .parse_next(i)?,
        other => other,
    })
}

fn integer(i: &mut Input<'_>) -> ModalResult<i64> {
    cut_err(
        (opt('-'), digit1)
            .take()
            .try_map(|digits: &str| digits.parse::<i64>()),
    )
    .context(expected("an integer"))
    .parse_next(i)
}

/// A value; objects only at block level (`in_object` false).
fn value(i: &mut Input<'_>, in_object: bool) -> ModalResult<(Value, usize)> {
    let what = if in_object {
        "a value (true, false, a number or a \"string\")"
    } else {
        "a value (true, false, a number, a \"string\" or { … })"
    };
    let at = i.current_token_start();
    let value = match peek(opt(any)).parse_next(i)? {
        Some('"') => Value::Str(string(i)?),
        Some('{') if !in_object => {
            '{'.parse_next(i)?;
            Value::Object(entries(i, true)?)
        }
        Some(c) if c == '-' || c.is_ascii_digit() => Value::Int(integer(i)?),
        Some(c) if c.is_ascii_alphabetic() || c == '_' => Value::Bool(
            cut_err(identifier.verify_map(|word: &str| match word {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }))
            .context(expected(what))
            .parse_next(i)?,
        ),
        _ => return cut_err(fail).context(expected(what)).parse_next(i),
    };
    Ok((value, at))
}

/// The entries of a block (`key = value`) or an object (`key: value`), and the closing `}`.
fn entries(i: &mut Input<'_>, in_object: bool) -> ModalResult<Vec<Entry>> {
    let (assign, key_what, assign_what) = if in_object {
        (':', "a key or `}`", "`:`")
    } else {
        ('=', "an attribute name or `}`", "`=`")
    };
    let mut out = Vec::new();
    loop {
        skip_ws(i)?;
        if opt('}').parse_next(i)?.is_some() {
            return Ok(out);
        }
        let key_at = i.current_token_start();
        let key = cut_err(identifier)
            .context(expected(key_what))
            .parse_next(i)?
            .to_string();
        space0.parse_next(i)?;
        cut_err(assign)
            .context(expected(assign_what))
            .parse_next(i)?;
        skip_ws(i)?;
        let (value, value_at) = value(i, in_object)?;
        skip_line_space(i)?;
        cut_err(alt((','.void(), line_ending.void(), peek('}').void())))
            .context(expected("`,`, a line break or `}`"))
            .parse_next(i)?;
        out.push(Entry {
            key,
            key_at,
            value,
            value_at,
        });
    }
}

fn block(i: &mut Input<'_>) -> ModalResult<Block> {
    let at = i.current_token_start();
    cut_err(identifier.verify(|word: &str| word == "realtime_channel"))
        .context(expected("`realtime_channel`"))
        .parse_next(i)?;
    skip_ws(i)?;
    let pattern_at = i.current_token_start();
    let pattern = cut_err(string)
        .context(expected("the channel pattern as a \"string\""))
        .parse_next(i)?;
    skip_ws(i)?;
    cut_err('{').context(expected("`{`")).parse_next(i)?;
    let entries = entries(i, false)?;
    Ok(Block {
        at,
        pattern,
        pattern_at,
        entries,
    })
}

fn file(i: &mut Input<'_>) -> ModalResult<Vec<Block>> {
    let mut blocks = Vec::new();
    loop {
        skip_ws(i)?;
        if i.eof_offset() == 0 {
            return Ok(blocks);
        }
        blocks.push(block(i)?);
    }
}

// ------------------------------------------------------------------ meaning

struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> XsError {
        let (line, column) = line_col(self.text, at);
        XsError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn boolean(&self, e: &Entry) -> Result<bool, XsError> {
        match e.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.err(e.value_at, format!("`{}` must be true or false", e.key))),
        }
    }

    /// No key twice in one block or object.
    fn unique(&self, entries: &[Entry]) -> Result<(), XsError> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for e in entries {
            if let Some(first) = seen.insert(e.key.as_str(), e.key_at) {
                let (line, column) = line_col(self.text, first);
                return Err(self.err(
                    e.key_at,
                    format!("`{}` is set twice (first at {line}:{column})", e.key),
                ));
            }
        }
        Ok(())
    }

    fn object<'e>(&self, e: &'e Entry) -> Result<&'e [Entry], XsError> {
        match &e.value {
            Value::Object(entries) => {
                self.unique(entries)?;
                Ok(entries)
            }
            _ => Err(self.err(e.value_at, format!("`{}` must be an object {{ … }}", e.key))),
        }
    }

    fn unknown(&self, e: &Entry, within: &str, known: &str) -> XsError {
        self.err(
            e.key_at,
            format!(
                "unknown key `{}` in {within} (expected one of: {known})",
                e.key
            ),
        )
    }

    fn messaging(&self, e: &Entry) -> Result<MessagingFlags, XsError> {
        let mut flags = MessagingFlags::default();
        for inner in self.object(e)? {
            match inner.key.as_str() {
                "active" => flags.active = self.boolean(inner)?,
                "auth" => flags.auth = self.boolean(inner)?,
                _ => return Err(self.unknown(inner, &e.key, MESSAGING_KEYS)),
            }
        }
        Ok(flags)
    }

    fn settings(&self, e: &Entry) -> Result<ChannelSettings, XsError> {
        let mut s = ChannelSettings::default();
        for inner in self.object(e)? {
            match inner.key.as_str() {
                "anonymous_clients" => s.anonymous_clients = self.boolean(inner)?,
                "nested_channels" => s.nested_channels = self.boolean(inner)?,
                "auth_channel" => s.auth_channel = self.boolean(inner)?,
                "presence" => s.presence = self.boolean(inner)?,
                "message_history" => {
                    s.message_history = match inner.value {
                        Value::Int(n) if n >= 0 && HISTORY_SIZES.contains(&(n as usize)) => {
                            n as usize
                        }
                        _ => {
                            return Err(self.err(
                                inner.value_at,
                                "`message_history` must be one of 0, 25, 50, 100, 250, 1000",
                            ))
                        }
                    }
                }
                _ => return Err(self.unknown(inner, "settings", SETTINGS_KEYS)),
            }
        }
        Ok(s)
    }

    fn rule(&self, b: &Block) -> Result<ChannelRule, XsError> {
        crate::rules::validate_pattern(&b.pattern).map_err(|why| {
            self.err(
                b.pattern_at,
                format!("invalid channel pattern {:?}: {why}", b.pattern),
            )
        })?;
        self.unique(&b.entries)?;
        let mut rule = ChannelRule::new(&b.pattern);
        for e in &b.entries {
            match e.key.as_str() {
                "description" => match &e.value {
                    Value::Str(s) => rule.description = s.clone(),
                    _ => return Err(self.err(e.value_at, "`description` must be a \"string\"")),
                },
                "active" => rule.active = self.boolean(e)?,
                "public_messaging" => rule.public_messaging = self.messaging(e)?,
                "private_messaging" => rule.private_messaging = self.messaging(e)?,
                "settings" => rule.settings = self.settings(e)?,
                _ => return Err(self.unknown(e, "realtime_channel", BLOCK_KEYS)),
            }
        }
        Ok(rule)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// What the parser met where it gave up, for messages.
fn found(rest: &str) -> String {
    match rest.chars().next() {
        None => "the end of the file".into(),
        Some('\n' | '\r') => "a line break".into(),
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect();
            format!("`{word}`")
        }
        Some(c) if c.is_control() || c.is_whitespace() => format!("{c:?}"),
        Some(c) => format!("`{c}`"),
    }
}

/// Parse XanoScript text; `file` names it in errors and origins.
pub fn parse_str(text: &str, file: &str) -> Result<Vec<XsRule>, XsError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let source = Source { text, file };
    let mut input = LocatingSlice::new(text);
    let blocks = match self::file(&mut input) {
        Ok(blocks) => blocks,
        Err(e) => {
            let at = input.current_token_start();
            let e = match e {
                ErrMode::Backtrack(e) | ErrMode::Cut(e) => e,
                ErrMode::Incomplete(_) => ContextError::new(),
            };
            let what = e
                .context()
                .find_map(|c| match c {
                    StrContext::Expected(v) => Some(v.to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| "valid XanoScript".into());
            let rest = &text[at..];
            let found = match rest.chars().next() {
                // In an escape: just the character after the backslash.
                Some(c) if text[..at].ends_with('\\') && !c.is_whitespace() => format!("`{c}`"),
                _ => found(rest),
            };
            return Err(source.err(at, format!("expected {what}, found {found}")));
        }
    };
    blocks
        .iter()
        .map(|b| {
            let (line, column) = line_col(text, b.at);
            Ok(XsRule {
                rule: source.rule(b)?,
                file: file.to_string(),
                line,
                column,
            })
        })
        .collect()
}

/// Parse one `.xs` file.
pub fn parse_file(path: &Path) -> Result<Vec<XsRule>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_str(&text, &path.display().to_string()).map_err(|e| e.to_string())
}

/// The `*.xs` files of a directory (not its subdirectories), sorted by name.
pub fn xs_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "xs") && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Every rule of every `*.xs` file of a directory, files in name order.
pub fn parse_dir(dir: &Path) -> Result<Vec<XsRule>, String> {
    let mut rules = Vec::new();
    for path in xs_files(dir)? {
        rules.extend(parse_file(&path)?);
    }
    Ok(rules)
}

// ------------------------------------------------------------------ writer

/// A XanoScript string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What of a rule XanoScript cannot say (Switchboard extensions), as `key = value` texts.
fn extensions(rule: &ChannelRule) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(url) = &rule.trigger_url {
        out.push(format!("trigger_url = {url:?}"));
    }
    if rule.trigger_timeout_ms != ChannelRule::new("x").trigger_timeout_ms {
        out.push(format!("trigger_timeout_ms = {}", rule.trigger_timeout_ms));
    }
    if rule.history_events {
        out.push("history_events = true".into());
    }
    if !rule.join_roles.is_empty() {
        out.push(format!("join_roles = {:?}", rule.join_roles));
    }
    if !rule.publish_roles.is_empty() {
        out.push(format!("publish_roles = {:?}", rule.publish_roles));
    }
    if rule.owner_segment {
        out.push("owner_segment = true".into());
    }
    if let Some(table) = rule.owner_table {
        out.push(format!("owner_table = {table}"));
    }
    out
}

/// Rules as XanoScript `realtime_channel` blocks, in the layout of Xano's documentation.
/// Returns the text and notes about what could not be written as it is (Switchboard-only
/// settings, a history size Xano does not offer); each note is also a `//` comment above
/// its block.
pub fn write_xs(rules: &[ChannelRule]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut notes = Vec::new();
    for (n, rule) in rules.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let mut mine = Vec::new();
        let ext = extensions(rule);
        if !ext.is_empty() {
            mine.push(format!(
                "{:?}: Switchboard-only settings left out (XanoScript has no such keys): {}",
                rule.pattern,
                ext.join(", ")
            ));
        }
        let mut history = rule.settings.message_history;
        if !HISTORY_SIZES.contains(&history) {
            let up = HISTORY_SIZES
                .iter()
                .copied()
                .find(|&h| h >= history)
                .unwrap_or(1000);
            mine.push(format!(
                "{:?}: message_history {history} is not a Xano size; written as {up}",
                rule.pattern
            ));
            history = up;
        }
        for note in &mine {
            let _ = writeln!(out, "// {}", note.replace(['\n', '\r'], " "));
        }
        notes.extend(mine);
        let flags = |f: &MessagingFlags| format!("{{ active: {}, auth: {} }}", f.active, f.auth);
        let s = &rule.settings;
        let _ = writeln!(out, "realtime_channel {} {{", quote(&rule.pattern));
        if !rule.description.is_empty() {
            let _ = writeln!(out, "  description = {}", quote(&rule.description));
        }
        let _ = writeln!(out, "  active = {}", rule.active);
        out.push('\n');
        let _ = writeln!(
            out,
            "  public_messaging = {}",
            flags(&rule.public_messaging)
        );
        let _ = writeln!(
            out,
            "  private_messaging = {}",
            flags(&rule.private_messaging)
        );
        out.push('\n');
        let _ = writeln!(out, "  settings = {{");
        let _ = writeln!(out, "    anonymous_clients: {},", s.anonymous_clients);
        let _ = writeln!(out, "    nested_channels: {},", s.nested_channels);
        let _ = writeln!(out, "    message_history: {history},");
        let _ = writeln!(out, "    auth_channel: {},", s.auth_channel);
        let _ = writeln!(out, "    presence: {}", s.presence);
        let _ = writeln!(out, "  }}");
        let _ = writeln!(out, "}}");
    }
    (out, notes)
}

#[cfg(test)]
mod tests;
