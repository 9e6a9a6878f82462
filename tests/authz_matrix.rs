//! Authorization matrix (issue 6): for every combination of the channel-rule flags that
//! decide who may do what, every identity (anonymous, user 1 in three tabs, another user,
//! a role holder) tries every client action (join, public message, authenticated-audience
//! message, direct message to each other socket, history, leave) and receives presence
//! frames and backend events (with and without `auth_id`). The expected outcome of each
//! (rule, identity, action[, target]) comes from the `contract` module below, written from
//! the text of docs/protocol.md sections 2-6 (it does not use `src/rules.rs`); the server is
//! checked over real sockets, frame by frame, in order, for every socket of the channel:
//! members prove non-delivery with a barrier (a `history` request is answered by the
//! channel after every earlier broadcast), non-members with a connection-level barrier.
//!
//! Each rule is a wildcard (`m<k>/*`, `own<k>:*`) with one test channel, so the channels
//! of one group run in parallel on one server, each with its own sockets.

mod common;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- identities

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Anon,
    /// User 1 (no roles).
    User1,
    /// User 2 (no roles).
    User2,
    /// User 3 with roles ["admin"].
    Admin,
}

impl Who {
    fn authenticated(self) -> bool {
        self != Who::Anon
    }

    /// `permissions.row_id`: 0 for an anonymous socket (section 2).
    fn row_id(self) -> i64 {
        match self {
            Who::Anon => 0,
            Who::User1 => 1,
            Who::User2 => 2,
            Who::Admin => 3,
        }
    }

    fn holds_admin_role(self) -> bool {
        self == Who::Admin
    }

    fn token(self) -> Option<String> {
        match self {
            Who::Anon => None,
            Who::User1 => Some(user_token(1)),
            Who::User2 => Some(user_token(2)),
            Who::Admin => Some(user_token_with_roles(3, &["admin"])),
        }
    }
}

/// The sockets of one scenario: (name, identity, asks presence, asks history).
/// The first seven join at the start; the last four are connected from the start but join
/// late (after messages and events), so until then they are non-members.
const SOCKETS: [(&str, Who, bool, bool); 11] = [
    ("anon", Who::Anon, true, true),
    ("anon2", Who::Anon, false, false),
    ("u1", Who::User1, true, true),
    ("u1b", Who::User1, false, false),
    ("u1c", Who::User1, true, false),
    ("u2", Who::User2, true, true),
    ("admin", Who::Admin, true, true),
    ("late_anon", Who::Anon, false, true),
    ("late_anon_p", Who::Anon, true, false),
    ("late_u2", Who::User2, true, true),
    ("late_admin", Who::Admin, false, true),
];
const INITIAL: usize = 7;
// Indices into SOCKETS.
const ANON: usize = 0;
const ANON2: usize = 1;
const U1: usize = 2;
const U1B: usize = 3;
const U1C: usize = 4;
const U2: usize = 5;
/// A connected socket that has not joined during the message phase: a direct target
/// that is "not in C".
const OUTSIDER: usize = 7;

// ---------------------------------------------------------------- rules

#[derive(Clone, Debug)]
struct Rule {
    k: usize,
    active: bool,
    anonymous_clients: bool,
    /// `public_messaging` (active, auth)
    public: (bool, bool),
    /// `private_messaging` (active, auth)
    private: (bool, bool),
    auth_channel: bool,
    message_history: usize,
    presence: bool,
    /// `join_roles = ["admin"]`
    join_admin: bool,
    /// `publish_roles = ["admin"]`
    publish_admin: bool,
    /// `owner_segment = true`, and the test channel is `own<k>:<this id>`.
    owner: Option<i64>,
    /// `history_events = true`: backend events are stored, each with its audience.
    history_events: bool,
}

const PAIRS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

impl Rule {
    fn plain(k: usize) -> Rule {
        Rule {
            k,
            active: true,
            anonymous_clients: false,
            public: (false, false),
            private: (false, false),
            auth_channel: false,
            message_history: 0,
            presence: false,
            join_admin: false,
            publish_admin: false,
            owner: None,
            history_events: false,
        }
    }

    fn pattern(&self) -> String {
        match self.owner {
            Some(_) => format!("own{}:*", self.k),
            None => format!("m{}/*", self.k),
        }
    }

    fn channel(&self) -> String {
        match self.owner {
            Some(id) => format!("own{}:{id}", self.k),
            None => format!("m{}/c", self.k),
        }
    }

