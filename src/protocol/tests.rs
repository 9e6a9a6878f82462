//! Tests of frame parsing and encoding (`src/protocol.rs`).

use super::*;
use serde_json::Value;

fn json_of(frame: &Frame) -> Value {
    let (len, start) = match frame[1] {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    assert_eq!(frame.len(), start + len);
    serde_json::from_slice(&frame[start..]).unwrap()
}

#[test]
fn parses_actions_and_legacy_frames() {
    let f =
        parse_inbound(r#"{"action":"join","options":{"channel":"c"},"payload":{"history":true}}"#)
            .unwrap();
    assert_eq!(f.action, Action::Join);
    assert_eq!(
        f.join_request().unwrap(),
        JoinRequest {
            history: true,
            presence: false
        }
    );
    let legacy = parse_inbound(
        r#"{"command":"message","commandOptions":{"channel":"c"},"payload":{"a":1}}"#,
    )
    .unwrap();
    assert_eq!(legacy.action, Action::Message);
    assert_eq!(legacy.payload.get(), r#"{"a":1}"#);
    let no_payload = parse_inbound(r#"{"action":"leave","options":{"channel":"c"}}"#).unwrap();
    assert_eq!(no_payload.payload.get(), "null");
}

#[test]
fn invalid_frames_say_what() {
    for (text, what, channel) in [
        ("nope", "not JSON", None),
        ("[1]", "not a JSON object", None),
        (
            r#"{"options":{"channel":"c"}}"#,
            "missing action",
            Some("c"),
        ),
        (
            r#"{"action":"dance","options":{"channel":"c"}}"#,
            "unknown action \"dance\"",
            Some("c"),
        ),
        (
            r#"{"action":"join","options":{}}"#,
            "missing options.channel",
            None,
        ),
        (r#"{"action":"join"}"#, "missing options.channel", None),
        (
            r#"{"action":"join","options":{"channel":5}}"#,
            "options.channel must be a string",
            None,
        ),
        (
            r#"{"action":1,"options":{"channel":"c"}}"#,
            "action must be a string",
            Some("c"),
        ),
        (
            r#"{"action":"join","options":[]}"#,
            "options must be an object",
            None,
        ),
        (
            r#"{"action":"message","options":{"channel":"c","socketId":3}}"#,
            "options.socketId must be a string",
            Some("c"),
        ),
    ] {
        let err = parse_inbound(text).unwrap_err();
        assert_eq!(err.what, what, "{text}");
        assert_eq!(err.channel.as_deref(), channel, "{text}");
    }
    let bad_join =
        parse_inbound(r#"{"action":"join","options":{"channel":"c"},"payload":{"history":"y"}}"#)
            .unwrap();
    assert!(bad_join.join_request().is_err());
}

#[test]
fn frames_have_the_documented_shape() {
    let e = json_of(&error_frame(Some("c"), "Channel not found"));
    assert_eq!(
        e,
        serde_json::json!({"action":"error","options":{"channel":"c"},"payload":{"message":"Channel not found"}})
    );
    let e = json_of(&error_frame(None, "x"));
    assert_eq!(e["options"], serde_json::json!({}));
    let client = shared_json(&serde_json::json!({"socketId":"s"}));
    let payload = shared_json(&serde_json::json!({"text":"hi"}));
    let m = message_json("c", false, None, &client, &payload);
    let h = json_of(&history_frame(
        "join",
        "c",
        Some(&client),
        [m.as_ref(), m.as_ref()].into_iter(),
    ));
    assert_eq!(h["payload"]["history"].as_array().unwrap().len(), 2);
    assert_eq!(h["payload"]["history"][0]["payload"]["text"], "hi");
    assert_eq!(
        h["payload"]["history"][0]["options"]["socketId"],
        Value::Null
    );
    assert_eq!(h["client"]["socketId"], "s");
    let empty = json_of(&history_frame("history", "c", None, std::iter::empty()));
    assert_eq!(empty["payload"], serde_json::json!({"history":[]}));
    let l = json_of(&leave_frame("c"));
    assert_eq!(
        l,
        serde_json::json!({"action":"leave","options":{"channel":"c"},"payload":null})
    );
    let big = text_frame(&vec![b'x'; 70_000]);
    assert_eq!(big[1], 127);
    let mid = text_frame(&vec![b'x'; 300]);
    assert_eq!(mid[1], 126);
}
