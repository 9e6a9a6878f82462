// 7. Events published over HTTP (POST /api/apps/{hash}/events) reach SDK clients.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, publish, mintJwt } from "./helpers/harness.mjs";

test("an HTTP event reaches every SDK client on the channel", async (t) => {
  const channel = uniq("chat/events");
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });
  await alice.join(channel);
  await bob.join(channel);

  const data = { id: 1234, total: 99.5, items: [{ sku: "x" }], note: "héllo" };
  const aSince = alice.mark();
  const bSince = bob.mark();
  const res = await publish({ channel, event: "order.created", data });
  assert.equal(res.status, 202, `publish answered ${res.status} ${res.body}`);

  for (const [c, since] of [[alice, aSince], [bob, bSince]]) {
    const ev = await c.waitAction(channel, "event", () => true, { since });
    assert.deepEqual(ev.payload, { event: "order.created", data, dbo_id: 0, row_id: 0 }, `${c.label}: event payload`);
  }

  // An array body: each event, in order.
  const a2 = alice.mark();
  const res2 = await publish([
    { channel, event: "first", data: { n: 1 } },
    { channel, event: "second", data: { n: 2 } },
  ]);
  assert.equal(res2.status, 202, `publish answered ${res2.status} ${res2.body}`);
  await alice.waitAction(channel, "event", (f) => f.payload?.event === "second", { since: a2 });
  assert.deepEqual(
    alice.callbacks(channel, a2).filter((e) => e.frame.action === "event").map((e) => e.frame.payload.event),
    ["first", "second"],
  );
});

test("an event to a channel ending in * reaches every live channel with that prefix", async (t) => {
  const prefix = uniq("chat/fanout");
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });
  const chA = `${prefix}/a`;
  const chB = `${prefix}/b`;
  await alice.join(chA);
  await bob.join(chB);
  const aSince = alice.mark();
  const bSince = bob.mark();
  const res = await publish({ channel: `${prefix}/*`, event: "broadcast", data: { all: true } });
  assert.equal(res.status, 202, `publish answered ${res.status} ${res.body}`);
  const evA = await alice.waitAction(chA, "event", () => true, { since: aSince });
  const evB = await bob.waitAction(chB, "event", () => true, { since: bSince });
  assert.equal(evA.options.channel, chA, "concrete channel name, never the pattern");
  assert.equal(evB.options.channel, chB);
  assert.deepEqual(evA.payload.data, { all: true });
});

test("an event with auth_id reaches only that user's sockets", async (t) => {
  const channel = uniq("chat/targeted");
  const anon = await SdkClient.start(t, { label: "anon" });
  const user42 = await SdkClient.start(t, { label: "user42", token: mintJwt({ sub: "42", dbo_id: 5, extras: {} }) });
  const user43 = await SdkClient.start(t, { label: "user43", token: mintJwt({ sub: "43", dbo_id: 5, extras: {} }) });
  for (const c of [anon, user42, user43]) await c.join(channel);
  const since = Object.fromEntries([anon, user42, user43].map((c) => [c.label, c.mark()]));

  const res = await publish({ channel, event: "private", data: { secret: 1 }, auth_table: 5, auth_id: 42 });
  assert.equal(res.status, 202, `publish answered ${res.status} ${res.body}`);
  const ev = await user42.waitAction(channel, "event", (f) => f.payload?.event === "private", { since: since.user42 });
  assert.deepEqual(ev.payload.data, { secret: 1 });
  assert.equal(ev.payload.dbo_id, 5);
  assert.equal(String(ev.payload.row_id), "42");

  // Marker event to everyone, published after: once it arrived, a leaked
  // targeted event would have arrived before it.
  const res2 = await publish({ channel, event: "marker", data: {} });
  assert.equal(res2.status, 202);
  for (const c of [anon, user43]) {
    await c.waitAction(channel, "event", (f) => f.payload?.event === "marker", { since: since[c.label] });
    const leaked = c.callbacks(channel, since[c.label]).filter((e) => e.frame.payload?.event === "private");
    assert.deepEqual(leaked.map((e) => e.frame), [], `${c.label} must not receive an event for user 42`);
  }
});

test("publish API refuses a bad key and an unknown app", async () => {
  const channel = uniq("chat/refused");
  assert.equal((await publish({ channel, data: {} }, { apiKey: "wrong" })).status, 401);
  // An unknown app gets the same 401 as a bad key: the API does not tell which hashes exist.
  assert.equal((await publish({ channel, data: {} }, { hash: "no-such-app" })).status, 401);
  assert.equal((await publish({ channel: uniq("nomatch/x"), data: {} })).status, 404, "no rule for the channel");
});