    fn toml(&self) -> String {
        let roles = |on: bool| if on { r#"["admin"]"# } else { "[]" };
        format!(
            r#"
[[apps.channels]]
pattern = "{pattern}"
active = {active}
join_roles = {join_roles}
publish_roles = {publish_roles}
owner_segment = {owner}
history_events = {he}
public_messaging = {{ active = {pa}, auth = {pu} }}
private_messaging = {{ active = {qa}, auth = {qu} }}
settings = {{ anonymous_clients = {anon}, auth_channel = {ac}, message_history = {h}, presence = {p} }}
"#,
            pattern = self.pattern(),
            active = self.active,
            join_roles = roles(self.join_admin),
            publish_roles = roles(self.publish_admin),
            owner = self.owner.is_some(),
            he = self.history_events,
            pa = self.public.0,
            pu = self.public.1,
            qa = self.private.0,
            qu = self.private.1,
            anon = self.anonymous_clients,
            ac = self.auth_channel,
            h = self.message_history,
            p = self.presence,
        )
    }

    fn describe(&self) -> String {
        let m = |(a, u): (bool, bool)| match (a, u) {
            (false, false) => "off",
            (false, true) => "off+auth",
            (true, false) => "on",
            (true, true) => "on+auth",
        };
        format!(
            "rule {} (channel {}): active={} anonymous_clients={} public={} private={} auth_channel={} message_history={} history_events={} presence={} join_roles={} publish_roles={} owner_segment={}",
            self.pattern(),
            self.channel(),
            self.active,
            self.anonymous_clients,
            m(self.public),
            m(self.private),
            self.auth_channel,
            self.message_history,
            self.history_events,
            self.presence,
            if self.join_admin { "[admin]" } else { "[]" },
            if self.publish_admin { "[admin]" } else { "[]" },
            self.owner.is_some(),
        )
    }
}

fn config(rules: &[Rule]) -> String {
    let mut out = format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[limits]
messages_per_minute = 0

[[apps]]
name = "Authz"
hash = "test"
api_key = "{API_KEY}"

[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"

# Each socket joins its own id/… channel first, to learn its client object.
[[apps.channels]]
pattern = "id/*"
settings = {{ anonymous_clients = true }}
"#
    );
    for r in rules {
        out.push_str(&r.toml());
    }
    out
}

// ---------------------------------------------------------------- the contract

/// The expected outcome of each action, from the text of docs/protocol.md (sections 2-6).
/// Refusals return every error text the contract allows for the case: the join checks
/// are ordered ("Checks in order"), the message checks are not (section 3 lists them as
/// "refused if …, if …, or if …"), so when several apply any of their texts is accepted.
mod contract {
    use super::{Rule, Who};

    pub const CHANNEL_NOT_FOUND: &str = "Channel not found";
    pub const ANONYMOUS_JOIN: &str = "Anonymous clients cannot join this channel.";
    pub const JOIN_NOT_ALLOWED: &str = "Not allowed to join this channel";
    pub const NOT_JOINED: &str = "Not joined to this channel";
    pub const PUBLIC_OFF: &str = "Public messaging is not allowed on this channel";
    pub const PRIVATE_OFF: &str = "Private messaging is not allowed on this channel";
    pub const AUTH_REQUIRED: &str = "Authentication required to send messages on this channel";
    pub const NO_RECIPIENT: &str = "Recipient not found in this channel";
    /// docs/protocol.md section 4 says that `publish_roles` restricts publishing but gives no
    /// error text for it; this is the server's text (reported as a contract gap).
    pub const PUBLISH_NOT_ALLOWED: &str = "Not allowed to publish on this channel";

    /// Section 3, join, checks 2-4 in order (names are valid; no triggers; no limit hit).
    pub fn join(rule: &Rule, who: Who) -> Result<(), &'static str> {
        // 2. "a rule matches and is active"; section 4: "an inactive rule matches, and
        //    refuses every join with `Channel not found`".
        if !rule.active {
            return Err(CHANNEL_NOT_FOUND);
        }
        // 3. "anonymous socket and the rule forbids anonymous clients"
        if !who.authenticated() && !rule.anonymous_clients {
            return Err(ANONYMOUS_JOIN);
        }
        // 4. ACLs (section 4): "join_roles: the socket's token must carry one of them"
        if rule.join_admin && !who.holds_admin_role() {
            return Err(JOIN_NOT_ALLOWED);
        }
        // "owner_segment = true (the last segment of the channel name … must equal the
        // socket's row_id; for user:* style private feeds)". An anonymous socket owns no
        // feed: its row_id 0 is "no user", not a user (see the report: the text alone
        // would let every anonymous socket into `own:0`).
        if let Some(owner) = rule.owner {
            if !who.authenticated() || who.row_id() != owner {
                return Err(JOIN_NOT_ALLOWED);
            }
        }
        Ok(())
    }

