//! The checker: reads what every client sent and received and proves the promise of
//! docs/protocol.md section 9 for what the run covers, or names the counterexample.
//! Pure: it sees only the log, never the processes.
//!
//! - lost: an accepted message (its sender got the echo) not received by a session
//!   that was in the channel from before the message was sent to the end of the run;
//! - duplicated: a message received twice by one session;
//! - reordered: two sessions that received two messages in different orders;
//! - ghosts: presence at the end that lists a socket no session holds, or misses one;
//! - leaked: a direct message received by a socket it was not addressed to (or
//!   received twice), or a message for authenticated members received by an
//!   anonymous socket.
//!
//! A message for authenticated members only (`authenticated: true`) is owed to the
//! authenticated sessions alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

/// A message: (sending client, its number). Unique in a run.
pub type MessageId = (usize, u64);

/// One socket's time in one channel, as its client saw it.
#[derive(Debug, Clone)]
pub struct Session {
    pub socket_id: String,
    pub channel: String,
    /// The socket carried a valid token.
    pub authenticated: bool,
    /// When the join ack arrived.
    pub joined: Instant,
    /// Still open at the end of the run.
    pub open_at_end: bool,
    /// Every message received, in order.
    pub received: Vec<MessageId>,
    /// Every direct message received: (its id, the socket it was addressed to).
    pub direct: Vec<(MessageId, String)>,
}

/// A message a client sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: MessageId,
    pub channel: String,
    pub at: Instant,
    /// The sender received its echo.
    pub accepted: bool,
    /// For authenticated members only.
    pub auth_only: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub reordered: Vec<String>,
    pub ghosts: Vec<String>,
    pub leaked: Vec<String>,
    pub messages_checked: usize,
    pub directs_checked: usize,
    /// The smallest counterexample: the violation whose message was sent first
    /// (later ones are often its consequences), with that send time.
    pub earliest: Option<(Instant, String)>,
}

impl Report {
    /// Remember `text` as the smallest counterexample if its message is the earliest.
    fn note(&mut self, at: Option<Instant>, text: &str) {
        let Some(at) = at else { return };
        if self.earliest.as_ref().is_none_or(|(first, _)| at < *first) {
            self.earliest = Some((at, text.to_string()));
        }
    }

    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.reordered.is_empty()
            && self.ghosts.is_empty()
            && self.leaked.is_empty()
    }
}

pub fn check(sent: &[Sent], sessions: &[Session]) -> Report {
    let mut report = Report::default();
    let sent_at: HashMap<MessageId, Instant> = sent.iter().map(|m| (m.id, m.at)).collect();
    for s in sessions {
        let mut seen = HashSet::new();
        for id in &s.received {
            if !seen.insert(*id) {
                let text = format!("{id:?} twice at socket {} on {}", s.socket_id, s.channel);
                report.note(sent_at.get(id).copied(), &text);
                report.duplicated.push(text);
            }
        }
    }
    // Leaked: a direct message reaches the socket it names, once, and no other.
    for s in sessions {
        let mut seen = HashSet::new();
        for (id, to) in &s.direct {
            report.directs_checked += 1;
            if *to != s.socket_id {
                report.leaked.push(format!(
                    "direct {id:?} for {to} reached socket {} on {}",
                    s.socket_id, s.channel
                ));
            } else if !seen.insert(*id) {
                report.leaked.push(format!(
                    "direct {id:?} twice at socket {} on {}",
                    s.socket_id, s.channel
                ));
            }
        }
    }
    // Leaked: a message for authenticated members at an anonymous socket.
    let auth_only: HashSet<MessageId> = sent.iter().filter(|m| m.auth_only).map(|m| m.id).collect();
    for s in sessions.iter().filter(|s| !s.authenticated) {
        for id in s.received.iter().filter(|id| auth_only.contains(id)) {
            let text = format!(
                "{id:?} for authenticated members reached anonymous socket {} on {}",
                s.socket_id, s.channel
            );
            report.note(sent_at.get(id).copied(), &text);
            report.leaked.push(text);
        }
    }
    // Lost: accepted, sent after a session joined, and that session lasted (and is
    // in the message's audience).
    for m in sent.iter().filter(|m| m.accepted) {
        report.messages_checked += 1;
        for s in sessions {
            if s.channel != m.channel
                || !s.open_at_end
                || s.joined >= m.at
                || (m.auth_only && !s.authenticated)
            {
                continue;
            }
            if !s.received.contains(&m.id) {
                let text = format!(
                    "{:?} on {} (accepted) never reached socket {}, a member since before it was sent",
                    m.id, m.channel, s.socket_id
                );
                report.note(Some(m.at), &text);
                report.lost.push(text);
            }
        }
    }
    // Reordered: for each pair of sessions of a channel, the messages both received
    // come in the same relative order.
    let mut by_channel: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
    for s in sessions {
        by_channel.entry(&s.channel).or_default().push(s);
    }
    for (channel, list) in by_channel {
        for (i, a) in list.iter().enumerate() {
            let position: HashMap<MessageId, usize> = a
                .received
                .iter()
                .enumerate()
                .map(|(p, id)| (*id, p))
                .collect();
            for b in &list[i + 1..] {
                let mut last: Option<(usize, MessageId)> = None;
                for id in &b.received {
                    let Some(&p) = position.get(id) else { continue };
                    if let Some((q, before)) = last {
                        if p < q {
                            let text = format!(
                                "on {channel}: socket {} got {before:?} before {id:?}, socket {} the other way round",
                                b.socket_id, a.socket_id
                            );
                            let at = [before, *id]
                                .iter()
                                .filter_map(|m| sent_at.get(m))
                                .min()
                                .copied();
                            report.note(at, &text);
                            report.reordered.push(text);
                            break;
                        }
                    }
                    last = Some((p, *id));
                }
            }
        }
    }
    report
}

