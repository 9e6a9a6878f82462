//! Switchboard: a realtime WebSocket pub/sub broker that speaks the Xano Realtime V1
//! protocol. docs/architecture.md explains the modules and docs/protocol.md the contract.

pub mod actors;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod control;
pub mod events;
pub mod http;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod protocol;
pub mod reload;
pub mod rules;
pub mod server;
pub mod state;
pub mod triggers;
pub mod webhooks;
pub mod xano;

pub use config::Config;
pub use server::{Server, ServerHandle};
