// 10. Live reload with SDK clients connected: a broker started on a channels_dir of
//     XanoScript files; a file changes and the broker gets SIGHUP. Nobody is
//     disconnected, the new rule takes effect at once, a revoked member gets
//     "Channel access revoked" and a leave, the others the presence leave; a broken
//     file is refused and the old rules still hold.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SdkClient, mintJwt, JWT_SECRET, HASH, API_KEY, ANON_REFUSED, WAIT_MS } from "./helpers/harness.mjs";
import { startBroker } from "./helpers/broker.mjs";

const rooms = (anonymous) => `// Chat rooms, as a team keeps them in realtime/channel/.
realtime_channel "room:*" {
  description = "Chat room channels"
  active = true
  public_messaging = { active: true, auth: false }
  private_messaging = { active: true, auth: false }
  settings = {
    anonymous_clients: ${anonymous},
    nested_channels: false,
    message_history: 25,
    auth_channel: false,
    presence: true
  }
}
`;

async function until(what, pred) {
  const deadline = Date.now() + WAIT_MS * 2;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("SIGHUP reloads XanoScript rules without dropping SDK clients", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "sb-sdk-reload-"));
  mkdirSync(join(dir, "channels"));
  writeFileSync(join(dir, "channels", "rooms.xs"), rooms(true));
  writeFileSync(
    join(dir, "switchboard.toml"),
    `[server]\nlisten = "127.0.0.1:0"\ndrain_s = 1\n[limits]\nmessages_per_minute = 0\n` +
      `[[apps]]\nname = "Reload"\nhash = "${HASH}"\napi_key = "${API_KEY}"\nchannels_dir = "channels"\n` +
      `[apps.jwt]\nalgorithm = "HS256"\nsecret = "${JWT_SECRET}"\n`,
  );
  const broker = await startBroker("reload broker", join(dir, "switchboard.toml"));
  const { port } = broker;
  t.after(() => {
    broker.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const base = `http://127.0.0.1:${port}`;
  await until("the broker", async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok);
  const metric = async (line) => (await (await fetch(`${base}/metrics`)).text()).includes(line);

  const anon = await SdkClient.start(t, { label: "anon", port });
  const member = await SdkClient.start(t, { label: "member", port, token: mintJwt({ sub: "5", dbo_id: 1 }) });
  const anonJoin = await anon.join("room:1", { presence: true });
  const anonId = anonJoin.client.socketId;
  await member.join("room:1", { presence: true });

  // Anonymous clients are no longer allowed in rooms.
  writeFileSync(join(dir, "channels", "rooms.xs"), rooms(false));
  const since = anon.mark();
  const mSince = member.mark();
  process.kill(broker.child.pid, "SIGHUP");

  const revoked = await anon.waitCb("room:1", (f) => f.action === "error", { via: "onError", since, what: "revocation" });
  assert.equal(revoked.payload.message, "Channel access revoked");
  assert.equal(revoked.options.channel, "room:1");
  await anon.waitAction("room:1", "leave", () => true, { since });
  const left = await member.waitAction(
    "room:1",
    "presence_update",
    (f) => f.payload.action === "leave" && f.payload.presence.socketId === anonId,
    { since: mSince },
  );
  assert.equal(left.payload.presence.socketId, anonId);
  for (const c of [anon, member]) {
    assert.deepEqual(c.events.filter((e) => e.type === "close"), [], `${c.label} was not disconnected`);
  }

  // The new rule decides the next join at once.
  const s2 = anon.mark();
  await anon.subscribe("room:2", { presence: true });
  const refused = await anon.waitCb("room:2", (f) => f.action === "error", { via: "onError", since: s2 });
  assert.equal(refused.payload.message, ANON_REFUSED);

  // A broken file is refused whole: the running rules stay.
  writeFileSync(join(dir, "channels", "rooms.xs"), 'realtime_channel "room:*" {\n  settings = { anonymous_clients: maybe }\n}\n');
  process.kill(broker.child.pid, "SIGHUP");
  await until("the refused reload", () => metric('switchboard_reloads_total{result="refused"} 1'));
  const s3 = member.mark();
  await member.message("room:1", { text: "still here" });
  const echo = await member.waitAction("room:1", "message", (f) => f.payload?.text === "still here", { since: s3 });
  assert.equal(echo.payload.text, "still here");
  const s4 = anon.mark();
  await anon.subscribe("room:3", {});
  const still = await anon.waitCb("room:3", (f) => f.action === "error", { via: "onError", since: s4 });
  assert.equal(still.payload.message, ANON_REFUSED, "the last good rules still hold");
  assert.ok(await metric('switchboard_reloads_total{result="ok"} 1'));
});
