//! The end of a run: one barrier message through each channel, after which every
//! member has received everything accepted before it.

use crate::clients::{self, Command};
use std::time::{Duration, Instant};

/// The open session of a client: (its index in the log, when it joined).
fn open_session(c: &clients::Client) -> Option<(usize, Instant)> {
    let l = c.log.lock().unwrap();
    l.open.map(|i| (i, l.sessions[i].joined))
}

/// One barrier through channel `ch`, sent by an open member: every member whose
/// session began before it was sent must receive it, and then has received every
/// message accepted before it (one order per channel). Sockets may still be
/// closing and reopening after the last fault (a paused broker drops its sockets
/// when it wakes): a member that reconnected after the barrier owes nothing of
/// before, and a barrier whose sender's socket closed is sent again.
pub async fn end_barrier(ch: usize, members: &[&clients::Client]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        let sender = loop {
            if let Some(s) = members
                .iter()
                .find_map(|c| open_session(c).map(|session| (c, session)))
            {
                break s;
            }
            if Instant::now() > deadline {
                return Err("no open member at the end".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (client, (session, _)) = sender;
        let tag = format!("end-{ch}-{attempt}");
        let sent_at = Instant::now();
        let _ = client.commands.send(Command::Barrier(tag.clone()));
        loop {
            if open_session(client).map(|(i, _)| i) != Some(session) {
                break; // its socket closed: maybe before the barrier went out
            }
            let missing: Vec<usize> = members
                .iter()
                .filter(|c| {
                    let owed = open_session(c).is_some_and(|(_, joined)| joined < sent_at);
                    owed && !c.log.lock().unwrap().barriers.contains(&tag)
                })
                .map(|c| c.id)
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the end barrier never reached clients {missing:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    unreachable!("the loop returns")
}
