// One real @xano/js-sdk client for the randomized fault run (chaos/): joins one
// channel with presence, sends numbered messages through the SDK, and lets the SDK
// reconnect on its own (each new socket goes to the next broker, as behind a load
// balancer). It writes what happened as JSON lines on stdout, with wall-clock
// times (ms), for chaos/src/sdk.rs to turn into the checker's log:
//   {"t":"session","socket":S,"ms":…}     a join ack: a new session began
//   {"t":"closed","ms":…}                 the socket closed: the session ended
//   {"t":"sending","n":N,"ms":…}          written just before the SDK sends message N
//   {"t":"recv","c":C,"n":N}              a message of client C, number N
//   {"t":"barrier","tag":T}               a barrier message
// stdin takes "quiet" (stop sending), "barrier <tag>" (send a barrier message) and
// "done" (exit).
//
//   node chaos-client.mjs <ports,comma-separated> <app hash> <channel> <client id> <every ms>

import { createRequire } from "node:module";
import readline from "node:readline";

const require = createRequire(import.meta.url);
const WS = require("ws");

const [portList, hash, channelName, idText, everyText] = process.argv.slice(2);
const ports = portList.split(",").map(Number);
const id = Number(idText);
const every = Number(everyText);
let next = id;

function out(line) {
  process.stdout.write(JSON.stringify({ ...line }) + "\n");
}

// The SDK opens `wss://<host>/rt/<hash>`; each socket goes to the next broker.
class RoundRobinWebSocket extends WS {
  constructor(url, protocols, options) {
    const port = ports[next++ % ports.length];
    const original = new URL(url);
    super(`ws://127.0.0.1:${port}${original.pathname}`, protocols, options);
    this.on("message", (data) => observe(data.toString()));
    this.on("close", () => {
      if (open) out({ t: "closed", ms: Date.now() });
      open = false;
    });
    // A browser WebSocket never throws on 'error'; it fires 'close' next.
    this.on("error", () => {});
  }
}
globalThis.WebSocket = RoundRobinWebSocket;

const { XanoClient, XanoObjectStorage } = require("@xano/js-sdk");

let open = false;
let sending = true;
let n = 0;

function observe(text) {
  let f;
  try {
    f = JSON.parse(text);
  } catch {
    return;
  }
  if (f.action === "join" && f.options?.channel === channelName && f.client?.socketId) {
    open = true;
    out({ t: "session", socket: f.client.socketId, ms: Date.now() });
  } else if (f.action === "message" && open) {
    const p = f.payload ?? {};
    if (typeof p.barrier === "string") out({ t: "barrier", tag: p.barrier });
    else if (Number.isInteger(p.c) && Number.isInteger(p.n)) out({ t: "recv", c: p.c, n: p.n });
  }
}

const client = new XanoClient({
  instanceBaseUrl: "https://switchboard.invalid",
  realtimeConnectionCanonical: hash,
  storage: new XanoObjectStorage(),
});
const channel = client.channel(channelName, { presence: true });
channel.on(
  () => {},
  () => {},
);

function tick() {
  if (sending && open) {
    out({ t: "sending", n, ms: Date.now() });
    channel.message({ c: id, n });
    n += 1;
  }
  setTimeout(tick, every + Math.floor(Math.random() * every * 2));
}
setTimeout(tick, every);

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "quiet") sending = false;
  if (line.startsWith("barrier ")) channel.message({ barrier: line.slice("barrier ".length) });
  if (line === "done") process.exit(0);
});
