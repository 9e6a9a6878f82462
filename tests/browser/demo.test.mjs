// The demo page and the admin view in a real browser: Debian's headless
// Chromium driven by playwright-core, against a broker started by run.sh
// (SWITCHBOARD_URL, SWITCHBOARD_ADMIN_TOKEN). Screenshots go to artifacts/.
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
const WAIT_MS = Number(process.env.BROWSER_TEST_WAIT_MS || 15000); // bound on every DOM wait
const ARTIFACTS = fileURLToPath(new URL("./artifacts/", import.meta.url));
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
const problems = []; // page errors and console errors, from every page

before(async () => {
  // launch() gives Chromium a fresh temporary user-data-dir of its own,
  // deleted on close; each newContext() is an isolated profile (own storage).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 60000,
  });
});

after(async () => {
  await browser?.close();
});

/** Console errors a page is expected to log (the browser's own line for a refused token). */
const EXPECTED_CONSOLE = {
  admin: [/Failed to load resource: the server responded with a status of 401/],
};

async function newPage(label, path) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 680 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (err) => problems.push(`${label}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    if ((EXPECTED_CONSOLE[label] || []).some((re) => re.test(msg.text()))) return;
    problems.push(`${label}: console error: ${msg.text()}`);
  });
  await page.goto(BASE + path, { waitUntil: "load" });
  return page;
}

/** Wait until the page's presence bar shows exactly `n` avatars. */
async function presenceIs(page, n) {
  await page.waitForFunction(
    (n) => document.querySelectorAll("#presence .avatar").length === n &&
      document.getElementById("presence-count").textContent === `${n} online`,
    n,
    { timeout: WAIT_MS },
  );
}

async function joinLobby(page) {
  await page.click('#channels li[data-channel="chat/lobby"] button.open');
  await page.waitForSelector('#channels li.active[data-channel="chat/lobby"]');
  await page.waitForFunction(() => document.getElementById("status").textContent === "connected", null, { timeout: WAIT_MS });
  // Joined: the send button is enabled only once the join ack arrived.
  await page.waitForSelector("#send:not([disabled])");
}

test("two pages chat on the demo page; the admin view shows the channel live", { timeout: 120000 }, async () => {
  const text = `hello from alice ${Date.now().toString(36)}`;

  // --- the demo page: two visitors (separate browser profiles) ---
  const alice = await newPage("alice", "/");
  const bob = await newPage("bob", "/");
  await alice.fill("#name", "Alice Example");
  await bob.fill("#name", "Bob Builder");
  await joinLobby(alice);
  await joinLobby(bob);
  await presenceIs(alice, 2);
  await presenceIs(bob, 2);

  await alice.fill("#text", text);
  await alice.click("#send");
  const seen = bob.locator("#messages .msg", { hasText: text });
  await seen.waitFor({ timeout: WAIT_MS });
  assert.equal(await seen.locator(".who").first().evaluate((e) => e.firstChild.textContent), "Alice Example",
    "the sender's name travels in the payload");
  // The sender sees its own message (the server echoes public messages).
  await alice.locator("#messages .msg.mine", { hasText: text }).waitFor({ timeout: WAIT_MS });

  // Names reach the presence avatars (announced by direct message): initials.
  await bob.waitForSelector('#presence .avatar[title^="Alice Example"]');
  await alice.waitForSelector('#presence .avatar[title^="Bob Builder"]');
  assert.deepEqual(
    (await bob.locator("#presence .avatar").allTextContents()).sort(),
    ["AE", "BB"],
    "bob's presence bar shows both members by initials",
  );
  await presenceIs(alice, 2);
  await presenceIs(bob, 2);
  await bob.screenshot({ path: `${ARTIFACTS}demo.png` });
  await alice.screenshot({ path: `${ARTIFACTS}demo-sender.png` });

  // --- the admin view ---
  const admin = await newPage("admin", "/admin");
  // A wrong token first: a clear message, and the form again.
  await admin.fill("#token", "not-the-token");
  await admin.click('#login-form button[type="submit"]');
  await admin.waitForSelector("#problem:not([hidden])");
  assert.match(await admin.textContent("#problem"), /Wrong admin token \(401\)/);
  await admin.waitForSelector("#login:not([hidden])");

  await admin.fill("#token", TOKEN);
  await admin.click('#login-form button[type="submit"]');
  const lobbyRow = 'div.app[data-app="demo"] tr[data-channel="chat/lobby"]';
  await admin.waitForFunction(
    (sel) => document.querySelector(`${sel} td.members`)?.textContent === "2" &&
      document.querySelector(`${sel} td.presence`)?.textContent === "2",
    lobbyRow,
    { timeout: WAIT_MS },
  );
  assert.equal(await admin.isHidden("#problem"), true, "the 401 message is gone");
  const connections = Number(await admin.textContent("#connections"));
  assert.ok(connections >= 2, `connections tile: ${connections}`);
  // Rates are computed from successive totals: messages sent now show up as a
  // rate above zero on the next polls.
  for (let i = 1; i <= 3; i++) {
    await bob.fill("#text", `rate check ${i}`);
    await bob.click("#send");
  }
  await alice.locator("#messages .msg", { hasText: "rate check 3" }).waitFor({ timeout: WAIT_MS });
  await admin.waitForFunction(
    () => Number(document.getElementById("in-rate").textContent) > 0 && Number(document.getElementById("out-rate").textContent) > 0,
    null,
    { timeout: WAIT_MS },
  );
  await admin.screenshot({ path: `${ARTIFACTS}admin.png` });

  // --- history on join, and the admin view refreshing by itself ---
  const carol = await newPage("carol", "/#chat/lobby");
  await carol.waitForSelector("#send:not([disabled])");
  await carol.locator("#messages .msg", { hasText: text }).waitFor({ timeout: WAIT_MS });
  await presenceIs(carol, 3);
  await presenceIs(bob, 3);
  await admin.waitForFunction(
    (sel) => document.querySelector(`${sel} td.members`)?.textContent === "3",
    lobbyRow,
    { timeout: WAIT_MS },
  );

  // Carol leaves: the others' avatars and the admin view follow.
  await carol.context().close();
  await presenceIs(alice, 2);
  await admin.waitForFunction(
    (sel) => document.querySelector(`${sel} td.members`)?.textContent === "2",
    lobbyRow,
    { timeout: WAIT_MS },
  );

  assert.deepEqual(problems, [], "no page errors or console errors");
});