    /// Section 3, public message from a member: Ok(authenticated-only audience) or the
    /// allowed refusal texts.
    pub fn public(
        rule: &Rule,
        sender: Who,
        requested_authenticated: bool,
    ) -> Result<bool, Vec<&'static str>> {
        let mut refused = Vec::new();
        // "refused if the rule has public messaging off"
        if !rule.public.0 {
            refused.push(PUBLIC_OFF);
        }
        // "or if it is authenticated-only and the sender is anonymous"
        if rule.public.1 && !sender.authenticated() {
            refused.push(AUTH_REQUIRED);
        }
        // Section 4: publish_roles, "the socket's token must carry one of them".
        if rule.publish_admin && !sender.holds_admin_role() {
            refused.push(PUBLISH_NOT_ALLOWED);
        }
        if !refused.is_empty() {
            return Err(refused);
        }
        // "only authenticated members when `authenticated: true`, or when the sender is
        // authenticated and the rule has authenticated messaging (`auth_channel`)"
        Ok(requested_authenticated || (sender.authenticated() && rule.auth_channel))
    }

    /// Section 3, direct message from a member to the socket `target`.
    pub fn direct(
        rule: &Rule,
        sender: Who,
        target: Who,
        target_in_channel: bool,
    ) -> Result<(), Vec<&'static str>> {
        let mut refused = Vec::new();
        // "refused if private messaging is off"
        if !rule.private.0 {
            refused.push(PRIVATE_OFF);
        }
        // "if it is authenticated-only and sender or target is anonymous"
        if rule.private.1 && (!sender.authenticated() || !target.authenticated()) {
            refused.push(AUTH_REQUIRED);
        }
        // publish_roles govern every message a socket sends (see the report).
        if rule.publish_admin && !sender.holds_admin_role() {
            refused.push(PUBLISH_NOT_ALLOWED);
        }
        // "or if the target is not in C"
        if !target_in_channel {
            refused.push(NO_RECIPIENT);
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(refused)
        }
    }

    /// Whether a member receives a message (live), or sees a stored one in a history
    /// reply: "A history reply never shows a socket what it could not have received live".
    pub fn receives(authenticated_only: bool, member: Who) -> bool {
        !authenticated_only || member.authenticated()
    }

    /// "Public messages are appended to the channel's history when the rule keeps
    /// history; direct messages never are." Events: not unless `history_events`.
    pub fn stores_public(rule: &Rule) -> bool {
        rule.message_history > 0
    }

    /// "Events are not stored in history unless the rule sets `history_events = true`."
    pub fn stores_events(rule: &Rule) -> bool {
        rule.history_events && rule.message_history > 0
    }

    /// "If it asked for presence and the rule has presence on": presence_full for it,
    /// presence_update for "every other member that asked for presence". A member that
    /// did not ask is not a presence member (it is announced to nobody, so it is not
    /// listed either).
    pub fn presence_member(rule: &Rule, asked: bool) -> bool {
        asked && rule.presence
    }

    /// Section 6: "With `auth_id` set, only the members authenticated as that user
    /// receive it." (Only `auth_table` values equal to the users' dbo_id are used here.)
    pub fn event_reaches(auth_id: Option<i64>, member: Who) -> bool {
        match auth_id {
            None => true,
            Some(id) => member.authenticated() && member.row_id() == id,
        }
    }
}

// ---------------------------------------------------------------- one channel's scenario

/// An expected frame: exact, or an error on the scenario's channel with one of the texts.
#[derive(Clone, Debug)]
enum Exp {
    Frame(Value),
    Error(Vec<&'static str>),
}

struct Sock {
    name: &'static str,
    who: Who,
    asks_presence: bool,
    asks_history: bool,
    c: Client,
    client: Value,
    id: String,
    /// The model: a member of the channel, a presence member.
    member: bool,
    present: bool,
    got: Vec<Value>,
    want: Vec<(Exp, String)>,
    barriers: u64,
    pending_history: usize,
}

#[derive(Default, Clone, Copy, Debug)]
struct Stats {
    scenarios: usize,
    joins_ok: usize,
    joins_refused: usize,
    public_ok: usize,
    public_refused: usize,
    audience_ok: usize,
    audience_refused: usize,
    direct_ok: usize,
    direct_refused: usize,
    history_replies: usize,
    history_refused: usize,
    events_published: usize,
    event_frames: usize,
    presence_frames: usize,
    leaves: usize,
    frames_checked: usize,
    barriers: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.scenarios += o.scenarios;
        self.joins_ok += o.joins_ok;
        self.joins_refused += o.joins_refused;
        self.public_ok += o.public_ok;
        self.public_refused += o.public_refused;
        self.audience_ok += o.audience_ok;
        self.audience_refused += o.audience_refused;
        self.direct_ok += o.direct_ok;
        self.direct_refused += o.direct_refused;
        self.history_replies += o.history_replies;
        self.history_refused += o.history_refused;
        self.events_published += o.events_published;
        self.event_frames += o.event_frames;
        self.presence_frames += o.presence_frames;
        self.leaves += o.leaves;
        self.frames_checked += o.frames_checked;
        self.barriers += o.barriers;
    }
}

/// Who may see a stored frame: what its live audience was (section 3: "A history
/// reply never shows a socket what it could not have received live"; section 6: "a
/// stored event keeps its audience").
#[derive(Clone, Copy, Debug)]
enum Seen {
    /// A public message: everyone, or authenticated members only.
    Message { authenticated_only: bool },
    /// An event, for everyone or (`auth_id`) one user.
    Event { auth_id: Option<i64> },
}

impl Seen {
    fn by(self, reader: Who) -> bool {
        match self {
            Seen::Message { authenticated_only } => contract::receives(authenticated_only, reader),
            Seen::Event { auth_id } => contract::event_reaches(auth_id, reader),
        }
    }
}

struct Scenario<'a> {
    server: &'a TestServer,
    rule: Rule,
    channel: String,
    socks: Vec<Sock>,
    /// Stored frames and who may see each.
    history: Vec<(Value, Seen)>,
    seq: usize,
    action: String,
    stats: Stats,
}

