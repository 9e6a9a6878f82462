// One SDK client, running inside its own worker_thread.
//
// Why a worker: @xano/js-sdk keeps its realtime connection in a module-level
// singleton (XanoRealtimeState._instance, created when realtime-state.js is
// first evaluated), so every XanoClient in one JavaScript realm shares ONE
// socket. A worker_thread is a separate realm with its own module registry and
// its own globalThis, so each worker evaluates the SDK afresh and gets its own
// singleton, its own global WebSocket and its own TCP connection: exactly what
// two browser tabs would have. This needs no change to, and no reaching into,
// the SDK (cache-busting `require.cache` in one realm would also work but is
// fragile: any module the SDK shares would leak state between "clients").
//
// The parent (helpers/harness.mjs) drives this worker with commands and
// receives, as messages, everything the SDK hands to the application through
// channel.on(onFunc, onError), plus a passive copy of the raw frames for
// diagnostics.

import { parentPort, workerData } from "node:worker_threads";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const WS = require("ws");

// `port`: the broker. Or `ports` + `route` for a "load balancer" over several nodes:
// `route` is a SharedArrayBuffer whose Int32 is the index of the node that takes new
// connections, read when each socket is created, so a reconnecting SDK lands wherever
// the test's balancer points now (as behind a Kubernetes Service). Socket events say
// which node they belong to.
const { port, ports = [port], route, hash, token, label } = workerData;
const target = route ? new Int32Array(route) : null;

function post(msg) {
  parentPort.postMessage({ ...msg, at: Date.now() });
}

// The SDK builds `wss://<hostname of instanceBaseUrl>/rt/<hash>` and calls the
// global `WebSocket`. Node 20 has no global WebSocket, so we hand it the `ws`
// package's class through a subclass whose only behavioural change is the URL:
// it points at the local broker over plain ws://. The listeners added below are
// passive (they observe, they never alter what the SDK sees), except that the
// 'error' listener also keeps ws's EventEmitter from throwing on an unhandled
// 'error' event: a browser WebSocket never throws there and still fires
// 'close' afterwards, which the SDK relies on to reconnect.
class RewritingWebSocket extends WS {
  constructor(url, protocols, options) {
    const node = target ? Atomics.load(target, 0) : 0;
    const original = new URL(url);
    super(`ws://127.0.0.1:${ports[node]}${original.pathname}${original.search}`, protocols, options);
    post({ type: "socket", node, port: ports[node], url: String(url), protocols: protocols ?? null });
    this.on("message", (data, isBinary) => {
      post({ type: "raw", node, binary: isBinary, data: isBinary ? `<${data.length} binary bytes>` : data.toString() });
    });
    this.on("open", () => post({ type: "open", node, protocol: this.protocol }));
    this.on("close", (code, reason) => post({ type: "close", node, code, reason: reason.toString() }));
    this.on("error", (err) => post({ type: "socket-error", node, message: String(err && err.message) }));
  }
}
globalThis.WebSocket = RewritingWebSocket;

// Loaded after globalThis.WebSocket is set (the SDK reads it lazily anyway).
const { XanoClient, XanoObjectStorage } = require("@xano/js-sdk");

const client = new XanoClient({
  // Only the hostname is used by the SDK (and then rewritten above).
  instanceBaseUrl: "https://switchboard.invalid",
  realtimeConnectionCanonical: hash,
  // XanoClient defaults to localStorage, which Node lacks.
  storage: new XanoObjectStorage(),
});
if (token) {
  client.setRealtimeAuthToken(token);
}

/**
 * key -> XanoRealtimeChannel. The key is the channel name, unless a test
 * creates a second channel object for the same name (apps do: two components
 * subscribing to one channel); then it names that object.
 * @type {Map<string, any>}
 */
const channels = new Map();

function plain(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

function listen(name, ch) {
  ch.on(
    (frame) => post({ type: "cb", via: "on", channel: name, frame: plain(frame) }),
    (frame) => post({ type: "cb", via: "onError", channel: name, frame: plain(frame) }),
  );
}

function presenceEntries(key) {
  const ch = mustChannel(key);
  return ch.getPresence().map((entry) => {
    // XanoRealtimeClient = the wire `client` object + a back-reference to the channel.
    const { channel, ...rest } = entry;
    return plain(rest);
  });
}

function mustChannel(key) {
  const ch = channels.get(key);
  if (!ch) throw new Error(`${label}: no channel object for ${key}`);
  return ch;
}

const commands = {
  // Create every channel object first, then attach the listeners. The first
  // .on() makes the SDK open the socket; every channel object then sends its
  // join when the SDK announces "connected". (Creating a channel object while
  // the socket is still CONNECTING would make the SDK call send() too early:
  // the tests only create later channels once the socket is open.)
  subscribe({ list }) {
    const created = [];
    for (const { name, options, key = name } of list) {
      if (channels.has(key)) throw new Error(`${label}: already subscribed as ${key}`);
      const ch = client.channel(name, options ?? {});
      channels.set(key, ch);
      created.push([key, ch]);
    }
    for (const [key, ch] of created) listen(key, ch);
    return null;
  },
  message({ channel, payload, options }) {
    mustChannel(channel).message(payload, options ?? {});
    return null;
  },
  history({ channel }) {
    mustChannel(channel).history();
    return null;
  },
  presence({ channel }) {
    return presenceEntries(channel);
  },
  // A direct message the way an app sends one: through the XanoRealtimeClient
  // object that channel.getPresence() returned.
  direct({ channel, socketId, payload }) {
    const target = mustChannel(channel)
      .getPresence()
      .find((entry) => entry.socketId === socketId);
    if (!target) throw new Error(`${label}: ${socketId} is not in getPresence() of ${channel}`);
    target.message(payload);
    return null;
  },
  // XanoRealtimeClient.history(): a `history` frame carrying options.socketId.
  presenceHistory({ channel, socketId }) {
    const target = mustChannel(channel)
      .getPresence()
      .find((entry) => entry.socketId === socketId);
    if (!target) throw new Error(`${label}: ${socketId} is not in getPresence() of ${channel}`);
    target.history();
    return null;
  },
  destroy({ channel }) {
    mustChannel(channel).destroy();
    channels.delete(channel);
    return null;
  },
  reconnect() {
    client.realtimeReconnect();
    return null;
  },
  // What an app does when its backend hands it a fresh token.
  setToken({ token }) {
    client.setRealtimeAuthToken(token);
    return null;
  },
};

parentPort.on("message", ({ id, cmd, args }) => {
  try {
    const fn = commands[cmd];
    if (!fn) throw new Error(`unknown command ${cmd}`);
    post({ type: "reply", id, ok: true, result: fn(args ?? {}) });
  } catch (err) {
    post({ type: "reply", id, ok: false, error: String((err && err.stack) || err) });
  }
});

process.on("uncaughtException", (err) => {
  post({ type: "worker-error", message: String((err && err.stack) || err) });
});

post({ type: "ready" });
