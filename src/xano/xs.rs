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

use crate::config::{ChannelRule, ChannelSettings, MessagingFlags};
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
mod tests {
    use super::*;
    use proptest::arbitrary::any;
    use proptest::prelude::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/xano/channels.xs");

    fn flags(active: bool, auth: bool) -> MessagingFlags {
        MessagingFlags { active, auth }
    }

    fn settings(
        anon: bool,
        nested: bool,
        history: usize,
        auth: bool,
        presence: bool,
    ) -> ChannelSettings {
        ChannelSettings {
            anonymous_clients: anon,
            nested_channels: nested,
            message_history: history,
            auth_channel: auth,
            presence,
        }
    }

    fn rule(
        pattern: &str,
        description: &str,
        public: MessagingFlags,
        private: MessagingFlags,
        settings: ChannelSettings,
    ) -> ChannelRule {
        ChannelRule {
            description: description.into(),
            public_messaging: public,
            private_messaging: private,
            settings,
            ..ChannelRule::new(pattern)
        }
    }

    /// The three blocks of Xano's XanoScript realtime documentation, as Xano publishes them.
    fn xano_doc_rules() -> Vec<ChannelRule> {
        vec![
            rule(
                "room:*",
                "Chat room channels",
                flags(true, true),
                flags(true, true),
                settings(false, false, 100, true, true),
            ),
            rule(
                "announcements",
                "System-wide announcements",
                flags(true, false),
                flags(false, false),
                settings(true, false, 25, false, false),
            ),
            rule(
                "user:*",
                "User notification channels",
                flags(false, false),
                flags(true, true),
                settings(false, false, 50, true, false),
            ),
        ]
    }

    fn parse(text: &str) -> Vec<ChannelRule> {
        parse_str(text, "t.xs")
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .into_iter()
            .map(|r| r.rule)
            .collect()
    }

    fn one(text: &str) -> ChannelRule {
        let mut rules = parse(text);
        assert_eq!(rules.len(), 1, "{text}");
        rules.remove(0)
    }

    #[test]
    fn the_xano_documentation_file_reads_unchanged() {
        let parsed = parse_str(FIXTURE, "channels.xs").unwrap();
        let rules: Vec<_> = parsed.iter().map(|r| r.rule.clone()).collect();
        assert_eq!(rules, xano_doc_rules());
        let origins: Vec<_> = parsed.iter().map(XsRule::origin).collect();
        assert_eq!(
            origins,
            ["channels.xs:5:1", "channels.xs:22:1", "channels.xs:39:1"]
        );
    }

    #[test]
    fn each_documentation_block_alone() {
        let blocks: Vec<&str> = FIXTURE
            .split("\nrealtime_channel")
            .skip(1)
            .map(|b| b.split("\n}\n").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 3);
        for (block, expected) in blocks.iter().zip(xano_doc_rules()) {
            let text = format!("realtime_channel{block}\n}}\n");
            assert_eq!(one(&text), expected, "{text}");
        }
    }

