// Test harness: SDK clients in worker_threads (see sdk-worker.mjs for why),
// event waiting with bounded timeouts, JWT minting and the HTTP publish API.

import { Worker } from "node:worker_threads";
import { createHmac, randomBytes } from "node:crypto";

export const PORT = Number(process.env.SWITCHBOARD_PORT);
if (!PORT) {
  throw new Error("SWITCHBOARD_PORT is not set: run the suite through tests/sdk/run.sh");
}
export const BASE_URL = `http://127.0.0.1:${PORT}`;

// Must match tests/sdk/sdk.toml.
export const HASH = "sdktest";
export const API_KEY = "sdk-test-api-key";
export const JWT_SECRET = "sdk-test-secret-0123456789abcdef0123";
export const ANON_REFUSED = "Anonymous clients cannot join this channel.";

/** Default bound on every await; a wait that runs out fails the test. */
export const WAIT_MS = Number(process.env.SDK_TEST_WAIT_MS || 5000);

/** A channel name no other test (or earlier run against the same broker) uses. */
export function uniq(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
}

/** HS256 JWT signed with Node's crypto. */
export function mintJwt(claims, { secret = JWT_SECRET, ttlSeconds = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: "HS256", typ: "JWT" };
  const body = { iat: now, exp: now + ttlSeconds, ...claims };
  const enc = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const signingInput = `${enc(header)}.${enc(body)}`;
  const sig = createHmac("sha256", secret).update(signingInput).digest("base64url");
  return `${signingInput}.${sig}`;
}

