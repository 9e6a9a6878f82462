// Start a Switchboard broker process for a test, race-free: it listens on
// 127.0.0.1:0 and the test learns the port from the broker's own "listening"
// log line (--log-format json). Picking a "free" port first and handing it to
// the broker lets two processes be given the same port; the second one then
// fails to bind while the first answers for both.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
export const BIN = process.env.SWITCHBOARD_BIN || `${ROOT}target/release/switchboard`;

/**
 * Spawn `switchboard serve --config <config>` and wait (bounded) until it has
 * bound its port. Resolves to a handle: { name, child, port, log, exited,
 * running(), tail(n) }. Rejects if the process exits or does not bind in time.
 */
export function startBroker(name, config, { env = {}, within = 15_000 } = {}) {
  const child = spawn(BIN, ["--log-format", "json", "serve", "--config", config], {
    env: { ...process.env, RUST_LOG: "info", ...env, SWITCHBOARD__SERVER__LISTEN: "127.0.0.1:0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const proc = { name, child, port: null, log: [] };
  proc.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  proc.running = () => child.exitCode === null && child.signalCode === null;
  proc.tail = (n = 40) => `--- ${proc.name} (last ${n} log lines) ---\n${proc.log.slice(-n).join("\n")}`;

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${name}: no "listening" line within ${within} ms\n${proc.tail()}`));
    }, within);
    const keep = (chunk) => {
      for (const line of chunk.toString().split("\n").filter(Boolean)) {
        proc.log.push(line);
        if (proc.port === null) {
          let fields;
          try {
            fields = JSON.parse(line).fields;
          } catch {
            continue;
          }
          if (fields?.message === "listening") {
            proc.port = Number(fields.addr.split(":").pop());
            proc.name = `${name} (:${proc.port})`;
            clearTimeout(timer);
            resolve(proc);
          }
        }
      }
      if (proc.log.length > 400) proc.log.splice(0, proc.log.length - 400);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    proc.exited.then(({ code, signal }) => {
      if (proc.port === null) {
        clearTimeout(timer);
        reject(new Error(`${name} exited (code ${code}, signal ${signal}) before listening\n${proc.tail()}`));
      }
    });
  });
}
