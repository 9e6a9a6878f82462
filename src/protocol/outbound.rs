//! What the server sends: JSON encoded once per broadcast or reply, wrapped in a
//! complete WebSocket frame every recipient shares; replies bounded in bytes.

use super::{text_frame, Frame};
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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