/// Ghosts: presence listed per channel at the end, against the open sessions.
pub fn check_presence(
    listed: &BTreeMap<String, BTreeSet<String>>,
    sessions: &[Session],
) -> Vec<String> {
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sessions.iter().filter(|s| s.open_at_end) {
        expected
            .entry(s.channel.clone())
            .or_default()
            .insert(s.socket_id.clone());
    }
    let mut out = Vec::new();
    for (channel, want) in &expected {
        let got = listed.get(channel).cloned().unwrap_or_default();
        for ghost in got.difference(want) {
            out.push(format!(
                "{channel}: presence lists {ghost}, which no client holds"
            ));
        }
        for missing in want.difference(&got) {
            out.push(format!(
                "{channel}: presence misses {missing}, an open member"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(id: &str, joined: Instant, open: bool, received: &[MessageId]) -> Session {
        Session {
            socket_id: id.into(),
            channel: "c".into(),
            authenticated: false,
            joined,
            open_at_end: open,
            received: received.to_vec(),
            direct: Vec::new(),
        }
    }

    fn sent(id: MessageId, at: Instant, accepted: bool) -> Sent {
        Sent {
            id,
            channel: "c".into(),
            at,
            accepted,
            auth_only: false,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(10);
        let s = vec![
            session("a", t0, true, &[(0, 1), (1, 1)]),
            session("b", t0, true, &[(0, 1), (1, 1)]),
        ];
        let m = vec![sent((0, 1), t1, true), sent((1, 1), t1, true)];
        let r = check(&m, &s);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.messages_checked, 2);
    }

    #[test]
    fn each_violation_is_named() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(10);
        let s = vec![
            session("a", t0, true, &[(0, 1), (0, 2), (0, 2)]),
            session("b", t0, true, &[(0, 2), (0, 1)]),
            // Joined after the sends, or closed before the end: owed nothing.
            session("late", t1 + Duration::from_millis(1), true, &[]),
            session("gone", t0, false, &[]),
        ];
        let m = vec![
            sent((0, 1), t1, true),
            sent((0, 2), t1, true),
            sent((0, 3), t1, true),
            sent((0, 4), t1, false),
        ];
        let r = check(&m, &s);
        assert_eq!(r.duplicated.len(), 1, "{r:?}");
        assert_eq!(r.reordered.len(), 1, "{r:?}");
        // (0,3) reached neither a nor b; (0,4) was refused, so it is owed to nobody.
        assert_eq!(r.lost.len(), 2, "{r:?}");
        assert!(r.lost.iter().all(|l| l.contains("(0, 3)")));
        // The smallest counterexample is the violation of the earliest message.
        let (at, first) = r.earliest.expect("a counterexample");
        assert_eq!(at, t1);
        assert!(
            first.contains("(0, 2)") || first.contains("(0, 1)"),
            "{first}"
        );
    }

    #[test]
    fn a_direct_message_elsewhere_or_twice_is_a_leak() {
        let t0 = Instant::now();
        let mut a = session("a", t0, true, &[]);
        a.direct = vec![
            ((1, 0), "a".into()),
            ((1, 1), "b".into()),
            ((1, 0), "a".into()),
        ];
        let r = check(&[], &[a]);
        assert_eq!(r.leaked.len(), 2, "{r:?}");
        assert!(r.leaked[0].contains("for b reached socket a"), "{r:?}");
        assert_eq!(r.directs_checked, 3);
    }

    /// An authenticated-only message is owed to authenticated members alone, and is
    /// a leak at an anonymous one.
    #[test]
    fn authenticated_only_messages_reach_authenticated_members_only() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(10);
        let mut authed = session("authed", t0, true, &[(0, 1)]);
        authed.authenticated = true;
        let mut missed = session("authed-missed", t0, true, &[]);
        missed.authenticated = true;
        let anonymous = session("anon", t0, true, &[]);
        let peeking = session("anon-peeking", t0, true, &[(0, 1)]);
        let mut m = sent((0, 1), t1, true);
        m.auth_only = true;
        let r = check(&[m], &[authed, missed, anonymous, peeking]);
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert!(r.lost[0].contains("authed-missed"), "{r:?}");
        assert_eq!(r.leaked.len(), 1, "{r:?}");
        assert!(r.leaked[0].contains("anon-peeking"), "{r:?}");
    }

    #[test]
    fn presence_must_match_the_open_sessions() {
        let t0 = Instant::now();
        let s = vec![session("a", t0, true, &[]), session("b", t0, false, &[])];
        let mut listed = BTreeMap::new();
        listed.insert("c".to_string(), BTreeSet::from(["b".to_string()]));
        let ghosts = check_presence(&listed, &s);
        assert_eq!(ghosts.len(), 2, "{ghosts:?}");
    }
}
