//! The actors: a connection per socket, a channel per live channel, a registry per
//! app. Owners hold their actors' addresses; what an actor says back to its owner
//! goes through a `Recipient` of a message in `notices`.

pub mod channel;
pub mod connection;
pub mod notices;
pub mod registry;
