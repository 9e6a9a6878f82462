// 5. An authenticated client's token claims (extras, dbo_id, sub -> row_id)
//    appear in the `client` object that others see.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, mintJwt, ids } from "./helpers/harness.mjs";

const extras = { name: "Alice Liddell", role: "admin", tags: ["a", "b"], profile: { avatar: "https://x.test/a.png", level: 3 } };
// JWT `sub` is a string per RFC 7519; the broker maps it to permissions.row_id.
const token = mintJwt({ sub: "42", dbo_id: 7, extras });

function checkAlice(client, who) {
  assert.ok(client, `${who}: a client object is present`);
  assert.deepEqual(client.extras, extras, `${who}: extras from the token`);
  assert.equal(client.permissions?.dbo_id, 7, `${who}: permissions.dbo_id from the token`);
  assert.equal(String(client.permissions?.row_id), "42", `${who}: permissions.row_id from sub`);
}

test("authenticated client's extras reach the others", async (t) => {
  const channel = uniq("chat/auth");
  const alice = await SdkClient.start(t, { label: "alice(auth)", token });
  const bob = await SdkClient.start(t, { label: "bob(anon)" });

  const aSince = alice.mark();
  const aliceJoin = await alice.join(channel, { presence: true });
  const aliceId = aliceJoin.client?.socketId;
  checkAlice(aliceJoin.client, "alice's own join ack");
  // No connection-level "Auth token rejected" error for a good token.
  assert.deepEqual(
    alice.rawFrames(aSince).filter((f) => f.action === "error"),
    [],
    "a valid token produces no error frame",
  );

  const bSince = bob.mark();
  const bobJoin = await bob.join(channel, { presence: true });
  const bobId = bobJoin.client.socketId;
  const full = await bob.waitAction(channel, "presence_full", () => true, { since: bSince });
  checkAlice(full.payload.presence.find((c) => c.socketId === aliceId), "bob's presence_full entry for alice");
  checkAlice((await bob.presence(channel)).find((c) => c.socketId === aliceId), "bob's getPresence() entry for alice");

  // Alice sees bob as anonymous.
  const upd = await alice.waitAction(channel, "presence_update", (f) => f.payload?.presence?.socketId === bobId, { since: aSince });
  assert.deepEqual(upd.payload.presence.extras, {});
  assert.deepEqual(upd.payload.presence.permissions, { dbo_id: 0, row_id: 0 });

  // A message from alice carries her client object.
  const b2 = bob.mark();
  await alice.message(channel, { text: "signed" });
  const msg = await bob.waitAction(channel, "message", (f) => f.payload?.text === "signed", { since: b2 });
  assert.equal(msg.client?.socketId, aliceId);
  checkAlice(msg.client, "message.client at bob");
});

test("a numeric sub is accepted too", async (t) => {
  const channel = uniq("chat/auth-num");
  const c = await SdkClient.start(t, { label: "numeric-sub", token: mintJwt({ sub: 42, dbo_id: 7, extras }) });
  const join = await c.join(channel);
  checkAlice(join.client, "join ack");
});

test("an expired or badly signed token: anonymous socket, rejection reported through onError", async (t) => {
  const channel = uniq("chat/auth-bad");
  const expired = await SdkClient.start(t, {
    label: "expired",
    token: mintJwt({ sub: "42", dbo_id: 7, extras }, { ttlSeconds: -600 }),
  });
  const forged = await SdkClient.start(t, {
    label: "forged",
    token: mintJwt({ sub: "42", dbo_id: 7, extras }, { secret: "not-the-app-secret-0123456789abcdef" }),
  });
  for (const c of [expired, forged]) {
    const since = c.mark();
    await c.subscribe(channel, { presence: true });
    // A connection-level error has no options.channel: the SDK hands it to
    // every channel object's onError.
    const err = await c.waitCb(channel, (f) => f.action === "error", { via: "onError", since, what: "Auth token rejected" });
    assert.match(err.payload?.message ?? "", /^Auth token rejected: /, `${c.label}: message`);
    const join = await c.waitAction(channel, "join", () => true, { since });
    assert.deepEqual(join.client.extras, {}, `${c.label}: joined as anonymous`);
    assert.deepEqual(join.client.permissions, { dbo_id: 0, row_id: 0 }, `${c.label}: anonymous permissions`);
  }
  const full = await forged.waitAction(channel, "presence_full", (f) => f.payload?.presence?.length === 2);
  assert.equal(ids(full.payload.presence).length, 2);
});
