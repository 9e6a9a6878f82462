//! The server API's socket commands as one node runs them (docs/protocol.md
//! section 10). The HTTP handler hands a command to the engine, which brings it to
//! every node; each node runs it here on its own sockets and answers how many it
//! reached.

use crate::actors::registry::Unsubscribe;
use crate::cluster::{CommandSink, SocketCommand};
use crate::protocol::close;
use crate::state::ServerState;
use std::sync::{Arc, Weak};

/// The node's command sink. It holds the state weakly: the state owns the engine,
/// which owns the sink.
pub fn sink(state: &Arc<ServerState>) -> CommandSink {
    let state = Arc::downgrade(state);
    Arc::new(move |command| {
        let state = state.clone();
        Box::pin(async move { run(state, command).await })
    })
}

async fn run(state: Weak<ServerState>, command: SocketCommand) -> usize {
    let Some(state) = state.upgrade() else {
        return 0;
    };
    match command {
        SocketCommand::Disconnect {
            app,
            target,
            reconnect,
        } => {
            // 4401: the SDK stays away; 4000: it comes back with the token it holds.
            let (code, reason) = if reconnect {
                (
                    close::SESSION_EXPIRED,
                    "disconnected by the backend (reconnect)",
                )
            } else {
                (close::UNAUTHORIZED, "disconnected by the backend")
            };
            state
                .connections
                .close_matching(&app, &target, code, reason)
        }
        SocketCommand::Unsubscribe {
            app,
            channel,
            target,
        } => match state.app(&app) {
            Some(app) => app
                .registry
                .send(Unsubscribe { channel, target })
                .await
                .unwrap_or(0),
            None => 0,
        },
    }
}