/// The next text frame, or why none came.
async fn next_frame(c: &mut Client) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await {
            Err(_) => return Err("no frame within 5 s".into()),
            Ok(None) => return Err("socket ended".into()),
            Ok(Some(Err(e))) => return Err(format!("socket error: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| format!("non-JSON {e}"))
            }
            Ok(Some(Ok(Message::Close(f)))) => return Err(format!("socket closed: {f:?}")),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Presence lists have no order: sort them by socket id.
fn normalize(mut f: Value) -> Value {
    if f["action"] == "presence_full" {
        if let Some(list) = f["payload"]["presence"].as_array_mut() {
            list.sort_by_key(|c| c["socketId"].as_str().unwrap_or_default().to_string());
        }
    }
    f
}

impl<'a> Scenario<'a> {
    async fn new(server: &'a TestServer, group: &str, rule: Rule) -> Scenario<'a> {
        let mut socks = Vec::new();
        for (i, (name, who, asks_presence, asks_history)) in SOCKETS.into_iter().enumerate() {
            let mut c = match who.token() {
                Some(t) => server.client_with_token(&t).await,
                None => server.client().await,
            };
            let ack = c
                .join(&format!("id/{group}-{}-{i}", rule.k), false, false)
                .await;
            let client = ack["client"].clone();
            assert_eq!(
                client["permissions"]["row_id"],
                who.row_id(),
                "identity of {name}: {ack}"
            );
            socks.push(Sock {
                name,
                who,
                asks_presence,
                asks_history,
                c,
                id: socket_id(&ack),
                client,
                member: false,
                present: false,
                got: Vec::new(),
                want: Vec::new(),
                barriers: 0,
                pending_history: 0,
            });
        }
        Scenario {
            server,
            channel: rule.channel(),
            rule,
            socks,
            history: Vec::new(),
            seq: 0,
            action: String::new(),
            stats: Stats {
                scenarios: 1,
                ..Stats::default()
            },
        }
    }

    fn want(&mut self, i: usize, e: Exp) {
        let cause = self.action.clone();
        self.socks[i].want.push((e, cause));
    }

    fn error_frame(&self, message: &str) -> Value {
        json!({"action":"error","options":{"channel":self.channel},"payload":{"message":message}})
    }

    fn matches(&self, want: &Exp, got: &Value) -> bool {
        match want {
            Exp::Frame(v) => v == got,
            Exp::Error(texts) => texts.iter().any(|t| *got == self.error_frame(t)),
        }
    }

    /// A frame, readable: client objects and socket ids replaced by socket names.
    fn show(&self, v: &Value) -> String {
        let mut s = v.to_string();
        for sock in &self.socks {
            s = s.replace(&sock.client.to_string(), &format!("<{}>", sock.name));
            s = s.replace(&sock.id, sock.name);
        }
        s
    }

    fn show_exp(&self, e: &Exp) -> String {
        match e {
            Exp::Frame(v) => self.show(v),
            Exp::Error(texts) => format!("error {texts:?}"),
        }
    }

    /// Compare everything socket `i` received with what the contract says it should have.
    fn check(&mut self, i: usize) -> Result<(), String> {
        let s = &self.socks[i];
        let n = s.got.len().max(s.want.len());
        for idx in 0..n {
            let ok = match (s.want.get(idx), s.got.get(idx)) {
                (Some((w, _)), Some(g)) => self.matches(w, g),
                _ => false,
            };
            if !ok {
                let wanted: Vec<String> = s.want[idx.min(s.want.len())..]
                    .iter()
                    .map(|(w, cause)| format!("{} (from: {cause})", self.show_exp(w)))
                    .collect();
                let got: Vec<String> = s.got[idx.min(s.got.len())..]
                    .iter()
                    .map(|g| self.show(g))
                    .collect();
                return Err(format!(
                    "{}\n  socket {} ({:?}), checked after: {}\n  from frame #{idx} expected: {wanted:#?}\n  received: {got:#?}",
                    self.rule.describe(),
                    s.name,
                    s.who,
                    self.action
                ));
            }
        }
        Ok(())
    }

    /// Read what socket `i` has been sent up to now, then compare.
    async fn sync(&mut self, i: usize) -> Result<(), String> {
        let channel = self.channel.clone();
        let result = {
            let s = &mut self.socks[i];
            s.barriers += 1;
            if s.member {
                // A history request is answered after everything the channel sent before.
                s.c.send(json!({"action":"history","options":{"channel":channel},"payload":null}))
                    .await;
                loop {
                    match next_frame(&mut s.c).await {
                        Err(e) => break Err(e),
                        Ok(f) => {
                            let f = normalize(f);
                            let ours = f["options"]["channel"] == channel.as_str();
                            if ours && f["action"] == "history" {
                                if s.pending_history > 0 {
                                    s.pending_history -= 1;
                                    s.got.push(f);
                                    continue;
                                }
                                break Ok(());
                            }
                            let refused = ours
                                && f["action"] == "error"
                                && f["payload"]["message"] == contract::NOT_JOINED;
                            s.got.push(f);
                            if refused && s.pending_history == 0 {
                                // The server does not count it as a member: the mismatch shows.
                                break Ok(());
                            }
                        }
                    }
                }
            } else {
                // Non-members: a connection-level barrier (an unknown action's error).
                let marker = format!("barrier-{}", s.barriers);
                s.c.send(json!({"action": marker, "options": {"channel": "barrier"}}))
                    .await;
                let expected = format!("Invalid frame: unknown action \"{marker}\"");
                loop {
                    match next_frame(&mut s.c).await {
                        Err(e) => break Err(e),
                        Ok(f) if f["action"] == "error" && f["payload"]["message"] == expected => {
                            break Ok(())
                        }
                        Ok(f) => s.got.push(normalize(f)),
                    }
                }
            }
        };
        self.stats.barriers += 1;
        if let Err(e) = result {
            let _ = self.check(i);
            return Err(format!(
                "{}\n  socket {}: {e} (after: {}); received so far: {:?}",
                self.rule.describe(),
                self.socks[i].name,
                self.action,
                self.socks[i]
                    .got
                    .iter()
                    .map(|g| self.show(g))
                    .collect::<Vec<_>>()
            ));
        }
        self.check(i)
    }

    /// Append to the expected history, capped at the rule's size.
    fn store(&mut self, frame: Value, seen: Seen) {
        self.history.push((frame, seen));
        let excess = self.history.len().saturating_sub(self.rule.message_history);
        self.history.drain(..excess);
    }

    fn visible_history(&self, reader: Who) -> Vec<Value> {
        self.history
            .iter()
            .filter(|(_, seen)| seen.by(reader))
            .map(|(f, _)| f.clone())
            .collect()
    }

    fn presence_list(&self) -> Vec<Value> {
        let mut list: Vec<Value> = self
            .socks
            .iter()
            .filter(|s| s.present)
            .map(|s| s.client.clone())
            .collect();
        list.sort_by_key(|c| c["socketId"].as_str().unwrap().to_string());
        list
    }

    async fn join(&mut self, i: usize, history: bool) -> Result<(), String> {
        let (name, who, presence) = {
            let s = &self.socks[i];
            (s.name, s.who, s.asks_presence)
        };
        let again = self.socks[i].member;
        self.action = format!(
            "{}join by {name} (history={history}, presence={presence})",
            if again { "repeated " } else { "" }
        );
        match contract::join(&self.rule, who) {
            Ok(()) => {
                self.stats.joins_ok += 1;
                let stored = if history && self.rule.message_history > 0 {
                    self.visible_history(who)
                } else {
                    Vec::new()
                };
                let ack = json!({"action":"join","options":{"channel":self.channel},
                    "client":self.socks[i].client,"payload":{"history":stored}});
                self.want(i, Exp::Frame(ack));
                if !again {
                    self.socks[i].member = true;
                    self.socks[i].present = contract::presence_member(&self.rule, presence);
                }
                if self.socks[i].present {
                    let full = json!({"action":"presence_full","options":{"channel":self.channel},
                        "payload":{"presence":self.presence_list()}});
                    self.want(i, Exp::Frame(full));
                    self.stats.presence_frames += 1;
                    if !again {
                        // "every other member that asked for presence gets presence_update"
                        let update = json!({"action":"presence_update","options":{"channel":self.channel},
                            "payload":{"action":"join","presence":self.socks[i].client}});
                        for j in 0..self.socks.len() {
                            if j != i && self.socks[j].present {
                                self.want(j, Exp::Frame(update.clone()));
                                self.stats.presence_frames += 1;
                            }
                        }
                    }
                }
            }
            Err(text) => {
                self.stats.joins_refused += 1;
                self.want(i, Exp::Error(vec![text]));
            }
        }
        let channel = self.channel.clone();
        self.socks[i]
            .c
            .send(json!({"action":"join","options":{"channel":channel},
                "payload":{"history":history,"presence":presence}}))
            .await;
        if again {
            // A repeated join travels through the registry, so its ack may come after the
            // answer to a later request: wait for it before the barrier.
            self.await_join_ack(i).await?;
        }
        self.sync(i).await
    }

    async fn await_join_ack(&mut self, i: usize) -> Result<(), String> {
        let channel = self.channel.clone();
        loop {
            match next_frame(&mut self.socks[i].c).await {
                Ok(f) => {
                    let done = f["options"]["channel"] == channel.as_str()
                        && (f["action"] == "join" || f["action"] == "error");
                    self.socks[i].got.push(normalize(f));
                    if done {
                        return Ok(());
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "{}\n  socket {}: {e} (after: {})",
                        self.rule.describe(),
                        self.socks[i].name,
                        self.action
                    ))
                }
            }
        }
    }

    async fn public(&mut self, i: usize, authenticated: bool) -> Result<(), String> {
        let (name, who) = (self.socks[i].name, self.socks[i].who);
        self.seq += 1;
        let kind = if authenticated { "audience" } else { "public" };
        let payload = json!({"tag": format!("{kind}:{name}:{}", self.seq)});
        self.action = format!("{kind} message by {name}");
        let verdict = if self.socks[i].member {
            contract::public(&self.rule, who, authenticated)
        } else {
            Err(vec![contract::NOT_JOINED])
        };
        match verdict {
            Ok(authenticated_only) => {
                if authenticated {
                    self.stats.audience_ok += 1;
                } else {
                    self.stats.public_ok += 1;
                }
                let frame = json!({"action":"message",
                    "options":{"channel":self.channel,"authenticated":authenticated_only,"socketId":null},
                    "client":self.socks[i].client,"payload":payload});
                // "Audience: every member, the sender included; but only authenticated members …"
                for j in 0..self.socks.len() {
                    if self.socks[j].member
                        && contract::receives(authenticated_only, self.socks[j].who)
                    {
                        self.want(j, Exp::Frame(frame.clone()));
                    }
                }
                if contract::stores_public(&self.rule) {
                    self.store(frame, Seen::Message { authenticated_only });
                }
            }
            Err(texts) => {
                if authenticated {
                    self.stats.audience_refused += 1;
                } else {
                    self.stats.public_refused += 1;
                }
                self.want(i, Exp::Error(texts));
            }
        }
        let options = if authenticated {
            json!({"channel":self.channel,"authenticated":true})
        } else {
            json!({"channel":self.channel})
        };
        self.socks[i]
            .c
            .send(json!({"action":"message","options":options,"payload":payload}))
            .await;
        self.sync(i).await
    }

    async fn direct(&mut self, i: usize, j: usize) -> Result<(), String> {
        let (name, who) = (self.socks[i].name, self.socks[i].who);
        let target_id = self.socks[j].id.clone();
        self.seq += 1;
        let payload = json!({"tag": format!("direct:{name}->{}:{}", self.socks[j].name, self.seq)});
        self.action = format!("direct message by {name} to {}", self.socks[j].name);
        let verdict = if self.socks[i].member {
            contract::direct(&self.rule, who, self.socks[j].who, self.socks[j].member)
        } else {
            Err(vec![contract::NOT_JOINED])
        };
        match verdict {
            Ok(()) => {
                self.stats.direct_ok += 1;
                // "Audience: the target alone; no echo." Never stored.
                let frame = json!({"action":"message",
                    "options":{"channel":self.channel,"authenticated":false,"socketId":target_id},
                    "client":self.socks[i].client,"payload":payload});
                self.want(j, Exp::Frame(frame));
            }
            Err(texts) => {
                self.stats.direct_refused += 1;
                self.want(i, Exp::Error(texts));
            }
        }
        let channel = self.channel.clone();
        self.socks[i]
            .c
            .send(
                json!({"action":"message","options":{"channel":channel,"socketId":target_id},
                "payload":payload}),
            )
            .await;
        self.sync(i).await?;
        // The target's side is checked at its next barrier; do it now for a precise report.
        self.sync(j).await
    }

    async fn history(&mut self, i: usize) -> Result<(), String> {
        let (name, who) = (self.socks[i].name, self.socks[i].who);
        self.action = format!("history by {name}");
        if self.socks[i].member {
            self.stats.history_replies += 1;
            // "empty when the rule keeps none"; authenticated-audience entries are left
            // out for anonymous sockets.
            let stored = if self.rule.message_history > 0 {
                self.visible_history(who)
            } else {
                Vec::new()
            };
            let reply = json!({"action":"history","options":{"channel":self.channel},
                "payload":{"history":stored}});
            self.want(i, Exp::Frame(reply));
            self.socks[i].pending_history += 1;
        } else {
            self.stats.history_refused += 1;
            self.want(i, Exp::Error(vec![contract::NOT_JOINED]));
        }
        let channel = self.channel.clone();
        self.socks[i]
            .c
            .send(json!({"action":"history","options":{"channel":channel},"payload":null}))
            .await;
        self.sync(i).await
    }

    async fn leave(&mut self, i: usize) -> Result<(), String> {
        let name = self.socks[i].name;
        self.action = format!("leave by {name}");
        if self.socks[i].member {
            self.stats.leaves += 1;
            self.want(
                i,
                Exp::Frame(
                    json!({"action":"leave","options":{"channel":self.channel},"payload":null}),
                ),
            );
            if self.socks[i].present {
                let update = json!({"action":"presence_update","options":{"channel":self.channel},
                    "payload":{"action":"leave","presence":self.socks[i].client}});
                for j in 0..self.socks.len() {
                    if j != i && self.socks[j].present {
                        self.want(j, Exp::Frame(update.clone()));
                        self.stats.presence_frames += 1;
                    }
                }
            }
            self.socks[i].member = false;
            self.socks[i].present = false;
        }
        // Leaving a channel not joined is ignored: nothing is expected.
        let channel = self.channel.clone();
        self.socks[i]
            .c
            .send(json!({"action":"leave","options":{"channel":channel},"payload":null}))
            .await;
        self.sync(i).await?;
        // The leaver's own barrier is connection-level (it is no longer a member), which
        // does not wait for the channel: the members' barriers do.
        for j in 0..self.socks.len() {
            if self.socks[j].member {
                self.sync(j).await?;
            }
        }
        Ok(())
    }

    /// Publish events over HTTP: (name, auth_id, auth_table) on `channel` (the concrete
    /// channel, or the rule's pattern).
    async fn events(
        &mut self,
        channel: &str,
        events: &[(&str, Option<i64>, Option<i64>)],
    ) -> Result<(), String> {
        let mut body = Vec::new();
        for (name, auth_id, auth_table) in events {
            self.action = format!("event {name} on {channel}");
            let data = json!({"tag": format!("event:{name}:{}", self.rule.k)});
            let mut e = json!({"channel": channel, "event": name, "data": data});
            if let Some(id) = auth_id {
                e["auth_id"] = json!(id);
            }
            if let Some(t) = auth_table {
                e["auth_table"] = json!(t);
            }
            body.push(e);
            self.stats.events_published += 1;
            // Members receive it (the concrete channel name, even for a pattern event).
            let frame = json!({"action":"event","options":{"channel":self.channel},
                "payload":{"event":name,"data":data,"dbo_id":auth_table.unwrap_or(0),
                    "row_id":auth_id.unwrap_or(0)}});
            for j in 0..self.socks.len() {
                if self.socks[j].member && contract::event_reaches(*auth_id, self.socks[j].who) {
                    self.want(j, Exp::Frame(frame.clone()));
                    self.stats.event_frames += 1;
                }
            }
            // Section 6: stored under `history_events`, with its audience. A pattern
            // event reaches (and so is stored in) only a channel that has members.
            let reached = channel == self.channel || self.socks.iter().any(|s| s.member);
            if contract::stores_events(&self.rule) && reached {
                self.store(frame, Seen::Event { auth_id: *auth_id });
            }
        }
        let (status, answer) = self.server.publish(&Value::Array(body)).await;
        if status != 202 {
            return Err(format!(
                "{}\n  publish of {events:?} on {channel}: status {status} {answer}, expected 202",
                self.rule.describe()
            ));
        }
        Ok(())
    }

    async fn run(mut self) -> Result<Stats, String> {
        let all = 0..self.socks.len();
        // 1. The seven initial sockets join in turn.
        for i in 0..INITIAL {
            let history = self.socks[i].asks_history;
            self.join(i, history).await?;
        }
        // 2. Each of them sends a public and an authenticated-audience message, a direct
        //    message to every other socket (and to one not in the channel), asks history.
        for i in 0..INITIAL {
            self.public(i, false).await?;
            self.public(i, true).await?;
            for j in (0..INITIAL).chain([OUTSIDER]) {
                if j != i {
                    self.direct(i, j).await?;
                }
            }
            self.history(i).await?;
        }
        // A socket that never joined.
        self.public(OUTSIDER, false).await?;
        self.public(OUTSIDER, true).await?;
        self.direct(OUTSIDER, U1).await?;
        self.history(OUTSIDER).await?;
        // 3. Backend events, with and without auth_id; then pattern events.
        let channel = self.channel.clone();
        self.events(
            &channel,
            &[
                ("all", None, None),
                ("to-user1", Some(1), None),
                ("to-user2", Some(2), None),
                ("to-user3", Some(3), None),
                ("to-row0", Some(0), None),
                ("to-user1-table7", Some(1), Some(7)),
                ("to-nobody", Some(99), None),
            ],
        )
        .await?;
        let pattern = self.rule.pattern();
        self.events(
            &pattern,
            &[("wild-all", None, None), ("wild-user2", Some(2), None)],
        )
        .await?;
        for i in all.clone() {
            self.sync(i).await?;
        }
        // 4. Late joins (history at join time), repeated joins, history from everyone.
        for i in INITIAL..self.socks.len() {
            let history = self.socks[i].asks_history;
            self.join(i, history).await?;
        }
        self.join(ANON, true).await?; // again, with history
        self.join(U1B, true).await?; // again, now with history
        for i in all.clone() {
            self.history(i).await?;
        }
        // 5. Leaves (presence members u2 and u1c, anon2 without presence, late_anon; each a
        //    non-member where its join was refused), then the leavers are outside.
        self.leave(U2).await?;
        self.leave(ANON2).await?;
        self.leave(U1C).await?;
        self.leave(OUTSIDER).await?;
        self.public(U1, false).await?;
        self.public(U2, false).await?; // left: not joined
        self.history(U2).await?;
        self.direct(U1, U1C).await?; // gone
        self.events(&channel, &[("after-leave", None, None)])
            .await?;
        // 6. Nothing else arrived anywhere.
        self.action = "the end".into();
        for i in all {
            self.sync(i).await?;
        }
        for s in &self.socks {
            self.stats.frames_checked += s.got.len();
        }
        Ok(self.stats)
    }
}

/// Run every rule's scenario on one server, many at a time; report all failures.
async fn run_group(group: &str, rules: Vec<Rule>) {
    let server = TestServer::with_config(&config(&rules));
    let started = std::time::Instant::now();
    let n = rules.len();
    let results: Vec<Result<Stats, String>> = futures_util::stream::iter(rules)
        .map(|rule| {
            let server = &server;
            async move { Scenario::new(server, group, rule).await.run().await }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(s) => stats += s,
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "authz matrix {group}: {n} rules, {} passed, {} failed in {:?}\n  {stats:?}",
        n - failures.len(),
        failures.len(),
        started.elapsed()
    );
    if !failures.is_empty() {
        let mut report = String::new();
        for f in failures.iter().take(30) {
            report.push_str(f);
            report.push_str("\n\n");
        }
        panic!(
            "{} of {n} rules of group {group} disagree with docs/protocol.md:\n\n{report}",
            failures.len()
        );
    }
}

// ---------------------------------------------------------------- the groups

/// Every combination of anonymous_clients × public_messaging.{active,auth} ×
/// private_messaging.{active,auth} × auth_channel × (message_history 0 or 25) × history_events × presence
/// (512 rules), plus inactive rules.
#[tokio::test]
async fn matrix_of_the_xano_flags() {
    let mut rules = Vec::new();
    for anonymous_clients in [false, true] {
        for public in PAIRS {
            for private in PAIRS {
                for auth_channel in [false, true] {
                    for (message_history, history_events) in
                        [(0, false), (0, true), (25, false), (25, true)]
                    {
                        for presence in [false, true] {
                            let mut r = Rule::plain(rules.len());
                            r.anonymous_clients = anonymous_clients;
                            r.public = public;
                            r.private = private;
                            r.auth_channel = auth_channel;
                            r.message_history = message_history;
                            r.history_events = history_events;
                            r.presence = presence;
                            rules.push(r);
                        }
                    }
                }
            }
        }
    }
    // Inactive rules refuse everyone, whatever else they allow.
    for anonymous_clients in [false, true] {
        for join_admin in [false, true] {
            let mut r = Rule::plain(rules.len());
            r.active = false;
            r.anonymous_clients = anonymous_clients;
            r.public = (true, false);
            r.private = (true, false);
            r.message_history = 25;
            r.presence = true;
            r.join_admin = join_admin;
            rules.push(r);
        }
    }
    run_group("flags", rules).await;
}

/// join_roles / publish_roles (["admin"]) × anonymous_clients × public × private ×
/// auth_channel × presence, history kept.
#[tokio::test]
async fn matrix_of_the_role_acls() {
    let mut rules = Vec::new();
    for (join_admin, publish_admin) in [(true, false), (false, true), (true, true)] {
        for anonymous_clients in [false, true] {
            for public in PAIRS {
                for private in PAIRS {
                    for auth_channel in [false, true] {
                        for presence in [false, true] {
                            let mut r = Rule::plain(rules.len());
                            r.join_admin = join_admin;
                            r.publish_admin = publish_admin;
                            r.anonymous_clients = anonymous_clients;
                            r.public = public;
                            r.private = private;
                            r.auth_channel = auth_channel;
                            r.message_history = 25;
                            r.history_events = presence; // varied along with presence
                            r.presence = presence;
                            rules.push(r);
                        }
                    }
                }
            }
        }
    }
    run_group("roles", rules).await;
}

/// owner_segment (`own<k>:<id>` for the anonymous row 0, user 1 and the role holder 3)
/// × join_roles × publish_roles × anonymous_clients × public × private × presence.
#[tokio::test]
async fn matrix_of_owner_channels() {
    let mut rules = Vec::new();
    for owner in [0, 1, 3] {
        for join_admin in [false, true] {
            for publish_admin in [false, true] {
                for anonymous_clients in [false, true] {
                    for public in [(false, false), (true, false), (true, true)] {
                        for private in [(false, false), (true, false), (true, true)] {
                            for presence in [false, true] {
                                let mut r = Rule::plain(rules.len());
                                r.owner = Some(owner);
                                r.join_admin = join_admin;
                                r.publish_admin = publish_admin;
                                r.anonymous_clients = anonymous_clients;
                                r.public = public;
                                r.private = private;
                                r.auth_channel = presence; // varied along with presence
                                r.message_history = 25;
                                r.history_events = presence; // varied along with presence
                                r.presence = presence;
                                rules.push(r);
                            }
                        }
                    }
                }
            }
        }
    }
    run_group("owner", rules).await;
}

/// docs/protocol.md section 3: "A second join of the same channel re-sends the ack (and
/// presence_full), with no new presence entry and no broadcast"; section 3 also says the
/// members that asked for presence get a `presence_update` for every presence joiner. So
/// a member that joined without presence and joins again asking for it must not turn up
/// in presence lists that the other presence members were never told about.
#[tokio::test]
async fn a_repeated_join_asking_for_presence_adds_no_unannounced_presence_entry() {
    let mut rule = Rule::plain(0);
    rule.anonymous_clients = true;
    rule.presence = true;
    let server = TestServer::with_config(&config(&[rule.clone()]));
    let channel = rule.channel();
    let mut watcher = server.client_with_token(&user_token(1)).await;
    let (ack_w, _) = watcher.join_presence(&channel).await;
    let mut quiet = server.client_with_token(&user_token(2)).await;
    let quiet_id = socket_id(&quiet.join(&channel, false, false).await);
    watcher.expect_nothing(&channel).await;

    // The repeated join, now asking for presence: an ack, and no broadcast.
    quiet
        .send(json!({"action":"join","options":{"channel":channel},
            "payload":{"history":false,"presence":true}}))
        .await;
    let ack = quiet.expect("join").await;
    assert_eq!(socket_id(&ack), quiet_id);
    quiet.drain_until_barrier(&channel).await;
    watcher.expect_nothing(&channel).await;

    // A later presence joiner sees only the members the others were told about.
    let mut late = server.client().await;
    let (ack_l, full) = late.join_presence(&channel).await;
    let mut listed: Vec<String> = full["payload"]["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["socketId"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected = vec![socket_id(&ack_w), socket_id(&ack_l)];
    expected.sort();
    assert_eq!(
        listed, expected,
        "presence_full lists the socket {quiet_id} that joined without presence and joined \
         again with presence: a new presence entry that no presence member was told about \
         (the watcher got no presence_update join); {full}"
    );
}
