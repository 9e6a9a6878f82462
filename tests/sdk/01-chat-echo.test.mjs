// 1. Two SDK clients chat on a chat/* channel; public messages are echoed to
//    the sender too, and carry the sender's socketId in `client`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq } from "./helpers/harness.mjs";

test("two clients chat, the sender receives its own message", async (t) => {
  const channel = uniq("chat/echo");
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });

  const aliceJoin = await alice.join(channel);
  const bobJoin = await bob.join(channel);
  const aliceId = aliceJoin.client?.socketId;
  const bobId = bobJoin.client?.socketId;
  assert.equal(typeof aliceId, "string", "join ack carries the socket's own client object");
  assert.ok(aliceId.length > 0);
  assert.equal(typeof bobId, "string");
  assert.notEqual(aliceId, bobId, "two sockets, two socketIds");
  assert.deepEqual(aliceJoin.client.extras, {}, "anonymous socket: extras {}");
  assert.deepEqual(aliceJoin.client.permissions, { dbo_id: 0, row_id: 0 }, "anonymous socket: permissions 0/0");

  const hello = { text: "hello from alice", n: 1, nested: { ok: true, list: [1, "two", null] } };
  const aSince = alice.mark();
  const bSince = bob.mark();
  await alice.message(channel, hello);
  const isHello = (f) => f.payload?.text === hello.text;
  const [atAlice, atBob] = await Promise.all([
    alice.waitAction(channel, "message", isHello, { since: aSince }),
    bob.waitAction(channel, "message", isHello, { since: bSince }),
  ]);
  for (const [who, frame] of [["alice (echo)", atAlice], ["bob", atBob]]) {
    assert.deepEqual(frame.payload, hello, `${who}: payload delivered unchanged`);
    assert.equal(frame.client?.socketId, aliceId, `${who}: client.socketId is the sender's`);
    assert.equal(frame.options.channel, channel);
    assert.equal(frame.options.socketId ?? null, null, `${who}: options.socketId null on a public message`);
    assert.equal(frame.options.authenticated, false, `${who}: options.authenticated false (anonymous sender)`);
  }

  // And back the other way.
  const reply = { text: "hi alice" };
  const since2 = alice.mark();
  const since2b = bob.mark();
  await bob.message(channel, reply);
  const back = await alice.waitAction(channel, "message", (f) => f.payload?.text === reply.text, { since: since2 });
  const echo = await bob.waitAction(channel, "message", (f) => f.payload?.text === reply.text, { since: since2b });
  assert.equal(back.client.socketId, bobId);
  assert.equal(echo.client.socketId, bobId);

  // Each message arrived exactly once at each client.
  const count = (c, text) =>
    c.callbacks(channel).filter((e) => e.frame.action === "message" && e.frame.payload?.text === text).length;
  assert.equal(count(alice, hello.text), 1, "alice got the message once");
  assert.equal(count(bob, hello.text), 1, "bob got the message once");

  // The server must never send connection_status (the SDK makes those itself).
  for (const c of [alice, bob]) {
    const bad = c.rawFrames().filter((f) => f.action === "connection_status");
    assert.deepEqual(bad, [], `${c.label}: server sent connection_status frames`);
    assert.deepEqual(
      c.callbacks(channel).filter((e) => e.via === "onError").map((e) => e.frame),
      [],
      `${c.label}: no error frames`,
    );
  }
});
