// Load for scripts/soak.sh: steady publishers and, in waves, clients that connect,
// join, chat, leave and disconnect; plus backend events over HTTP. Not a test by
// itself: soak.sh samples the broker(s) and decides. Uses the `ws` package that
// tests/sdk installs (run `npm ci` in tests/sdk once).
//
// Environment (soak.sh sets all of them):
//   SOAK_URLS       comma-separated ws://host:port/rt/<hash> (one per node)
//   SOAK_HTTP       comma-separated http://host:port (one per node)
//   SOAK_APP, SOAK_API_KEY
//   SOAK_SECONDS    how long the waves go on
//   SOAK_WAVE_S     one wave every this many seconds (clients arrive in the first
//                   fifth, all are gone before the last sixth: then it is quiet)
//   SOAK_WAVE_CLIENTS, SOAK_STEADY (steady channels), SOAK_STEADY_MS (publish period)
//   SOAK_STATUS     file this appends "baseline", "quiet <n>" and "done" lines to
//   SOAK_ACK        file soak.sh appends a line to when it has sampled after a status
//                   line: the generator stays quiet until then (at most 30 s)
//
// On SIGTERM (or SIGINT) it closes the steady clients, prints one JSON line of
// statistics to stdout and exits: 0, or 1 when a steady subscriber missed a message
// its publisher had got back (accepted).

import { createRequire } from 'node:module';
import { appendFileSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'tests', 'sdk', 'package.json'));
const WebSocket = require('ws');

const env = (k, d) => process.env[k] ?? d;
const URLS = env('SOAK_URLS').split(',');
const HTTP = env('SOAK_HTTP').split(',');
const APP = env('SOAK_APP', 'soak');
const API_KEY = env('SOAK_API_KEY');
const SECONDS = Number(env('SOAK_SECONDS', '3600'));
const WAVE_S = Number(env('SOAK_WAVE_S', '30'));
const WAVE_CLIENTS = Number(env('SOAK_WAVE_CLIENTS', '200'));
const STEADY = Number(env('SOAK_STEADY', '8'));
const STEADY_MS = Number(env('SOAK_STEADY_MS', '100'));
const STATUS = env('SOAK_STATUS');
const ACK = env('SOAK_ACK');
const ROOMS = 40; // shared rooms, reused by every wave

const stats = {
  connects: 0,
  connect_errors: 0,
  closes: {}, // close code (as the client saw it) -> count
  client_messages_sent: 0,
  frames_received: 0,
  errors_received: {},
  events_posted: 0,
  event_statuses: {},
  waves: 0,
  steady: { sent: 0, echoed: 0, received: 0, missing: 0, duplicates: 0, out_of_order: 0 },
};
const bump = (obj, key, n = 1) => { obj[key] = (obj[key] ?? 0) + n; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let statusLines = 0;
/// Append a status line, then wait until soak.sh has sampled (acknowledged it).
async function status(line) {
  if (!STATUS) return;
  appendFileSync(STATUS, `${line} ${Date.now()}\n`);
  statusLines++;
  if (!ACK) return;
  const until = Date.now() + 30000;
  while (Date.now() < until) {
    let acked = 0;
    try { acked = readFileSync(ACK, 'utf8').split('\n').filter(Boolean).length; } catch { /* not yet */ }
    if (acked >= statusLines) return;
    await sleep(100);
  }
}
const pick = (a) => a[Math.floor(Math.random() * a.length)];
const rand = (lo, hi) => lo + Math.random() * (hi - lo);

function frame(action, channel, payload = null, extra = {}) {
  return JSON.stringify({ action, options: { channel, ...extra }, payload });
}

/// Open a socket; resolves when open (or null on error).
function open(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    let done = false;
    ws.on('open', () => { done = true; stats.connects++; resolve(ws); });
    ws.on('error', () => { if (!done) { done = true; stats.connect_errors++; resolve(null); } });
    ws.on('close', (code) => bump(stats.closes, String(code)));
    ws.on('message', (data) => {
      stats.frames_received++;
      const text = data.toString();
      if (text.startsWith('{"action":"error"')) {
        try { bump(stats.errors_received, JSON.parse(text).payload.message.split(':')[0]); } catch { /* ignore */ }
      }
    });
  });
}

// ---------------------------------------------------------------------------
// Steady channels: a publisher and a subscriber (on another node when there are
// two), a message every SOAK_STEADY_MS; the subscriber checks every accepted one.

const steady = [];

