// 4. Direct message through a presence entry: getPresence() returns
//    XanoRealtimeClient objects; entry.message(payload) reaches that socket only.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, ids } from "./helpers/harness.mjs";

test("direct message via XanoRealtimeClient.message reaches the target only", async (t) => {
  const channel = uniq("chat/direct");
  const opts = { presence: true };
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });
  const carol = await SdkClient.start(t, { label: "carol" });

  const aSince = alice.mark();
  const aliceId = (await alice.join(channel, opts)).client.socketId;
  const bobId = (await bob.join(channel, opts)).client.socketId;
  const carolId = (await carol.join(channel, opts)).client.socketId;
  await alice.waitAction(channel, "presence_update", (f) => f.payload?.presence?.socketId === carolId, { since: aSince });
  assert.deepEqual(ids(await alice.presence(channel)), [aliceId, bobId, carolId].sort());

  const secret = { text: "for bob only", at: 42 };
  const bSince = bob.mark();
  const cSince = carol.mark();
  const aSince2 = alice.mark();
  await alice.direct(channel, bobId, secret);

  const got = await bob.waitAction(channel, "message", (f) => f.payload?.text === secret.text, { since: bSince });
  assert.deepEqual(got.payload, secret, "payload unchanged");
  assert.equal(got.options.socketId, bobId, "options.socketId is the target");
  assert.equal(got.client?.socketId, aliceId, "client is the sender");

  // Ordering marker instead of a sleep: alice's later public message is
  // routed after the direct one, so once carol (and alice's echo) have the
  // marker, a leaked direct message would already have arrived.
  await alice.message(channel, { text: "marker" });
  await carol.waitAction(channel, "message", (f) => f.payload?.text === "marker", { since: cSince });
  await alice.waitAction(channel, "message", (f) => f.payload?.text === "marker", { since: aSince2 });
  await bob.waitAction(channel, "message", (f) => f.payload?.text === "marker", { since: bSince });

  const leaked = (c, since) =>
    c.callbacks(channel, since).filter((e) => e.frame.action === "message" && e.frame.payload?.text === secret.text);
  assert.deepEqual(leaked(carol, cSince).map((e) => e.frame), [], "a third member does not receive it");
  assert.deepEqual(leaked(alice, aSince2).map((e) => e.frame), [], "the sender gets no echo of a direct message");
  assert.equal(leaked(bob, bSince).length, 1, "the target receives it exactly once");
  // XanoRealtimeClient.history() sends `history` with options.socketId: the
  // server ignores the socketId and answers with the channel's history, which
  // holds the public marker but never the direct message.
  const hSince = alice.mark();
  await alice.presenceHistory(channel, bobId);
  const hist = await alice.waitAction(channel, "history", () => true, { since: hSince });
  assert.deepEqual(
    (hist.payload?.history ?? []).map((m) => m.payload),
    [{ text: "marker" }],
    "channel history: the public message only",
  );

  for (const c of [alice, bob, carol]) {
    assert.deepEqual(c.callbacks(channel).filter((e) => e.via === "onError").map((e) => e.frame), [], `${c.label}: no errors`);
  }
});
