// 11. A session lasts as long as its token (expired_token = "reconnect", the
//     default): at `exp` (plus the 5 s leeway a connect gets) the server closes the
//     socket with 4000, and the stock SDK reconnects with whatever token it holds.
//     A client still holding the expired token comes back anonymous and is refused
//     from members/*; one whose app called setRealtimeAuthToken with a fresh token
//     before `exp` comes back authenticated as the same user.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, mintJwt, ANON_REFUSED } from "./helpers/harness.mjs";

const RECONNECT_WAIT = 10_000; // the session ends in ~2 s, the SDK waits 1 s to reconnect

// exp 3 s ago: still accepted at connect (5 s leeway), so the session ends in ~2 s.
const expiring = (sub) => mintJwt({ sub, dbo_id: 1 }, { ttlSeconds: -3 });

test("an expired session reconnects anonymous and is refused from members/*", async (t) => {
  const channel = uniq("members/expiry");
  const alice = await SdkClient.start(t, { label: "alice(expiring)", token: expiring("42") });
  const since = alice.mark();
  const join = await alice.join(channel);
  assert.equal(String(join.client.permissions.row_id), "42", "authenticated at first");

  const closed = await alice.waitFor((e) => e.type === "close", { since, timeout: RECONNECT_WAIT, what: "the 4000 close" });
  assert.equal(closed.code, 4000, "closed with 4000 at exp, so the SDK reconnects");
  // The SDK reconnects with the same (now expired) token: anonymous, told why, refused.
  const rejected = await alice.waitFor(
    (e) => e.type === "raw" && e.data.includes("Auth token rejected: token expired"),
    { since, timeout: RECONNECT_WAIT, what: "the rejection of the expired token" },
  );
  assert.ok(rejected);
  const refused = await alice.waitCb(channel, (f) => f.action === "error" && f.payload?.message === ANON_REFUSED, {
    via: "onError",
    since,
    timeout: RECONNECT_WAIT,
    what: "the refused re-join",
  });
  assert.equal(refused.options?.channel, channel, "the re-join of members/* is refused");
});

test("a token refreshed before exp keeps the user authenticated across the 4000", async (t) => {
  const channel = uniq("members/refresh");
  const bob = await SdkClient.start(t, { label: "bob(refreshed)", token: expiring("7") });
  const since = bob.mark();
  const first = await bob.join(channel);
  assert.equal(String(first.client.permissions.row_id), "7");
  await bob.setToken(mintJwt({ sub: "7", dbo_id: 1 }, { ttlSeconds: 3600 }));

  const closed = await bob.waitFor((e) => e.type === "close", { since, timeout: RECONNECT_WAIT, what: "the 4000 close" });
  assert.equal(closed.code, 4000);
  const again = await bob.waitAction(channel, "join", (f) => f.client?.socketId !== first.client.socketId, {
    since,
    timeout: RECONNECT_WAIT,
  });
  assert.equal(String(again.client.permissions.row_id), "7", "the new socket is bob again");
  const errors = bob.callbacks(channel, since).filter((e) => e.via === "onError" || e.frame.action === "error");
  assert.deepEqual(errors.map((e) => e.frame), [], "no refusal");
});
