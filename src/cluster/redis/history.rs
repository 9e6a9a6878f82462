//! A channel's history is its recovery stream (docs/architecture.md, "Engine"): every
//! broadcast is appended to the stream once (`writer::PUBLISH_LUA`), with the
//! history cap it was published with (`0`: not kept in history). A history read is
//! the newest `cap` entries with a cap, `cap` being the newest one's; one append per
//! publish instead of a stream entry and a list entry halves what Redis does for it.
//!
//! Entries: `e` = the envelope as published (`publish::encode_envelope`), `h` = its
//! history cap. A clear (`Broker::clear_history`) appends a marker entry (`c`), so
//! a node recovering from the stream still finds every broadcast, and a history read
//! stops at the marker.
//!
//! The stream lives at least `max(history TTL, RECOVERY_TTL_MS)` after the last
//! publish kept in history, `RECOVERY_TTL_MS` after any other (`ttl`). A read stops at the first gap
//! longer than the history TTL between kept entries (or since the newest): what is
//! before it would have expired with a history of its own key.

use super::*;

/// How many broadcasts a channel's stream keeps (about: trimmed whole macro nodes at
/// a time). A history (at most 1,000, `config`) is the newest capped entries among
/// them, so it is whole unless more than `RECOVERY_LEN - cap` uncapped broadcasts
/// (presence events) came after its oldest message.
pub(super) const RECOVERY_LEN: usize = 1000;
/// How long a stream outlives its last broadcast when none of them is kept in history:
/// longer than a node takes to reconnect and recover.
pub(super) const RECOVERY_TTL_MS: u64 = 120_000;

/// KEYS: stream. ARGV: history TTL (ms). The envelopes of the history, oldest first.
pub(super) const READ_LUA: &str = r#"
local out, cap, from = {}, nil, '+'
local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
local newer = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
while from do
  local page = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT', 200)
  for _, entry in ipairs(page) do
    local f = entry[2]
    if f[1] ~= 'e' then
      from = nil
      break
    end
    local c = tonumber(f[4]) or 0
    if c > 0 then
      local ms = tonumber(string.match(entry[1], '^(%d+)'))
      if ms + ttl < newer then
        from = nil
        break
      end
      newer = ms
      cap = cap or c
      out[#out + 1] = f[2]
      if #out >= cap then
        from = nil
        break
      end
    end
  end
  if from and #page == 200 then
    from = '(' .. page[#page][1]
  else
    from = nil
  end
end
local n = #out
for i = 1, math.floor(n / 2) do
  out[i], out[n + 1 - i] = out[n + 1 - i], out[i]
end
return out
"#;

impl Inner {
    /// The history's envelopes, oldest first.
    pub(super) async fn read_history(&self, key: &ChannelKey) -> redis::RedisResult<Vec<Vec<u8>>> {
        let mut conn = self.conn();
        self.history_script
            .key(self.recovery_stream(key))
            .arg(self.history_ttl_ms)
            .invoke_async(&mut conn)
            .await
    }

    /// A marker that ends the history here; the broadcasts before it stay in the
    /// stream for nodes recovering from it. No stream, nothing to clear.
    pub(super) async fn clear_history(&self, key: &ChannelKey) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        redis::cmd("XADD")
            .arg(self.recovery_stream(key))
            .arg("NOMKSTREAM")
            .arg("MAXLEN")
            .arg("~")
            .arg(RECOVERY_LEN)
            .arg("*")
            .arg("c")
            .arg(1)
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(|_| ())
    }

    /// How long a stream lives after a publish kept in history (`ttl`: set again
    /// at most every `ttl::REFRESH_EVERY`, so that much longer).
    pub(super) fn history_stream_ttl_ms(&self) -> u64 {
        self.history_ttl_ms.max(RECOVERY_TTL_MS) + ttl::REFRESH_EVERY.as_millis() as u64
    }
}

/// The stream's broadcasts (`e`), by stream id, in order; clear markers left out.
pub(super) fn recovery_entries(list: &redis::Value) -> Vec<(String, Vec<u8>)> {
    events::stream_entries(list)
        .filter_map(|(id, fields)| {
            let (field, envelope) = events::entry_fields(fields).next()?;
            (field == "e").then_some((id, envelope))
        })
        .collect()
}

/// A history entry from its envelope: the frame and who may see it.
pub(super) fn history_entry(envelope: &[u8]) -> Option<HistoryEntry> {
    let arrived = decode_envelope(envelope)?;
    Some(HistoryEntry {
        json: arrived.broadcast.json,
        audience: arrived.broadcast.audience,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(
                fields
                    .iter()
                    .map(|f| Value::BulkString(f.as_bytes().to_vec()))
                    .collect(),
            ),
        ])
    }

    /// A node recovering from the stream gets every broadcast, and no clear marker.
    #[test]
    fn recovery_reads_the_broadcasts_around_a_clear_marker() {
        let list = Value::Array(vec![
            entry("1-0", &["e", "a", "h", "5"]),
            entry("2-0", &["c", "1"]),
            entry("3-0", &["e", "b", "h", "0"]),
        ]);
        assert_eq!(
            recovery_entries(&list),
            vec![("1-0".into(), b"a".to_vec()), ("3-0".into(), b"b".to_vec())]
        );
    }
}
