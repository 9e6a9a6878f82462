//! Wire frames of the Xano Realtime V1 protocol: parsing what clients send and
//! encoding what the server sends. Outgoing frames are encoded once into a
//! complete WebSocket frame (`Frame`) that every recipient shares.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::value::RawValue;
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

mod inbound;
mod outbound;
pub use inbound::*;
pub use outbound::*;

#[cfg(test)]
mod tests;
