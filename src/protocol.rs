//! Wire frames of the Xano Realtime V1 protocol: parsing what clients send and
//! encoding what the server sends. Outgoing frames are encoded once into a
//! complete WebSocket frame (`Frame`) that every recipient shares.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Close codes of docs/protocol.md section 1.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const RESTART: u16 = 1012;
    pub const OVERLOAD: u16 = 1013;
    /// The session's token expired; the SDK reconnects (docs/protocol.md section 1).
    pub const SESSION_EXPIRED: u16 = 4000;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const TOO_MANY_FOR_USER: u16 = 4429;
}

/// A JSON value kept as text, shared without re-encoding (client objects, payloads).
pub type SharedJson = Arc<RawValue>;

pub fn shared_json(value: &impl Serialize) -> SharedJson {
    Arc::from(serde_json::value::to_raw_value(value).expect("JSON values always serialise"))
}

/// A complete, unmasked WebSocket frame (header + payload), encoded once.
pub type Frame = Bytes;

/// Wrap JSON text in a WebSocket text frame.
pub fn text_frame(json: &[u8]) -> Frame {
    let mut buf = BytesMut::with_capacity(json.len() + 10);
    put_header(&mut buf, 0x1, json.len());
    buf.extend_from_slice(json);
    buf.freeze()
}

fn put_header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_u8(0x80 | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

pub fn ping_frame() -> Frame {
    Bytes::from_static(&[0x89, 0x00])
}

pub fn pong_frame(data: &[u8]) -> Frame {
    let data = &data[..data.len().min(125)];
    let mut buf = BytesMut::with_capacity(2 + data.len());
    put_header(&mut buf, 0xA, data.len());
    buf.extend_from_slice(data);
    buf.freeze()
}

pub fn close_frame(code: u16, reason: &str) -> Frame {
    let reason = &reason.as_bytes()[..reason.len().min(120)];
    let mut buf = BytesMut::with_capacity(4 + reason.len());
    put_header(&mut buf, 0x8, 2 + reason.len());
    buf.put_u16(code);
    buf.extend_from_slice(reason);
    buf.freeze()
}

// ---------------------------------------------------------------- inbound

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

// ---------------------------------------------------------------- outbound

#[derive(Serialize)]
struct ChannelOptions<'a> {
    channel: &'a str,
}

#[derive(Serialize)]
struct Out<'a, O: Serialize, P: Serialize> {
    action: &'a str,
    options: O,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a RawValue>,
    payload: P,
}

fn encode<O: Serialize, P: Serialize>(
    action: &str,
    options: O,
    client: Option<&RawValue>,
    payload: P,
) -> Vec<u8> {
    serde_json::to_vec(&Out {
        action,
        options,
        client,
        payload,
    })
    .expect("frames always serialise")
}

#[derive(Serialize)]
struct MessagePayload<'a> {
    message: &'a str,
}

/// `{"action":"error","options":{"channel":C}|{},"payload":{"message":M}}`
pub fn error_frame(channel: Option<&str>, message: &str) -> Frame {
    let payload = MessagePayload { message };
    let json = match channel {
        Some(channel) => encode("error", ChannelOptions { channel }, None, payload),
        None => encode("error", Map::new(), None, payload),
    };
    text_frame(&json)
}

/// The JSON text of a delivered client message (what history stores).
pub fn message_json(
    channel: &str,
    authenticated: bool,
    target: Option<&str>,
    sender: &RawValue,
    payload: &RawValue,
) -> Bytes {
    #[derive(Serialize)]
    struct Opts<'a> {
        channel: &'a str,
        authenticated: bool,
        #[serde(rename = "socketId")]
        socket_id: Option<&'a str>,
    }
    let opts = Opts {
        channel,
        authenticated,
        socket_id: target,
    };
    Bytes::from(encode("message", opts, Some(sender), payload))
}

/// The JSON text of a backend event.
pub fn event_json(
    channel: &str,
    event: Option<&str>,
    data: &RawValue,
    dbo_id: i64,
    row_id: &Value,
) -> Bytes {
    #[derive(Serialize)]
    struct P<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<&'a str>,
        data: &'a RawValue,
        dbo_id: i64,
        row_id: &'a Value,
    }
    let payload = P {
        event,
        data,
        dbo_id,
        row_id,
    };
    Bytes::from(encode("event", ChannelOptions { channel }, None, payload))
}

/// `{"action":A,"options":{"channel":C},["client":me,]"payload":{"history":[entries]}}`
pub fn history_frame<'a>(
    action: &str,
    channel: &str,
    client: Option<&RawValue>,
    entries: impl Iterator<Item = &'a [u8]>,
) -> Frame {
    history_frame_within(action, channel, client, entries, usize::MAX)
}

/// A history reply of at most `budget` bytes of JSON: the newest entries that fit,
/// oldest first (docs/protocol.md section 9), so a join always gets its ack.
pub fn history_frame_within<'a>(
    action: &str,
    channel: &str,
    client: Option<&RawValue>,
    entries: impl Iterator<Item = &'a [u8]>,
    budget: usize,
) -> Frame {
    let head = encode(
        action,
        ChannelOptions { channel },
        client,
        RawValue::from_string("null".into()).expect("null is JSON"),
    );
    // Replace the trailing `null}` with the history list, keeping entries as stored.
    let mut json = head[..head.len() - "null}".len()].to_vec();
    json.extend_from_slice(b"{\"history\":[");
    let entries: Vec<&[u8]> = entries.collect();
    let mut room = budget.saturating_sub(json.len() + 3);
    let mut first = entries.len();
    for entry in entries.iter().rev() {
        let cost = entry.len() + 1; // and its comma
        if cost > room {
            break;
        }
        room -= cost;
        first -= 1;
    }
    for (i, entry) in entries[first..].iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(entry);
    }
    json.extend_from_slice(b"]}}");
    text_frame(&json)
}

pub fn leave_frame(channel: &str) -> Frame {
    text_frame(&encode("leave", ChannelOptions { channel }, None, ()))
}

pub fn presence_full_frame<'a>(
    channel: &str,
    members: impl Iterator<Item = &'a RawValue>,
) -> Frame {
    presence_full_frame_within(channel, members, usize::MAX).0
}

/// A `presence_full` of at most about `budget` bytes: the first members that fit.
/// Answers the frame and how many members it lists.
pub fn presence_full_frame_within<'a>(
    channel: &str,
    members: impl Iterator<Item = &'a RawValue>,
    budget: usize,
) -> (Frame, usize) {
    #[derive(Serialize)]
    struct P<'a> {
        presence: Vec<&'a RawValue>,
    }
    let mut room = budget.saturating_sub(64 + channel.len());
    let mut presence = Vec::new();
    for member in members {
        let cost = member.get().len() + 1;
        if cost > room {
            break;
        }
        room -= cost;
        presence.push(member);
    }
    let listed = presence.len();
    let frame = text_frame(&encode(
        "presence_full",
        ChannelOptions { channel },
        None,
        P { presence },
    ));
    (frame, listed)
}

/// The JSON text of a presence update (a broadcast, so JSON rather than a frame).
pub fn presence_update_json(channel: &str, joined: bool, member: &RawValue) -> Bytes {
    #[derive(Serialize)]
    struct P<'a> {
        action: &'a str,
        presence: &'a RawValue,
    }
    let payload = P {
        action: if joined { "join" } else { "leave" },
        presence: member,
    };
    Bytes::from(encode(
        "presence_update",
        ChannelOptions { channel },
        None,
        payload,
    ))
}

#[cfg(test)]
mod tests;
