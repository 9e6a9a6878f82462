// 3. Message history: delivered in the join ack when asked for
//    ({history: true}), and on request through channel.history().
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq } from "./helpers/harness.mjs";

test("history on join and on request, oldest first", async (t) => {
  const channel = uniq("chat/history");
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });
  const carol = await SdkClient.start(t, { label: "carol" });

  const aliceId = (await alice.join(channel)).client.socketId;
  const sent = [{ text: "one", i: 1 }, { text: "two", i: 2 }, { text: "three", i: 3, deep: { a: [1, 2] } }];
  for (const payload of sent) {
    // Wait for each echo so the order of the messages is settled.
    const since = alice.mark();
    await alice.message(channel, payload);
    await alice.waitAction(channel, "message", (f) => f.payload?.i === payload.i, { since });
  }

  const checkHistory = (history, expected, who) => {
    assert.ok(Array.isArray(history), `${who}: history is an array, got ${JSON.stringify(history)}`);
    assert.deepEqual(history.map((m) => m.payload), expected, `${who}: the stored payloads, oldest first`);
    for (const m of history) {
      assert.equal(m.action, "message", `${who}: history entries are message frames`);
      assert.equal(m.options?.channel, channel, `${who}: entry options.channel`);
      assert.equal(m.client?.socketId, aliceId, `${who}: entry client is the sender`);
    }
  };

  // Join with history: the join action's payload.history holds them.
  const bobJoin = await bob.join(channel, { history: true });
  checkHistory(bobJoin.payload?.history, sent, "bob's join ack");

  // Join without history: an empty list.
  const carolJoin = await carol.join(channel);
  assert.deepEqual(carolJoin.payload?.history, [], "join without {history:true} carries history []");

  // A direct message is never stored; one more public message is.
  const bobId = bobJoin.client.socketId;
  const bSince = bob.mark();
  // Alice did not ask for presence here, so she sends the direct message with
  // channel.message(payload, {socketId}): the same wire frame that
  // XanoRealtimeClient.message() sends (test 4 covers that path).
  await alice.message(channel, { text: "secret" }, { socketId: bobId });
  await bob.waitAction(channel, "message", (f) => f.payload?.text === "secret", { since: bSince });
  const four = { text: "four", i: 4 };
  const aSince = alice.mark();
  await alice.message(channel, four);
  await alice.waitAction(channel, "message", (f) => f.payload?.i === 4, { since: aSince });

  // On request: channel.history() -> a `history` action.
  const since = bob.mark();
  await bob.history(channel);
  const reply = await bob.waitAction(channel, "history", () => true, { since });
  checkHistory(reply.payload?.history, [...sent, four], "bob's history() reply");

  // A member that joined without history can still ask for it.
  const cSince = carol.mark();
  await carol.history(channel);
  const carolReply = await carol.waitAction(channel, "history", () => true, { since: cSince });
  checkHistory(carolReply.payload?.history, [...sent, four], "carol's history() reply");
});
