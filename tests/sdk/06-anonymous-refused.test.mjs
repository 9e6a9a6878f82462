// 6. An anonymous client refused on members/* gets the error through the
//    onError callback of channel.on(onFunc, onError); the socket stays usable.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SdkClient, uniq, mintJwt, ids, ANON_REFUSED } from "./helpers/harness.mjs";

test("anonymous join of members/* is refused through onError", async (t) => {
  const channel = uniq("members/room");
  const anon = await SdkClient.start(t, { label: "anon" });

  const since = anon.mark();
  await anon.subscribe(channel, { presence: true });
  const err = await anon.waitCb(channel, (f) => f.action === "error", { via: "onError", since, what: "onError callback" });
  assert.equal(err.payload?.message, ANON_REFUSED, "Xano's exact text");
  assert.equal(err.options?.channel, channel, "the error names the channel");
  const wrong = anon.callbacks(channel, since).filter((e) => e.via === "on" && ["join", "presence_full", "error"].includes(e.frame.action));
  assert.deepEqual(wrong.map((e) => e.frame), [], "no join ack / presence, and the error did not go to onFunc");
  assert.equal(anon.events.filter((e) => e.type === "close").length, 0, "the refusal does not close the socket");

  // The same socket can still join a channel that allows anonymous clients.
  const open = uniq("chat/after-refusal");
  const ack = await anon.join(open);
  assert.equal(typeof ack.client?.socketId, "string");

  // An authenticated client may join members/*, and does not see the refused socket.
  const member = await SdkClient.start(t, { label: "member", token: mintJwt({ sub: "7", dbo_id: 1, extras: { plan: "pro" } }) });
  const mSince = member.mark();
  const memberJoin = await member.join(channel, { presence: true });
  const full = await member.waitAction(channel, "presence_full", () => true, { since: mSince });
  assert.deepEqual(ids(full.payload.presence), [memberJoin.client.socketId], "the refused socket is not a member");
  assert.deepEqual(member.callbacks(channel).filter((e) => e.via === "onError").map((e) => e.frame), []);
});
