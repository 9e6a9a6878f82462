// The admin view's live charts and channel panel in headless Chromium (run by
// run.sh beside demo.test.mjs): two raw WebSocket clients chat while the page
// polls; the charts must move, the channel panel must list both members' presence
// and the last messages (through the server API with the admin token), and its
// Disconnect button must close that one socket with 4401; Clear history (after a
// confirm()) empties it; 401/404/503 answers of the server API show as messages.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const BASE = process.env.SWITCHBOARD_URL;
const TOKEN = process.env.SWITCHBOARD_ADMIN_TOKEN;
if (!BASE || !TOKEN) {
  throw new Error("SWITCHBOARD_URL / SWITCHBOARD_ADMIN_TOKEN are not set: run this through tests/browser/run.sh");
}
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const WAIT_MS = Number(process.env.BROWSER_TEST_WAIT_MS || 15000);
const ARTIFACTS = fileURLToPath(new URL("./artifacts/", import.meta.url));
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
const problems = [];
// Console errors a phase expects (the browser's own line for an error answer it was given).
let expectedConsole = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    timeout: 60000,
  });
});
after(async () => {
  await browser?.close();
});

async function newPage(label, path) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 1100 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (err) => problems.push(`${label}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    if (expectedConsole.some((re) => re.test(msg.text()))) return;
    problems.push(`${label}: console error: ${msg.text()}`);
  });
  await page.goto(`${BASE}${path}`);
  return page;
}

test("the admin view charts live traffic, shows a channel and disconnects a socket", { timeout: 120000 }, async () => {
  const channel = `chat/ops-${Date.now().toString(36)}`;
  const admin = await newPage("admin", "/admin");
  const dialogs = [];
  admin.on("dialog", (d) => { dialogs.push({ type: d.type(), message: d.message() }); d.accept(); });
  await admin.fill("#token", TOKEN);
  await admin.click('#login-form button[type="submit"]');
  await admin.waitForSelector("#dash:not([hidden])");
  await admin.waitForFunction(() => Number(document.getElementById("chart-connections").dataset.points) >= 1);
  const pointsBefore = Number(await admin.getAttribute("#chart-connections", "data-points"));
  const inLineBefore = await admin.getAttribute("#chart-in polyline", "points");

  // Two raw WebSocket clients, opened by a page of the server's origin.
  // /admin (signed out) declares its own icon, so no favicon request fails.
  const clients = await newPage("clients", "/admin");
  const ids = await clients.evaluate(async ({ channel }) => {
    window.closes = {};
    window.sockets = [];
    const open = (i) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`${location.origin.replace("http", "ws")}/rt/demo`);
      ws.onopen = () => ws.send(JSON.stringify({ action: "join", options: { channel }, payload: { presence: true, history: true } }));
      ws.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        if (f.action === "join") resolve(f.client.socketId);
      };
      ws.onclose = (ev) => { window.closes[i] = ev.code; };
      ws.onerror = () => reject(new Error(`socket ${i} failed`));
      window.sockets.push(ws);
    });
    const ids = [await open(0), await open(1)];
    let n = 0;
    window.chatter = setInterval(() => {
      for (const ws of window.sockets) {
        if (ws.readyState === 1) ws.send(JSON.stringify({ action: "message", options: { channel }, payload: { text: `hello-${n++}` } }));
      }
    }, 100);
    return ids;
  }, { channel });

  // The charts move: new samples, two connections at least, messages in and
  // deliveries above zero, and the messages-in line is redrawn with a point above
  // its baseline (y 106 is zero in the 0..110 viewBox).
  await admin.waitForFunction(
    ({ before, inLineBefore }) => {
      const c = document.getElementById("chart-connections").dataset;
      const i = document.getElementById("chart-in").dataset;
      const o = document.getElementById("chart-out").dataset;
      const line = document.querySelector("#chart-in polyline").getAttribute("points");
      const raised = line.split(" ").some((p) => Number(p.split(",")[1]) < 100);
      return Number(c.points) >= before + 3 && Number(c.max) >= 2 && Number(i.max) > 0 && Number(o.max) > 0 &&
        line !== inLineBefore && raised;
    },
    { before: pointsBefore, inLineBefore },
    { timeout: WAIT_MS },
  );
  const line = await admin.getAttribute("#chart-in polyline", "points");
  assert.ok(line.split(" ").length >= 3, `the messages-in line has points: ${line}`);
  assert.match(await admin.textContent("#chart-in .max"), /^max \d/);
  assert.ok(Number((await admin.textContent("#chart-in .max")).slice(4)) > 0, "the messages-in chart's max label is above zero");
  assert.ok(Number((await admin.textContent("#chart-connections .max")).slice(4)) >= 2, "the connections chart reaches 2");
  assert.equal(await admin.textContent("#chart-in .axis .span"), "−1 min", "a fresh page's axis spans a minute");
  await admin.screenshot({ path: `${ARTIFACTS}admin-charts.png`, fullPage: true });

  // The channel panel: both members' presence and the last messages, from the server API.
  const row = `div.app[data-app="demo"] tr[data-channel="${channel}"]`;
  await admin.waitForSelector(row);
  await admin.click(row);
  await admin.waitForFunction(
    (ids) => ids.every((id) => document.querySelector(`#cp-presence tr[data-socket="${id}"]`)) &&
      document.querySelectorAll("#cp-presence tr[data-socket]").length === 2,
    ids,
    { timeout: WAIT_MS },
  );
  // The last 20 entries (more than 20 were sent by now), each one of the chat's messages.
  await admin.waitForFunction(() => {
    const items = [...document.querySelectorAll("#cp-history li")];
    return items.length === 20 && items.every((li) => /"text":"hello-\d+"/.test(li.textContent));
  }, null, { timeout: WAIT_MS });
  assert.equal(await admin.textContent("#cp-title"), channel);
  assert.equal(await admin.getAttribute(row, "class"), "selected");
  await admin.screenshot({ path: `${ARTIFACTS}admin-channel.png`, fullPage: true });

  // Disconnect the first socket: it closes with 4401, and the presence list drops to one.
  await admin.click(`#cp-presence tr[data-socket="${ids[0]}"] button`);
  await clients.waitForFunction(() => window.closes[0] !== undefined, null, { timeout: WAIT_MS });
  assert.equal(await clients.evaluate(() => window.closes[0]), 4401);
  await admin.waitForFunction(
    (ids) => !document.querySelector(`#cp-presence tr[data-socket="${ids[0]}"]`) &&
      document.querySelector(`#cp-presence tr[data-socket="${ids[1]}"]`),
    ids,
    { timeout: WAIT_MS },
  );
  assert.equal(await admin.locator("#cp-presence tr[data-socket]").count(), 1);
  assert.match(await admin.textContent("#cp-status"), /Disconnected 1 socket/);
  assert.match(await admin.textContent("#cp-status"), /\{"disconnected":1\}/);
  assert.equal(await clients.evaluate(() => window.closes[1]), undefined, "the other socket stays");

  // Clear the history (the confirm() is accepted): the panel shows none.
  await clients.evaluate(() => clearInterval(window.chatter));
  await admin.click("#cp-clear");
  await admin.waitForFunction(() => /No stored history/.test(document.getElementById("cp-history").textContent), null, { timeout: WAIT_MS });
  assert.equal(dialogs.length, 1);
  assert.equal(dialogs[0].type, "confirm");
  assert.ok(dialogs[0].message.includes(channel), `the confirm names the channel: ${dialogs[0].message}`);
  assert.match(await admin.textContent("#cp-status"), /History cleared/);

  // Error answers of the server API show as a message in the panel (the browser's
  // request is answered here, by Playwright; reopening the row reads at once).
  expectedConsole = [/Failed to load resource: the server responded with a status of (401|404|503)/];
  const cases = [
    [401, "invalid API key", /refused \(401\)/],
    [404, "no rule matches", /no rule matches this channel \(404\)/],
    [503, "unavailable", /unavailable \(503\)/],
  ];
  for (const [status, error, shown] of cases) {
    const handler = (route) => route.fulfill({ status, contentType: "application/json", body: JSON.stringify({ error }) });
    await admin.route("**/api/apps/demo/presence?*", handler);
    await admin.click(row);
    await admin.waitForFunction(
      (source) => new RegExp(source).test(document.getElementById("cp-status").textContent) &&
        document.getElementById("cp-status").classList.contains("error"),
      shown.source,
      { timeout: WAIT_MS },
    );
    assert.ok((await admin.textContent("#cp-status")).includes(`(${error})`), "the server's error text is shown");
    await admin.unroute("**/api/apps/demo/presence?*", handler);
  }
  // Back to the real API: the panel recovers.
  await admin.click(row);
  await admin.waitForFunction(() => /^updated /.test(document.getElementById("cp-status").textContent));
  assert.equal(await admin.locator("#cp-presence tr[data-socket]").count(), 1);
  expectedConsole = [];

  assert.deepEqual(problems, [], "no page errors or console errors");
});
