//! The actors: a connection per socket, a channel per live channel, a registry per app.

pub mod channel;
pub mod connection;
pub mod registry;
