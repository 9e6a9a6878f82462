// 9. Rollout drill: two broker nodes sharing one Redis (their own, not the
//    suite's broker), SDK clients behind a load balancer. SIGTERM to node A:
//    every client on A gets close 1012, the SDK reconnects by itself, lands on
//    node B (the balancer no longer sends new connections to A) and re-joins
//    its channel; every message sent after the reconnect, by the moved clients
//    and by a listener that was on B all along, reaches every member exactly
//    once; A exits 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer, connect } from "node:net";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { SdkClient, HASH, uniq, ids } from "./helpers/harness.mjs";
import { startBroker } from "./helpers/broker.mjs";

const CONFIG = fileURLToPath(new URL("./sdk.toml", import.meta.url));
const DRAIN_S = 2;
const ON_A = 3; // clients that start on node A and must move
const PER_SENDER = 5; // messages each member sends after the reconnect
const STEP_MS = 15_000; // bound on each wait of the drill (above presence_ttl_s, 10 s)
// Known bug, reported: a draining node removes a socket's membership from Redis
// (member_left) and only then publishes its presence `leave`; when that socket
// is the last one, the node can exit in between, so the leave is never sent and
// the sweep finds nothing to announce (about 1 run in 8 here). While it stands,
// this check is reported as TODO instead of failing the suite; set to false
// once fixed.
const PRESENCE_TODO = false;

const redisMissing = (() => {
  const r = spawnSync("redis-server", ["--version"], { stdio: "ignore" });
  return r.error ? "redis-server is not installed (apt-get install redis-server; CI installs it): the rollout drill needs a Redis" : false;
})();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A deadline for Promise.race that does not keep the process alive once the race is won. */
const deadline = (ms) => new Promise((r) => setTimeout(r, ms).unref()).then(() => null);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A child process whose output is kept for diagnostics and whose exit is a promise. */
function start(name, cmd, args, env = {}) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const proc = { name, child, log: [], exited: null };
  const keep = (chunk) => {
    proc.log.push(...chunk.toString().split("\n").filter(Boolean));
    if (proc.log.length > 400) proc.log.splice(0, proc.log.length - 400);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  proc.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  proc.running = () => child.exitCode === null && child.signalCode === null;
  proc.tail = (n = 40) => `--- ${name} (last ${n} log lines) ---\n${proc.log.slice(-n).join("\n")}`;
  return proc;
}

async function stop(proc, signal = "SIGTERM", graceMs = 5000) {
  if (!proc || !proc.running()) return;
  proc.child.kill(signal);
  const done = await Promise.race([proc.exited, deadline(graceMs)]);
  if (!done && proc.running()) {
    proc.child.kill("SIGKILL");
    await proc.exited;
  }
}

function redisPing(port) {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    let buf = "";
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(500, () => done(false));
    sock.on("error", () => done(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => { buf += d; if (buf.includes("+PONG")) done(true); });
  });
}

async function until(what, probe, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (await probe()) return;
    await sleep(50);
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
}

async function httpStatus(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    return res.status;
  } catch {
    return null;
  }
}

