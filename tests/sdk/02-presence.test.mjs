// 2. Presence: presence_full on join lists every member, presence_update
//    join/leave reach the others, and channel.getPresence() follows them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, ids } from "./helpers/harness.mjs";

test("presence_full, presence_update join/leave and getPresence()", async (t) => {
  const channel = uniq("chat/presence");
  const opts = { presence: true };
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });
  const carol = await SdkClient.start(t, { label: "carol" });

  // Alice alone.
  let since = alice.mark();
  const aliceId = (await alice.join(channel, opts)).client.socketId;
  const fullA = await alice.waitAction(channel, "presence_full", () => true, { since });
  assert.deepEqual(ids(fullA.payload.presence), [aliceId], "first member: presence_full lists itself only");
  assert.deepEqual(ids(await alice.presence(channel)), [aliceId], "alice getPresence() after presence_full");

  // Bob joins: his presence_full lists both, alice gets presence_update join.
  const aSince = alice.mark();
  since = bob.mark();
  const bobId = (await bob.join(channel, opts)).client.socketId;
  const fullB = await bob.waitAction(channel, "presence_full", () => true, { since });
  assert.deepEqual(ids(fullB.payload.presence), [aliceId, bobId].sort(), "bob's presence_full lists alice and bob");
  for (const member of fullB.payload.presence) {
    assert.deepEqual(member.extras, {}, "anonymous member: extras {}");
    assert.deepEqual(member.permissions, { dbo_id: 0, row_id: 0 }, "anonymous member: permissions 0/0");
  }
  const upd = await alice.waitAction(channel, "presence_update", (f) => f.payload?.action === "join", { since: aSince });
  assert.equal(upd.payload.presence.socketId, bobId, "alice is told that bob joined");
  assert.deepEqual(ids(await alice.presence(channel)), [aliceId, bobId].sort(), "alice getPresence() has bob");
  assert.deepEqual(ids(await bob.presence(channel)), [aliceId, bobId].sort(), "bob getPresence() has both");

  // Carol joins: both others get the join; nobody is told about itself.
  const a2 = alice.mark();
  const b2 = bob.mark();
  const carolId = (await carol.join(channel, opts)).client.socketId;
  await Promise.all([
    alice.waitAction(channel, "presence_update", (f) => f.payload?.action === "join" && f.payload.presence?.socketId === carolId, { since: a2 }),
    bob.waitAction(channel, "presence_update", (f) => f.payload?.action === "join" && f.payload.presence?.socketId === carolId, { since: b2 }),
  ]);
  const selfUpdates = bob
    .callbacks(channel)
    .filter((e) => e.frame.action === "presence_update" && e.frame.payload?.presence?.socketId === bobId);
  assert.deepEqual(selfUpdates.map((e) => e.frame), [], "the joiner gets no presence_update about itself");
  assert.deepEqual(ids(await bob.presence(channel)), [aliceId, bobId, carolId].sort());

  // Bob leaves the channel (channel.destroy() sends `leave`): alice and carol see it.
  const a3 = alice.mark();
  const c3 = carol.mark();
  await bob.destroy(channel);
  const isBobLeave = (f) => f.payload?.action === "leave" && f.payload.presence?.socketId === bobId;
  await Promise.all([
    alice.waitAction(channel, "presence_update", isBobLeave, { since: a3 }),
    carol.waitAction(channel, "presence_update", isBobLeave, { since: c3 }),
  ]);
  assert.deepEqual(ids(await alice.presence(channel)), [aliceId, carolId].sort(), "alice getPresence() lost bob");
  assert.deepEqual(ids(await carol.presence(channel)), [aliceId, carolId].sort(), "carol getPresence() lost bob");

  // Carol's process dies (socket dropped without a leave or close frame): alice sees her leave.
  const a4 = alice.mark();
  await carol.kill();
  await alice.waitAction(
    channel,
    "presence_update",
    (f) => f.payload?.action === "leave" && f.payload.presence?.socketId === carolId,
    { since: a4, what: "leave of a dropped socket" },
  );
  assert.deepEqual(ids(await alice.presence(channel)), [aliceId], "alice getPresence() is alone again");
});

test("a second channel object for the same channel: duplicate join is idempotent", async (t) => {
  // client.channel(name) twice (two components of one app) makes the SDK send
  // a second `join` for a channel the socket is already in.
  const channel = uniq("chat/dupjoin");
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });
  const aSince = alice.mark();
  const aliceId = (await alice.join(channel, { presence: true })).client.socketId;
  const bSince = bob.mark();
  const bobId = (await bob.join(channel, { presence: true })).client.socketId;
  await alice.waitAction(channel, "presence_update", (f) => f.payload?.presence?.socketId === bobId, { since: aSince });

  const a2 = alice.mark();
  await alice.subscribeAs("second", channel, { presence: true });
  const ack = await alice.waitAction("second", "join", () => true, { since: a2 });
  assert.equal(ack.client.socketId, aliceId, "same socket, same socketId");
  const full = await alice.waitAction("second", "presence_full", () => true, { since: a2 });
  assert.deepEqual(ids(full.payload.presence), [aliceId, bobId].sort(), "each socket listed once");

  // Marker: once bob has alice's next message, a presence broadcast caused by
  // the duplicate join would already be there.
  const b2 = bob.mark();
  await alice.message(channel, { text: "after duplicate join" });
  await bob.waitAction(channel, "message", (f) => f.payload?.text === "after duplicate join", { since: b2 });
  const aboutAlice = bob
    .callbacks(channel, bSince)
    .filter((e) => e.frame.action === "presence_update" && e.frame.payload?.presence?.socketId === aliceId);
  assert.deepEqual(aboutAlice.map((e) => e.frame), [], "no presence_update for a duplicate join");
  assert.deepEqual(ids(await bob.presence(channel)), [aliceId, bobId].sort());

  // One socket, one delivery: the SDK fans it out to both channel objects.
  const a3 = alice.mark();
  await bob.message(channel, { text: "once" });
  await alice.waitAction("second", "message", (f) => f.payload?.text === "once", { since: a3 });
  await alice.waitAction(channel, "message", (f) => f.payload?.text === "once", { since: a3 });
  const raw = alice.rawFrames(a3).filter((f) => f.action === "message" && f.payload?.text === "once");
  assert.equal(raw.length, 1, "the socket received the message once");
});
