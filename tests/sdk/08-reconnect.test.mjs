// 8. client.realtimeReconnect(): the SDK closes its socket with 4000, opens a
//    new one after its backoff (1 s), re-joins every channel object, and keeps
//    receiving on them. The server sees a new socket: a new socketId.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, ids } from "./helpers/harness.mjs";

const RECONNECT_WAIT = 10_000; // the SDK waits 1 s before reconnecting

test("realtimeReconnect() gives a new socket that keeps its channels", async (t) => {
  const room = uniq("chat/reconnect");
  const side = uniq("chat/reconnect-side");
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });

  const [aliceRoomJoin] = await alice.joinAll([
    { name: room, options: { presence: true } },
    { name: side, options: {} },
  ]);
  const oldId = aliceRoomJoin.client.socketId;
  const bSince = bob.mark();
  const bobId = (await bob.join(room, { presence: true })).client.socketId;
  await bob.join(side);
  const fullB = await bob.waitAction(room, "presence_full", () => true, { since: bSince });
  assert.deepEqual(ids(fullB.payload.presence), [oldId, bobId].sort());

  const aSince = alice.mark();
  const b2 = bob.mark();
  await alice.reconnect();

  // The SDK closed with 4000 and saw 4000 back: that is what makes it reconnect.
  const closed = await alice.waitFor((e) => e.type === "close", { since: aSince, what: "socket close" });
  assert.equal(closed.code, 4000, `close code seen by the SDK: ${closed.code} (it reconnects only on 1006/1011-1014/4000)`);
  await alice.waitFor(
    (e) => e.type === "cb" && e.frame.action === "connection_status" && e.frame.payload?.status === "disconnected",
    { since: aSince, what: "SDK disconnected status" },
  );

  // New socket: both channel objects join again, with a new socketId.
  const newJoin = await alice.waitAction(room, "join", (f) => f.client?.socketId && f.client.socketId !== oldId, {
    since: aSince,
    timeout: RECONNECT_WAIT,
  });
  const newId = newJoin.client.socketId;
  await alice.waitAction(side, "join", (f) => f.client?.socketId === newId, { since: aSince, timeout: RECONNECT_WAIT });
  const fullA = await alice.waitAction(room, "presence_full", (f) => ids(f.payload?.presence ?? []).includes(newId), {
    since: aSince,
    timeout: RECONNECT_WAIT,
  });
  assert.deepEqual(ids(fullA.payload.presence), [bobId, newId].sort(), "the old socket is gone from presence");

  // Bob sees the old socket leave and the new one join.
  await bob.waitAction(room, "presence_update", (f) => f.payload?.action === "leave" && f.payload.presence?.socketId === oldId, { since: b2 });
  await bob.waitAction(room, "presence_update", (f) => f.payload?.action === "join" && f.payload.presence?.socketId === newId, { since: b2 });
  assert.deepEqual(ids(await bob.presence(room)), [bobId, newId].sort(), "bob's getPresence() has the new socket only");
  assert.deepEqual(ids(await alice.presence(room)), [bobId, newId].sort(), "alice's getPresence() rebuilt from presence_full");

  // Messages keep flowing on both channels, in both directions.
  const a3 = alice.mark();
  const b3 = bob.mark();
  await bob.message(room, { text: "after reconnect (room)" });
  await bob.message(side, { text: "after reconnect (side)" });
  const m1 = await alice.waitAction(room, "message", (f) => f.payload?.text === "after reconnect (room)", { since: a3 });
  const m2 = await alice.waitAction(side, "message", (f) => f.payload?.text === "after reconnect (side)", { since: a3 });
  assert.equal(m1.client.socketId, bobId);
  assert.equal(m2.client.socketId, bobId);
  await alice.message(room, { text: "alice is back" });
  const back = await bob.waitAction(room, "message", (f) => f.payload?.text === "alice is back", { since: b3 });
  assert.equal(back.client.socketId, newId, "messages now come from the new socketId");

  // Delivered once each, despite the SDK's repeated joins.
  const n = alice.callbacks(room, a3).filter((e) => e.frame.action === "message" && e.frame.payload?.text === "after reconnect (room)").length;
  assert.equal(n, 1, "no duplicate delivery after re-joining");
});