test("rollout drill: SIGTERM to one of two nodes moves its SDK clients to the other, losing nothing", {
  skip: redisMissing,
  timeout: 120_000,
}, async (t) => {
  const procs = [];
  const clients = [];
  t.after(async () => {
    await Promise.all(clients.map((c) => c.kill()));
    for (const p of [...procs].reverse()) await stop(p);
  });

  // --- Redis and two nodes ---
  // redis-server cannot report a port it picked itself: pick one, and pick
  // again if something else took it before redis-server bound it.
  let redis;
  let redisPort;
  for (let attempt = 1; !redis; attempt++) {
    redisPort = await freePort();
    const r = start("redis-server", "redis-server", [
      "--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmpdir(),
    ]);
    procs.push(r);
    try {
      await until("redis-server to answer PING", async () => {
        if (!r.running()) throw new Error(`redis-server exited\n${r.tail()}`);
        // Its own log line, so a PONG from someone else's server on that port does not count.
        return r.log.some((l) => l.includes("Ready to accept connections")) && redisPing(redisPort);
      }, 10_000);
      redis = r;
    } catch (err) {
      await stop(r, "SIGKILL");
      if (attempt >= 5) throw err;
    }
  }

  // Each node binds port 0 and says which port it got (helpers/broker.mjs).
  const nodes = [];
  for (const name of ["node A", "node B"]) {
    const node = await startBroker(name, CONFIG, {
      env: {
        SWITCHBOARD__SERVER__DRAIN_S: String(DRAIN_S),
        SWITCHBOARD__CLUSTER__REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      },
    });
    procs.push(node);
    nodes.push(node);
  }
  const ports = nodes.map((n) => n.port);
  const [A, B] = nodes;
  const diagnostics = () => [A, B, redis].map((p) => p.tail()).join("\n");

  try {
    for (const [i, port] of ports.entries()) {
      await until(`node ${"AB"[i]} /readyz`, async () => {
        assert.ok(nodes[i].running(), `${nodes[i].name} exited before it was ready`);
        return (await httpStatus(`http://127.0.0.1:${port}/readyz`)) === 200;
      });
    }
    assert.notEqual(ports[0], ports[1], "the two nodes listen on different ports");

    // --- the load balancer: one shared flag, the node that takes new sockets ---
    const route = new SharedArrayBuffer(4);
    const routeTo = (i) => Atomics.store(new Int32Array(route), 0, i);
    async function startClient(label) {
      const worker = new Worker(new URL("./helpers/sdk-worker.mjs", import.meta.url), {
        workerData: { ports, route, hash: HASH, label },
      });
      const client = new SdkClient(label, worker);
      clients.push(client);
      await client.waitFor((e) => e.type === "ready", { what: "worker ready" });
      return client;
    }
    const socketNode = (client, since) => client.events.slice(since).filter((e) => e.type === "socket").map((e) => e.node);

    const room = uniq("chat/rollout");
    const opts = { presence: true };

    routeTo(1);
    const listener = await startClient("listener@B");
    const listenerId = (await listener.join(room, opts)).client.socketId;
    routeTo(0);
    const movers = [];
    const oldIds = [];
    for (let i = 1; i <= ON_A; i++) {
      const c = await startClient(`client${i}@A`);
      oldIds.push((await c.join(room, opts)).client.socketId);
      movers.push(c);
    }
    for (const c of movers) assert.deepEqual(socketNode(c, 0), [0], `${c.label} connected to node A`);
    assert.deepEqual(socketNode(listener, 0), [1], "the listener connected to node B");

    // Baseline: presence across nodes, and a message from A reaches B.
    await until("the listener to see every member", async () =>
      JSON.stringify(ids(await listener.presence(room))) === JSON.stringify([listenerId, ...oldIds].sort()));
    const l0 = listener.mark();
    await movers[0].message(room, { before: true });
    await listener.waitAction(room, "message", (f) => f.payload?.before === true, { since: l0, timeout: STEP_MS });

    // --- the drill ---
    const since = new Map([...movers, listener].map((c) => [c, c.mark()]));
    routeTo(1); // the balancer stops sending new connections to A (as a preStop hook gives it time to)
    const termAt = Date.now();
    A.child.kill("SIGTERM");
    // A stops being ready at once (the signal takes a moment to arrive); null: already gone.
    let readyA;
    await until("A's /readyz to fail", async () => {
      readyA = await httpStatus(`http://127.0.0.1:${ports[0]}/readyz`);
      return readyA !== 200;
    }, 2000);
    assert.ok(readyA === 503 || readyA === null, `A's /readyz while draining: ${readyA}`);

    // Every client on A is closed with 1012 (within the drain window) ...
    const closes = await Promise.all(movers.map((c) =>
      c.waitFor((e) => e.type === "close", { since: since.get(c), timeout: (DRAIN_S + 5) * 1000, what: "close of the socket on A" })));
    for (const [i, close] of closes.entries()) {
      assert.equal(close.code, 1012, `${movers[i].label}: close code ${close.code}, expected 1012 (service restart)`);
      assert.equal(close.node, 0);
      assert.ok(close.at - termAt <= (DRAIN_S + 2) * 1000, `${movers[i].label} closed ${close.at - termAt} ms after SIGTERM`);
    }
    // ... and the SDK reconnects on its own, to B, and re-joins the channel with a new socket.
    const newIds = [];
    for (const [i, c] of movers.entries()) {
      const join = await c.waitAction(room, "join", (f) => f.client?.socketId && f.client.socketId !== oldIds[i], {
        since: since.get(c),
        timeout: STEP_MS,
      });
      newIds.push(join.client.socketId);
      const opened = c.events.slice(since.get(c)).filter((e) => e.type === "open").map((e) => e.node);
      assert.deepEqual(opened, [1], `${c.label}: the SDK's new socket opened on node B (and only there)`);
    }
    for (const [i, c] of movers.entries()) {
      await c.waitAction(room, "presence_full", (f) => ids(f.payload?.presence ?? []).includes(newIds[i]), { since: since.get(c) });
    }

    // A finished its drain and exited 0.
    const exit = await Promise.race([A.exited, deadline((DRAIN_S + 8) * 1000)]);
    assert.ok(exit, `node A still running ${Date.now() - termAt} ms after SIGTERM`);
    assert.deepEqual(exit, { code: 0, signal: null }, "node A's exit");

    // --- after the reconnect: every message reaches every member exactly once ---
    const members = [...movers, listener];
    const drill = uniq("after");
    const after = new Map(members.map((c) => [c, c.mark()]));
    const expected = [];
    for (let n = 0; n < PER_SENDER; n++) {
      for (const c of members) {
        expected.push(`${c.label}#${n}`);
        await c.message(room, { drill, from: c.label, n });
      }
    }
    expected.sort();
    const received = (c) => c.callbacks(room, after.get(c))
      .filter((e) => e.via === "on" && e.frame.action === "message" && e.frame.payload?.drill === drill)
      .map((e) => `${e.frame.payload.from}#${e.frame.payload.n}`);
    await until("every member to receive every message", async () => members.every((c) => received(c).length >= expected.length));
    await sleep(300); // room for a duplicate to show up
    for (const c of members) {
      assert.deepEqual(received(c).sort(), expected, `${c.label}: the exact set of messages sent after the reconnect`);
      const errors = c.callbacks(room, after.get(c)).filter((e) => e.via === "onError");
      assert.deepEqual(errors.map((e) => e.frame.payload), [], `${c.label}: no error frames after the reconnect`);
    }
    // Each moved client opened exactly one new socket, on B, and none went back to A.
    for (const c of movers) assert.deepEqual(socketNode(c, since.get(c)), [1], `${c.label}: one new socket, on B`);

    // Presence converges on the listener: every old socket left, every new one joined.
    await t.test("presence converges after the move (the listener sees each old socket leave)", { todo: PRESENCE_TODO }, async () => {
      let seen = [];
      const want = [listenerId, ...newIds].sort();
      await until("presence to converge after the move", async () => {
        seen = ids(await listener.presence(room));
        return JSON.stringify(seen) === JSON.stringify(want);
      }).catch((err) => {
        throw new Error(`${err.message}: the listener's getPresence() is ${JSON.stringify(seen)}, ` +
          `expected ${JSON.stringify(want)} (old sockets ${JSON.stringify(oldIds)})`);
      });
    });
  } catch (err) {
    process.stderr.write(`${diagnostics()}\n${clients.map((c) => c.dump(0, 80)).join("\n")}\n`);
    throw err;
  }
});
