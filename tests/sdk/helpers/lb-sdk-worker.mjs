// One SDK client in its own worker_thread (see sdk-worker.mjs for why a
// worker), behind a "load balancer": the WebSocket subclass handed to the SDK
// rewrites its `wss://host/rt/<hash>` URL to one of several local broker nodes,
// chosen when each socket is created from a flag shared with the test
// (an Int32Array on a SharedArrayBuffer: the index of the node that takes new
// connections). So a reconnecting SDK lands wherever the test's load balancer
// now points, as it would behind a Kubernetes Service.
//
// It speaks the same messages as sdk-worker.mjs, so helpers/harness.mjs's
// SdkClient drives it; each "socket" event also says which node it went to.

import { parentPort, workerData } from "node:worker_threads";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const WS = require("ws");

const { ports, route, hash, label } = workerData;
const target = new Int32Array(route);

function post(msg) {
  parentPort.postMessage({ ...msg, at: Date.now() });
}

class BalancedWebSocket extends WS {
  constructor(url, protocols, options) {
    const node = Atomics.load(target, 0);
    const original = new URL(url);
    super(`ws://127.0.0.1:${ports[node]}${original.pathname}${original.search}`, protocols, options);
    post({ type: "socket", url: String(url), node, port: ports[node] });
    // Passive observers, as in sdk-worker.mjs; the 'error' listener also keeps
    // ws from throwing (a browser WebSocket never throws there and still fires
    // 'close', which the SDK relies on to reconnect).
    this.on("message", (data, isBinary) => {
      post({ type: "raw", binary: isBinary, node, data: isBinary ? `<${data.length} binary bytes>` : data.toString() });
    });
    this.on("open", () => post({ type: "open", node }));
    this.on("close", (code, reason) => post({ type: "close", node, code, reason: reason.toString() }));
    this.on("error", (err) => post({ type: "socket-error", node, message: String(err && err.message) }));
  }
}
globalThis.WebSocket = BalancedWebSocket;

const { XanoClient, XanoObjectStorage } = require("@xano/js-sdk");

const client = new XanoClient({
  instanceBaseUrl: "https://switchboard.invalid",
  realtimeConnectionCanonical: hash,
  storage: new XanoObjectStorage(),
});

const channels = new Map();
const plain = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)));

function mustChannel(name) {
  const ch = channels.get(name);
  if (!ch) throw new Error(`${label}: no channel object for ${name}`);
  return ch;
}

const commands = {
  subscribe({ list }) {
    const created = [];
    for (const { name, options } of list) {
      if (channels.has(name)) throw new Error(`${label}: already subscribed to ${name}`);
      const ch = client.channel(name, options ?? {});
      channels.set(name, ch);
      created.push([name, ch]);
    }
    for (const [name, ch] of created) {
      ch.on(
        (frame) => post({ type: "cb", via: "on", channel: name, frame: plain(frame) }),
        (frame) => post({ type: "cb", via: "onError", channel: name, frame: plain(frame) }),
      );
    }
    return null;
  },
  message({ channel, payload, options }) {
    mustChannel(channel).message(payload, options ?? {});
    return null;
  },
  presence({ channel }) {
    return mustChannel(channel)
      .getPresence()
      .map(({ channel: _back, ...rest }) => plain(rest));
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
