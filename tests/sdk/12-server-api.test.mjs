// 12. The server API acts on real SDK clients (docs/protocol.md section 10):
//     `disconnect` closes with 4401 and the stock SDK stays away; with
//     `reconnect: true` it closes with 4000 and the SDK comes back with its token;
//     `unsubscribe` reaches the SDK's channel object as `Channel access revoked`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, mintJwt, BASE_URL, HASH, API_KEY, WAIT_MS } from "./helpers/harness.mjs";

const RECONNECT_WAIT = 10_000; // the SDK waits about 1 s before reconnecting
// No event tells that something did not happen: three of the SDK's reconnect delays.
const STAYS_AWAY_MS = 3_000;

async function api(path, body) {
  const res = await fetch(`${BASE_URL}/api/apps/${HASH}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  return { status: res.status, body: await res.json() };
}

test("disconnect closes every socket of a user with 4401 and the SDK does not come back", async (t) => {
  const channel = uniq("members/banned");
  const user = String(Date.now());
  const tab1 = await SdkClient.start(t, { label: "tab1", token: mintJwt({ sub: user, dbo_id: 1 }) });
  const tab2 = await SdkClient.start(t, { label: "tab2", token: mintJwt({ sub: user, dbo_id: 1 }) });
  await tab1.join(channel);
  await tab2.join(channel);
  const since = [tab1.mark(), tab2.mark()];

  const res = await api("/disconnect", { auth_id: user });
  assert.deepEqual(res, { status: 200, body: { disconnected: 2 } });
  for (const [i, tab] of [tab1, tab2].entries()) {
    const closed = await tab.waitFor((e) => e.type === "close", { since: since[i], what: "the close" });
    assert.equal(closed.code, 4401, `${tab.label}: 4401, which the SDK does not reconnect on`);
  }
  const reopened = await tab1
    .waitFor((e) => e.type === "open", { since: since[0], timeout: STAYS_AWAY_MS, what: "a reconnect" })
    .then(() => true, () => false);
  assert.equal(reopened, false, "the SDK stayed away after 4401");
});

test("disconnect with reconnect closes with 4000 and the SDK comes back as the same user", async (t) => {
  const channel = uniq("members/kicked");
  const user = String(Date.now() + 1);
  const alice = await SdkClient.start(t, { label: "alice", token: mintJwt({ sub: user, dbo_id: 1 }) });
  const first = await alice.join(channel);
  const since = alice.mark();

  const res = await api("/disconnect", { socket_id: first.client.socketId, reconnect: true });
  assert.deepEqual(res, { status: 200, body: { disconnected: 1 } });
  const closed = await alice.waitFor((e) => e.type === "close", { since, what: "the close" });
  assert.equal(closed.code, 4000);
  const again = await alice.waitAction(channel, "join", (f) => f.client?.socketId !== first.client.socketId, {
    since,
    timeout: RECONNECT_WAIT,
  });
  assert.equal(String(again.client.permissions.row_id), user, "back with its token, re-joined");
});

test("unsubscribe tells the SDK's channel its access was revoked", async (t) => {
  const channel = uniq("chat/moderated");
  const alice = await SdkClient.start(t, { label: "alice" });
  const bob = await SdkClient.start(t, { label: "bob" });
  const joined = await alice.join(channel);
  await bob.join(channel);
  const since = alice.mark();
  const bSince = bob.mark();

  const res = await api("/unsubscribe", { channel, socket_id: joined.client.socketId });
  assert.deepEqual(res, { status: 200, body: { unsubscribed: 1 } });
  const revoked = await alice.waitCb(channel, (f) => f.action === "error", { via: "onError", since });
  assert.equal(revoked.payload?.message, "Channel access revoked");
  assert.equal(revoked.options?.channel, channel);

  // Bob's messages no longer reach alice; bob still gets his own echo.
  await bob.message(channel, { text: "after" });
  await bob.waitAction(channel, "message", (f) => f.payload?.text === "after", { since: bSince });
  const leaked = alice.callbacks(channel, since).filter((e) => e.frame.action === "message");
  assert.deepEqual(leaked, [], "nothing after the revocation");
});