    #[test]
    fn missing_attributes_take_the_protocol_defaults() {
        assert_eq!(one(r#"realtime_channel "x" {}"#), ChannelRule::new("x"));
        assert_eq!(
            one("realtime_channel \"x\" {\n  settings = {}\n  public_messaging = {}\n}\n"),
            ChannelRule::new("x")
        );
        let r = one("realtime_channel \"x\" {\n  settings = { presence: true }\n}");
        assert_eq!(r.settings, settings(false, false, 0, false, true));
        assert!(r.active);
        assert_eq!(r.description, "");
        let r = one("realtime_channel \"x\" {\n  active = false\n}");
        assert!(!r.active);
    }

    #[test]
    fn layout_comments_commas_and_order() {
        let expected = rule(
            "room:*",
            "Chat // not a comment",
            flags(true, true),
            flags(true, false),
            settings(false, true, 250, true, true),
        );
        for text in [
            // Any order, comments after values and on their own lines, trailing commas.
            "// head\nrealtime_channel \"room:*\" { // opens\n  settings = {\n    presence: true, // who is here\n    // history\n    message_history: 250,\n    auth_channel: true,\n    nested_channels: true,\n  }\n  private_messaging = { auth: false, active: true, }\n  public_messaging = { auth: true, active: true }\n  description = \"Chat // not a comment\"\n} // done\n// tail",
            // Everything on one line, commas between attributes.
            "realtime_channel \"room:*\" { description = \"Chat // not a comment\", public_messaging = { active: true, auth: true }, private_messaging = { active: true }, settings = { nested_channels: true, message_history: 250, auth_channel: true, presence: true }, }",
            // Object entries separated by line breaks only; blank lines; tabs; CRLF.
            "\r\n\r\nrealtime_channel\t\"room:*\"\r\n{\r\n\tdescription = \"Chat // not a comment\"\r\n\r\n\tpublic_messaging = {\r\n\t\tactive: true\r\n\t\tauth: true\r\n\t}\r\n\tprivate_messaging = { active: true }\r\n\tsettings = {\r\n\t\tnested_channels: true\r\n\t\tmessage_history: 250\r\n\t\tauth_channel: true\r\n\t\tpresence: true\r\n\t}\r\n}\r\n",
            // A byte order mark, a line break after `=`, a comment between blocks' parts.
            "\u{feff}realtime_channel \"room:*\" // the rooms\n{\n  description =\n    \"Chat // not a comment\"\n  public_messaging = { active: true, auth: true }\n  private_messaging = { active: true, auth: false }\n  settings = { nested_channels: true, message_history: 250, auth_channel: true, presence: true }\n}",
        ] {
            assert_eq!(one(text), expected, "{text}");
        }
    }

    #[test]
    fn several_blocks_and_empty_files() {
        assert!(parse("").is_empty());
        assert!(parse("// only comments\n\n// here\n").is_empty());
        let rules = parse("realtime_channel \"a\" {} realtime_channel \"b\" {\n}\n\nrealtime_channel \"c\" { active = false }");
        let patterns: Vec<_> = rules.iter().map(|r| r.pattern.as_str()).collect();
        assert_eq!(patterns, ["a", "b", "c"]);
        assert!(!rules[2].active);
    }

    #[test]
    fn strings_and_escapes() {
        let r =
            one(r#"realtime_channel "a\"b\\c" { description = "tab\there\nline \u00e9 \/ ü 中" }"#);
        assert_eq!(r.pattern, "a\"b\\c");
        assert_eq!(r.description, "tab\there\nline é / ü 中");
    }

    /// (text, line, column, message)
    const ERRORS: &[(&str, usize, usize, &str)] = &[
        // ---- syntax
        ("realtime_chanel \"x\" {}", 1, 1, "expected `realtime_channel`, found `realtime_chanel`"),
        ("\n\n  channel \"x\" {}", 3, 3, "expected `realtime_channel`, found `channel`"),
        ("realtime_channel \"x\" {}\n}", 2, 1, "expected `realtime_channel`, found `}`"),
        ("realtime_channel x {}", 1, 18, "expected the channel pattern as a \"string\", found `x`"),
        ("realtime_channel", 1, 17, "expected the channel pattern as a \"string\", found the end of the file"),
        ("realtime_channel \"x {}", 1, 23, "expected a closing `\"` before the end of the line, found the end of the file"),
        ("realtime_channel \"x\n\" {}", 1, 20, "expected a closing `\"` before the end of the line, found a line break"),
        ("realtime_channel \"x\"\n  active = true\n}", 2, 3, "expected `{`, found `active`"),
        ("realtime_channel \"x\" {\n  active true\n}", 2, 10, "expected `=`, found `true`"),
        ("realtime_channel \"x\" {\n  active: true\n}", 2, 9, "expected `=`, found `:`"),
        ("realtime_channel \"x\" {\n  settings = { presence = true }\n}", 2, 25, "expected `:`, found `=`"),
        ("realtime_channel \"x\" {\n  active = yes\n}", 2, 12, "expected a value (true, false, a number, a \"string\" or { … }), found `yes`"),
        ("realtime_channel \"x\" {\n  active =\n}", 3, 1, "expected a value (true, false, a number, a \"string\" or { … }), found `}`"),
        ("realtime_channel \"x\" {\n  active = [true]\n}", 2, 12, "expected a value (true, false, a number, a \"string\" or { … }), found `[`"),
        ("realtime_channel \"x\" {\n  active = true false\n}", 2, 17, "expected `,`, a line break or `}`, found `false`"),
        ("realtime_channel \"x\" {\n  active = true\n", 3, 1, "expected an attribute name or `}`, found the end of the file"),
        ("realtime_channel \"x\" {\n  active = true,,\n}", 2, 17, "expected an attribute name or `}`, found `,`"),
        ("realtime_channel \"x\" {\n  \"active\" = true\n}", 2, 3, "expected an attribute name or `}`, found `\"`"),
        ("realtime_channel \"x\" {\n  settings = { presence: true,, }\n}", 2, 31, "expected a key or `}`, found `,`"),
        ("realtime_channel \"x\" {\n  settings = { presence: true\n", 3, 1, "expected a key or `}`, found the end of the file"),
        ("realtime_channel \"x\" {\n  settings = { presence: { a: true } }\n}", 2, 26, "expected a value (true, false, a number or a \"string\"), found `{`"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 1.5 }\n}", 2, 34, "expected `,`, a line break or `}`, found `.`"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 99999999999999999999 }\n}", 2, 33, "expected an integer, found `99999999999999999999`"),
        ("realtime_channel \"x\" {\n  description = \"a\\qb\"\n}", 2, 20, "expected an escape after `\\`: \\\" \\\\ \\/ \\n \\r \\t or \\uXXXX, found `q`"),
        ("realtime_channel \"x\" {\n  description = \"\\u12\"\n}", 2, 20, "expected four hex digits of a Unicode scalar value after `\\u`, found `12`"),
        ("realtime_channel \"x\" {\n  description = \"\\ud800\"\n}", 2, 20, "expected four hex digits of a Unicode scalar value after `\\u`, found `d800`"),
        ("realtime_channel \"x\" { // no end", 1, 33, "expected an attribute name or `}`, found the end of the file"),
        // ---- meaning
        ("realtime_channel \"x\" {\n  colour = true\n}", 2, 3, "unknown key `colour` in realtime_channel (expected one of: description, active, public_messaging, private_messaging, settings)"),
        ("realtime_channel \"x\" {\n  join_roles = \"admin\"\n}", 2, 3, "unknown key `join_roles` in realtime_channel"),
        ("realtime_channel \"x\" {\n  settings = { presence: true, history: 25 }\n}", 2, 32, "unknown key `history` in settings (expected one of: anonymous_clients, nested_channels, message_history, auth_channel, presence)"),
        ("realtime_channel \"x\" {\n  public_messaging = { active: true, authenticated: true }\n}", 2, 38, "unknown key `authenticated` in public_messaging (expected one of: active, auth)"),
        ("realtime_channel \"x\" {\n  private_messaging = { enabled: true }\n}", 2, 25, "unknown key `enabled` in private_messaging"),
        ("realtime_channel \"x\" {\n  active = true\n  active = false\n}", 3, 3, "`active` is set twice (first at 2:3)"),
        ("realtime_channel \"x\" {\n  settings = { presence: true,\n    presence: false }\n}", 3, 5, "`presence` is set twice (first at 2:16)"),
        ("realtime_channel \"x\" {\n  active = \"yes\"\n}", 2, 12, "`active` must be true or false"),
        ("realtime_channel \"x\" {\n  active = 1\n}", 2, 12, "`active` must be true or false"),
        ("realtime_channel \"x\" {\n  settings = { presence: 1 }\n}", 2, 26, "`presence` must be true or false"),
        ("realtime_channel \"x\" {\n  public_messaging = { auth: \"no\" }\n}", 2, 30, "`auth` must be true or false"),
        ("realtime_channel \"x\" {\n  description = true\n}", 2, 17, "`description` must be a \"string\""),
        ("realtime_channel \"x\" {\n  settings = true\n}", 2, 14, "`settings` must be an object { … }"),
        ("realtime_channel \"x\" {\n  public_messaging = \"on\"\n}", 2, 22, "`public_messaging` must be an object { … }"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 30 }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"x\" {\n  settings = { message_history: -25 }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"x\" {\n  settings = { message_history: \"100\" }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 1001 }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"a*b\" {}", 1, 18, "invalid channel pattern \"a*b\": `*` may only end a pattern"),
        ("realtime_channel \"\" {}", 1, 18, "invalid channel pattern \"\": must be 1 to 255 bytes"),
        ("realtime_channel \"a b\" {}", 1, 18, "invalid channel pattern \"a b\": must not contain whitespace"),
        // Errors in a later block point into that block; columns count characters.
        ("realtime_channel \"ok\" {}\n\n// ünïcödé\nrealtime_channel \"é\" { colour = 1 }", 4, 24, "unknown key `colour`"),
    ];

