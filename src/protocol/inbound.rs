//! What clients send: a text frame checked for structure (`parse_inbound`), then
//! typed once (`ClientFrame`); `Invalid frame: …` texts for everything else.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Join,
    Leave,
    Message,
    History,
}

/// A client frame that passed the structural checks, before it is typed
/// (`ClientFrame::parse`); kept public for the parser's property tests.
#[derive(Debug)]
pub struct Inbound {
    pub action: Action,
    pub channel: String,
    pub options: Map<String, Value>,
    pub payload: Box<RawValue>,
}

/// "Invalid frame: <what>", with the channel when it was known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFrame {
    pub channel: Option<String>,
    pub what: String,
}

impl InvalidFrame {
    fn new(channel: Option<&str>, what: impl Into<String>) -> Self {
        Self {
            channel: channel.map(str::to_string),
            what: what.into(),
        }
    }

    pub fn message(&self) -> String {
        format!("Invalid frame: {}", self.what)
    }
}

#[derive(Deserialize)]
struct RawInbound {
    action: Option<Value>,
    command: Option<Value>,
    options: Option<Value>,
    #[serde(rename = "commandOptions")]
    command_options: Option<Value>,
    payload: Option<Box<RawValue>>,
}

/// Parse a text frame; legacy `{command, commandOptions, payload}` frames read the same.
pub fn parse_inbound(text: &str) -> Result<Inbound, InvalidFrame> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| InvalidFrame::new(None, "not JSON"))?;
    if !value.is_object() {
        return Err(InvalidFrame::new(None, "not a JSON object"));
    }
    let raw: RawInbound =
        serde_json::from_str(text).map_err(|_| InvalidFrame::new(None, "not a JSON object"))?;
    let options = match raw.options.or(raw.command_options) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(InvalidFrame::new(None, "options must be an object")),
    };
    let channel = match options.get("channel") {
        Some(Value::String(s)) => Some(s.as_str()),
        None | Some(Value::Null) => None,
        Some(_) => return Err(InvalidFrame::new(None, "options.channel must be a string")),
    };
    let action = match raw.action.or(raw.command) {
        None | Some(Value::Null) => return Err(InvalidFrame::new(channel, "missing action")),
        Some(Value::String(s)) => match s.as_str() {
            "join" => Action::Join,
            "leave" => Action::Leave,
            "message" => Action::Message,
            "history" => Action::History,
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(InvalidFrame::new(
                    channel,
                    format!("unknown action {shown:?}"),
                ));
            }
        },
        Some(_) => return Err(InvalidFrame::new(channel, "action must be a string")),
    };
    let Some(channel) = channel else {
        return Err(InvalidFrame::new(None, "missing options.channel"));
    };
    if action == Action::Message {
        match options.get("authenticated") {
            None | Some(Value::Null) | Some(Value::Bool(_)) => {}
            Some(_) => {
                return Err(InvalidFrame::new(
                    Some(channel),
                    "options.authenticated must be a boolean",
                ))
            }
        }
        match options.get("socketId") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => {
                return Err(InvalidFrame::new(
                    Some(channel),
                    "options.socketId must be a string",
                ))
            }
        }
    }
    let channel = channel.to_string();
    let payload = raw
        .payload
        .unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"));
    Ok(Inbound {
        action,
        channel,
        options,
        payload,
    })
}

/// What a join asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct JoinRequest {
    pub history: bool,
    pub presence: bool,
}

impl Inbound {
    pub fn join_request(&self) -> Result<JoinRequest, InvalidFrame> {
        let value: Value = serde_json::from_str(self.payload.get()).unwrap_or(Value::Null);
        let flag = |key: &str| -> Result<bool, InvalidFrame> {
            match value.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(InvalidFrame::new(
                    Some(&self.channel),
                    format!("payload.{key} must be a boolean"),
                )),
            }
        };
        match value {
            Value::Null | Value::Object(_) => Ok(JoinRequest {
                history: flag("history")?,
                presence: flag("presence")?,
            }),
            _ => Err(InvalidFrame::new(
                Some(&self.channel),
                "join payload must be an object or null",
            )),
        }
    }

    pub fn requested_authenticated(&self) -> bool {
        matches!(self.options.get("authenticated"), Some(Value::Bool(true)))
    }

    pub fn target_socket(&self) -> Option<&str> {
        self.options.get("socketId").and_then(Value::as_str)
    }
}

/// Whom a client message is addressed to, as the frame says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageTo {
    /// Every member; `authenticated`: only the authenticated ones (`options.authenticated`).
    Members { authenticated: bool },
    /// One socket (`options.socketId`); `authenticated` is echoed as sent.
    Socket { id: String, authenticated: bool },
}

/// A client frame, typed once; nothing after the parser looks at raw JSON fields.
/// `options` (as the client sent them) and the payload travel only to be shown
/// to a trigger or relayed.
#[derive(Debug)]
pub enum ClientFrame {
    Join {
        channel: String,
        request: JoinRequest,
        options: Box<RawValue>,
        payload: Box<RawValue>,
    },
    Leave {
        channel: String,
    },
    Message {
        channel: String,
        to: MessageTo,
        options: Box<RawValue>,
        payload: Box<RawValue>,
    },
    History {
        channel: String,
    },
}

impl ClientFrame {
    /// Parse a text frame into its typed form, or say what is wrong with it
    /// (`Invalid frame: …`, docs/protocol.md section 2).
    pub fn parse(text: &str) -> Result<ClientFrame, InvalidFrame> {
        let inbound = parse_inbound(text)?;
        let options =
            || serde_json::value::to_raw_value(&inbound.options).expect("JSON maps serialise");
        Ok(match inbound.action {
            Action::Join => ClientFrame::Join {
                request: inbound.join_request()?,
                options: options(),
                channel: inbound.channel,
                payload: inbound.payload,
            },
            Action::Leave => ClientFrame::Leave {
                channel: inbound.channel,
            },
            Action::History => ClientFrame::History {
                channel: inbound.channel,
            },
            Action::Message => {
                let authenticated = inbound.requested_authenticated();
                let to = match inbound.target_socket() {
                    Some(id) => MessageTo::Socket {
                        id: id.to_string(),
                        authenticated,
                    },
                    None => MessageTo::Members { authenticated },
                };
                ClientFrame::Message {
                    to,
                    options: options(),
                    channel: inbound.channel,
                    payload: inbound.payload,
                }
            }
        })
    }

    pub fn channel(&self) -> &str {
        match self {
            ClientFrame::Join { channel, .. }
            | ClientFrame::Leave { channel }
            | ClientFrame::Message { channel, .. }
            | ClientFrame::History { channel } => channel,
        }
    }
}