/** POST /api/apps/{hash}/events. */
export async function publish(body, { apiKey = API_KEY, hash = HASH } = {}) {
  const res = await fetch(`${BASE_URL}/api/apps/${hash}/events`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  return { status: res.status, body: await res.text() };
}

const short = (v) => {
  const s = JSON.stringify(v);
  return s && s.length > 400 ? `${s.slice(0, 400)}…` : s;
};

let seq = 0;

/**
 * One real SDK client (XanoClient + its realtime singleton) in a worker.
 * `events` records, in order of arrival: every callback the SDK made
 * ({type:"cb", via:"on"|"onError", channel, frame}), and for diagnostics the
 * raw frames ({type:"raw", data}), socket open/close/error, worker errors.
 */
export class SdkClient {
  constructor(label, worker) {
    this.label = label;
    this.worker = worker;
    this.events = [];
    this.waiters = new Set();
    this.replies = new Map();
    this.names = new Map(); // channel-object key -> channel name
    this.closed = false;
    worker.on("message", (msg) => this.#onMessage(msg));
    worker.on("error", (err) => this.#record({ type: "worker-error", message: String(err?.stack || err) }));
    worker.on("exit", (code) => {
      this.closed = true;
      this.#record({ type: "worker-exit", code });
      for (const { reject } of this.replies.values()) reject(new Error(`${label}: worker exited`));
      this.replies.clear();
    });
  }

  /**
   * Start a client; `t` (the node:test context) gets an after-hook that stops it.
   * @param {import("node:test").TestContext | null} t
   * @param {{label?: string, token?: string}} opts
   */
  static async start(t, { label = `client${++seq}`, token, port = PORT } = {}) {
    const worker = new Worker(new URL("./sdk-worker.mjs", import.meta.url), {
      workerData: { port, hash: HASH, token: token ?? null, label },
    });
    const client = new SdkClient(label, worker);
    t?.after(() => client.kill());
    await client.waitFor((e) => e.type === "ready", { what: "worker ready" });
    return client;
  }

  #record(event) {
    this.events.push(event);
    for (const w of [...this.waiters]) {
      if (w.index <= this.events.length - 1 && w.pred(event)) {
        this.waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(event);
      }
    }
  }

  #onMessage(msg) {
    if (msg.type === "reply") {
      const pending = this.replies.get(msg.id);
      if (!pending) return;
      this.replies.delete(msg.id);
      if (msg.ok) pending.resolve(msg.result);
      else pending.reject(new Error(`${this.label}: ${msg.error}`));
      return;
    }
    this.#record(msg);
  }

  /** Index to pass as `since` so that only later events count. */
  mark() {
    return this.events.length;
  }

  /**
   * Resolve with the first event (at index >= since) matching pred; reject
   * after `timeout` ms with the recent history of this client in the message.
   */
  waitFor(pred, { since = 0, timeout = WAIT_MS, what = "event" } = {}) {
    for (let i = since; i < this.events.length; i++) {
      if (pred(this.events[i])) return Promise.resolve(this.events[i]);
    }
    return new Promise((resolve, reject) => {
      const w = { pred, resolve, index: since };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`${this.label}: timed out after ${timeout} ms waiting for ${what}\n${this.dump(since)}`));
      }, timeout);
      this.waiters.add(w);
    });
  }

  /** Wait for an SDK callback (channel.on's onFunc, or onError) on `channel`. */
  async waitCb(channel, predFrame, { via = "on", ...opts } = {}) {
    const ev = await this.waitFor(
      (e) => e.type === "cb" && e.channel === channel && e.via === via && predFrame(e.frame),
      { what: `${via} callback on ${channel}`, ...opts },
    );
    return ev.frame;
  }

  /**
   * Wait for a callback with this action on channel object `channel` (a
   * channel name, or the key given to subscribeAs), whose options.channel is
   * that channel's name.
   */
  waitAction(channel, action, pred = () => true, opts = {}) {
    const name = this.names.get(channel) ?? channel;
    return this.waitCb(channel, (f) => f.action === action && f.options?.channel === name && pred(f), {
      what: `"${action}" frame on ${channel}`,
      ...opts,
    });
  }

  /** SDK callbacks delivered for `channel` (onFunc and onError), from `since`. */
  callbacks(channel, since = 0) {
    return this.events.slice(since).filter((e) => e.type === "cb" && e.channel === channel);
  }

  /** Raw frames received by the socket(s), parsed. */
  rawFrames(since = 0) {
    return this.events
      .slice(since)
      .filter((e) => e.type === "raw" && !e.binary)
      .map((e) => {
        try {
          return JSON.parse(e.data);
        } catch {
          return { unparsable: e.data };
        }
      });
  }

  dump(since = 0, max = 40) {
    const evs = this.events.slice(Math.max(since - 5, 0)).filter((e) => e.type !== "raw");
    const raws = this.events.slice(Math.max(since - 5, 0)).filter((e) => e.type === "raw");
    const lines = evs.slice(-max).map((e) => `  ${e.type}${e.via ? `/${e.via}` : ""}${e.channel ? ` [${e.channel}]` : ""} ${short(e.frame ?? e.message ?? e.code ?? e.reason ?? e.protocol ?? "")}`);
    const rawLines = raws.slice(-max).map((e) => `  raw ${e.data}`);
    return `${this.label} recent SDK events:\n${lines.join("\n")}\n${this.label} recent raw frames:\n${rawLines.join("\n")}`;
  }

  call(cmd, args = {}) {
    if (this.closed) return Promise.reject(new Error(`${this.label}: worker is gone`));
    const id = ++seq;
    return new Promise((resolve, reject) => {
      this.replies.set(id, { resolve, reject });
      this.worker.postMessage({ id, cmd, args });
    });
  }

  /**
   * client.channel(name, options).on(onFunc, onError), then wait for the join
   * acknowledgement; returns that `join` frame (its `client` is this socket).
   */
  async join(channel, options = {}, { timeout } = {}) {
    const since = this.mark();
    await this.call("subscribe", { list: [{ name: channel, options }] });
    return this.waitAction(channel, "join", () => true, { since, timeout });
  }

  /**
   * A further channel object for a channel name this client already has an
   * object for (client.channel(name) called twice), addressed by `key`.
   */
  subscribeAs(key, channel, options = {}) {
    this.names.set(key, channel);
    return this.call("subscribe", { list: [{ name: channel, options, key }] });
  }

  /** Subscribe several channels at once (one socket), wait for every join ack. */
  async joinAll(list) {
    const since = this.mark();
    await this.call("subscribe", { list });
    return Promise.all(list.map(({ name }) => this.waitAction(name, "join", () => true, { since })));
  }

  /** Only create the channel object and its listeners; wait for nothing. */
  subscribe(channel, options = {}) {
    return this.call("subscribe", { list: [{ name: channel, options }] });
  }

  message(channel, payload, options) {
    return this.call("message", { channel, payload, options });
  }

  history(channel) {
    return this.call("history", { channel });
  }

  /** channel.getPresence(), as plain client objects. */
  presence(channel) {
    return this.call("presence", { channel });
  }

  /** getPresence().find(socketId).message(payload) */
  direct(channel, socketId, payload) {
    return this.call("direct", { channel, socketId, payload });
  }

  /** getPresence().find(socketId).history() */
  presenceHistory(channel, socketId) {
    return this.call("presenceHistory", { channel, socketId });
  }

  destroy(channel) {
    return this.call("destroy", { channel });
  }

  reconnect() {
    return this.call("reconnect");
  }

  /** client.setRealtimeAuthToken(token): used by the SDK's next (re)connect. */
  setToken(token) {
    return this.call("setToken", { token });
  }

  /** Terminate the worker: its socket goes away without a close handshake. */
  async kill() {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) clearTimeout(w.timer);
    this.waiters.clear();
    await this.worker.terminate();
  }
}

/** Sorted socketIds of a list of client objects. */
export const ids = (clients) => clients.map((c) => c.socketId).sort();