    #[test]
    fn every_error_names_file_line_column_and_what_was_expected() {
        let mut wrong = Vec::new();
        for &(text, line, column, message) in ERRORS {
            let err = parse_str(text, "dir/f.xs").expect_err(text);
            let shown = err.to_string();
            if (err.line, err.column) != (line, column)
                || !err.message.starts_with(message)
                || err.file != "dir/f.xs"
                || !shown.starts_with(&format!("dir/f.xs:{line}:{column}: {message}"))
            {
                wrong.push(format!(
                    "{text:?}\n  expected {line}:{column}: {message}\n  got      {shown}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn files_and_directories() {
        let dir = std::env::temp_dir().join(format!("switchboard-xs-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("b.xs"), "realtime_channel \"b\" {}").unwrap();
        std::fs::write(
            dir.join("a.xs"),
            "realtime_channel \"a1\" {}\nrealtime_channel \"a2\" {}",
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "not XanoScript").unwrap();
        std::fs::write(dir.join("sub/c.xs"), "realtime_channel \"c\" {}").unwrap();
        let rules = parse_dir(&dir).unwrap();
        let got: Vec<_> = rules
            .iter()
            .map(|r| (r.rule.pattern.as_str(), r.line))
            .collect();
        assert_eq!(got, [("a1", 1), ("a2", 2), ("b", 1)]);
        assert_eq!(
            rules[2].origin(),
            format!("{}:1:1", dir.join("b.xs").display())
        );

        std::fs::write(dir.join("c.xs"), "realtime_channel \"c\" {\n  bad = 1\n}").unwrap();
        let err = parse_dir(&dir).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}:2:3: unknown key `bad`",
                dir.join("c.xs").display()
            )),
            "{err}"
        );
        let err = parse_dir(&dir.join("missing")).unwrap_err();
        assert!(err.starts_with("cannot read"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writer_output_reads_back_and_matches_the_documentation_layout() {
        let (text, notes) = write_xs(&xano_doc_rules());
        assert!(notes.is_empty());
        assert_eq!(parse(&text), xano_doc_rules());
        // The documentation's blocks, without the file's comments, are exactly what we write.
        let body: String = FIXTURE
            .lines()
            .filter(|l| !l.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(text.trim(), body.trim());
    }

    #[test]
    fn writer_notes_what_xanoscript_cannot_say() {
        let mut r = ChannelRule::new("user:*");
        r.owner_segment = true;
        r.join_roles = vec!["admin".into()];
        r.settings.message_history = 5;
        let (text, notes) = write_xs(&[r]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("join_roles = [\"admin\"], owner_segment = true"),
            "{notes:?}"
        );
        assert!(
            notes[1].contains("message_history 5 is not a Xano size; written as 25"),
            "{notes:?}"
        );
        let back = one(&text);
        assert_eq!(back.settings.message_history, 25);
        assert!(!back.owner_segment);
        assert!(
            text.starts_with("// \"user:*\": Switchboard-only"),
            "{text}"
        );
    }

    fn arb_flags() -> impl Strategy<Value = MessagingFlags> {
        (any::<bool>(), any::<bool>()).prop_map(|(active, auth)| MessagingFlags { active, auth })
    }

    fn arb_rule() -> impl Strategy<Value = ChannelRule> {
        (
            "[a-zA-Z0-9:/_.\"\\\\#éü中-]{1,24}\\*?",
            prop_oneof![
                any::<String>(),
                "[\\x00-\\x1f\\x7f-\\x9f\"\\\\/ a-zé{}:=,]{0,24}"
            ],
            any::<bool>(),
            arb_flags(),
            arb_flags(),
            (
                any::<bool>(),
                any::<bool>(),
                prop::sample::select(HISTORY_SIZES.to_vec()),
                any::<bool>(),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    pattern,
                    description,
                    active,
                    public,
                    private,
                    (anon, nested, history, auth, presence),
                )| {
                    ChannelRule {
                        description,
                        active,
                        public_messaging: public,
                        private_messaging: private,
                        settings: settings(anon, nested, history, auth, presence),
                        ..ChannelRule::new(&pattern)
                    }
                },
            )
    }

    fn arb_rules() -> impl Strategy<Value = Vec<ChannelRule>> {
        prop::collection::vec(arb_rule(), 0..6).prop_map(|rules| {
            let mut seen = std::collections::HashSet::new();
            rules
                .into_iter()
                .filter(|r| seen.insert(r.pattern.clone()))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// rules → XanoScript → rules, and → TOML (`switchboard import`'s output) → the
        /// config loader → XanoScript again: every step gives the same rules and text.
        #[test]
        fn rules_round_trip_through_xanoscript_and_toml(rules in arb_rules()) {
            let (xs, notes) = write_xs(&rules);
            prop_assert!(notes.is_empty());
            let back: Vec<ChannelRule> = parse_str(&xs, "p.xs")
                .map_err(|e| TestCaseError::fail(format!("{e}\n{xs}")))?
                .into_iter()
                .map(|r| r.rule)
                .collect();
            prop_assert_eq!(&back, &rules);

            let toml = format!(
                "[[apps]]\nname = \"a\"\nhash = \"a\"\napi_key = \"0123456789\"\njwt = {{ secret = \"0123456789abcdef0123456789abcdef\" }}\n\n{}",
                super::super::to_toml(&back)
            );
            let config = crate::config::Config::from_toml(&toml)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{toml}")))?;
            prop_assert_eq!(&config.apps[0].channels, &rules);
            let (again, _) = write_xs(&config.apps[0].channels);
            prop_assert_eq!(again, xs);
        }

        /// Whatever the input, the parser answers (rules or a positioned error), never panics.
        #[test]
        fn arbitrary_text_never_panics(text in "(realtime_channel|\"|\\{|\\}|=|:|,|\n|//| |[a-z_]{1,8}|[0-9]{1,3}|\\\\)*") {
            if let Err(e) = parse_str(&text, "f.xs") {
                prop_assert!(e.line >= 1 && e.column >= 1);
            }
        }
    }
}