async function startSteady() {
  for (let k = 0; k < STEADY; k++) {
    const channel = `soak/steady-${k}`;
    const pub = await open(URLS[k % URLS.length]);
    const sub = await open(URLS[(k + 1) % URLS.length]);
    if (!pub || !sub) throw new Error('steady clients could not connect');
    const s = { channel, pub, sub, next: 0, echoed: new Set(), got: new Set(), last: -1, timer: null };
    sub.on('message', (data) => {
      const f = JSON.parse(data.toString());
      if (f.action !== 'message' || f.payload?.steady !== k) return;
      const i = f.payload.i;
      if (s.got.has(i)) stats.steady.duplicates++;
      if (i < s.last) stats.steady.out_of_order++;
      s.last = Math.max(s.last, i);
      s.got.add(i);
      stats.steady.received++;
    });
    pub.on('message', (data) => {
      const f = JSON.parse(data.toString());
      if (f.action === 'message' && f.payload?.steady === k) { s.echoed.add(f.payload.i); stats.steady.echoed++; }
    });
    const acked = (ws) => new Promise((resolve) => {
      const on = (data) => { const f = JSON.parse(data.toString()); if (f.action === 'join') { ws.off('message', on); resolve(); } };
      ws.on('message', on);
    });
    const a1 = acked(sub); sub.send(frame('join', channel, { presence: true })); await a1;
    const a2 = acked(pub); pub.send(frame('join', channel, { presence: true })); await a2;
    s.timer = setInterval(() => {
      if (pub.readyState !== WebSocket.OPEN) return;
      pub.send(frame('message', channel, { steady: k, i: s.next++ }));
      stats.steady.sent++;
    }, STEADY_MS);
    steady.push(s);
  }
}

// ---------------------------------------------------------------------------
// Waves

async function waveClient(wave, n, lifetimeMs) {
  const ws = await open(pick(URLS));
  if (!ws) return;
  const joined = new Set();
  const join = (channel) => { ws.send(frame('join', channel, { history: Math.random() < 0.3, presence: Math.random() < 0.5 })); joined.add(channel); };
  join(`soak/room-${Math.floor(Math.random() * ROOMS)}`);
  join(`soak/w${wave}-${n % 25}`); // lives only as long as this wave
  if (Math.random() < 0.5) join(`soak/room-${Math.floor(Math.random() * ROOMS)}`);
  const until = Date.now() + lifetimeMs;
  while (Date.now() < until && ws.readyState === WebSocket.OPEN) {
    await sleep(rand(500, 2500));
    if (ws.readyState !== WebSocket.OPEN) break;
    const r = Math.random();
    const channels = [...joined];
    if (r < 0.7 && channels.length) {
      ws.send(frame('message', pick(channels), { wave, n, text: 'x'.repeat(Math.floor(rand(10, 400))) }));
      stats.client_messages_sent++;
    } else if (r < 0.85 && channels.length > 1) {
      const c = pick(channels);
      ws.send(frame('leave', c));
      joined.delete(c);
    } else {
      join(`soak/room-${Math.floor(Math.random() * ROOMS)}`);
    }
  }
  const how = Math.random();
  if (how < 0.7) {
    ws.close(1000);
  } else if (how < 0.9) {
    ws.terminate(); // the TCP connection ends without a close frame
  } else {
    ws._socket?.pause(); // stops reading for a while, then vanishes
    await sleep(2000);
    ws.terminate();
  }
  await new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.once('close', resolve);
    setTimeout(resolve, 5000);
  });
}

async function wave(w) {
  const started = Date.now();
  const clients = [];
  for (let n = 0; n < WAVE_CLIENTS; n++) {
    const delay = rand(0, WAVE_S * 1000 * 0.2);
    const life = rand(WAVE_S * 1000 * 0.15, WAVE_S * 1000 * 0.5);
    clients.push(sleep(delay).then(() => waveClient(w, n, life)));
  }
  await Promise.all(clients);
  stats.waves++;
  // Quiet until the end of the wave's period (at least 2 s for the broker to settle).
  const left = started + WAVE_S * 1000 - Date.now();
  await sleep(Math.max(2000, left));
  await status(`quiet ${w}`);
}

// ---------------------------------------------------------------------------
// Backend events: every second, one to a room and one to every wave channel.

let eventTimer = null;
function startEvents() {
  let k = 0;
  eventTimer = setInterval(async () => {
    const body = JSON.stringify([
      { channel: `soak/room-${k % ROOMS}`, event: 'tick', data: { k } },
      { channel: 'soak/*', event: 'all', data: { k } },
    ]);
    k++;
    try {
      const r = await fetch(`${pick(HTTP)}/api/apps/${APP}/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body,
      });
      await r.arrayBuffer();
      stats.events_posted++;
      bump(stats.event_statuses, String(r.status));
    } catch (e) {
      bump(stats.event_statuses, 'error');
    }
  }, 1000);
}

// ---------------------------------------------------------------------------

async function finish() {
  clearInterval(eventTimer);
  for (const s of steady) clearInterval(s.timer);
  await sleep(2000); // the last steady messages arrive
  for (const s of steady) {
    for (const i of s.echoed) if (!s.got.has(i)) stats.steady.missing++;
    s.pub.close(1000);
    s.sub.close(1000);
  }
  await sleep(500);
  console.log(JSON.stringify(stats));
  const bad = stats.steady.missing + stats.steady.duplicates + stats.steady.out_of_order;
  process.exit(bad > 0 ? 1 : 0);
}

let finishing = false;
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { if (!finishing) { finishing = true; finish(); } });
}

await startSteady();
startEvents();
await sleep(2000);
await status('baseline');
const waves = Math.max(1, Math.floor(SECONDS / WAVE_S));
for (let w = 0; w < waves && !finishing; w++) {
  await wave(w);
}
await status('done');
// Steady traffic goes on until soak.sh has taken its last sample and sends SIGTERM.
