// The bridge measured from a page: headless Chromium (Debian's, driven by playwright-core)
// opens the kiosk served by `terminal-native --headless` and, inside the page, runs bridge
// round trips over the page's own WebSocket; optionally first measures the cold start of the
// whole terminal under its keeper (keeper started → kiosk page loaded → terminal.status says in
// service).
//
//   node benches/src/bin/bridge-bench-page.mjs --url http://127.0.0.1:8780/ [--calls 10000]
//   node benches/src/bin/bridge-bench-page.mjs --url http://127.0.0.1:8780/ \
//        --keeper target/release/keeper --keeper-config .state/local/keeper.toml
//
// playwright-core is taken from webui/console/e2e or webui/kiosk/e2e (run `npm ci` there), or
// from PLAYWRIGHT_CORE (a path to the package). Chromium: OPENTELLER_CHROMIUM or /usr/bin/chromium.

import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

function loadPlaywright() {
  const require = createRequire(import.meta.url);
  const candidates = [
    process.env.PLAYWRIGHT_CORE,
    path.join(repo, "webui/console/e2e/node_modules/playwright-core"),
    path.join(repo, "webui/kiosk/e2e/node_modules/playwright-core"),
  ].filter(Boolean);
  for (const c of candidates) {
    try {
      return require(c);
    } catch {
      // next
    }
  }
  throw new Error(
    "playwright-core not found: run `npm ci` in webui/console/e2e, or set PLAYWRIGHT_CORE",
  );
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function httpUp(url, deadline) {
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      // not yet
    }
    await sleep(20);
  }
  throw new Error(`${url} did not answer in time`);
}

// Inside the page: a WebSocket to the bridge and N sequential round trips of `method`.
async function pageRoundTrips({ calls, method, params }) {
  const ws = new WebSocket(`ws://${location.host}/bridge`);
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = fail;
  });
  let id = 0;
  let waiting = null;
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (waiting && msg.id === waiting.id) {
      const w = waiting;
      waiting = null;
      w.resolve(msg);
    }
  };
  const call = (m, p) =>
    new Promise((resolve) => {
      id += 1;
      waiting = { id, resolve };
      ws.send(JSON.stringify({ id, method: m, params: p }));
    });
  for (let i = 0; i < 200; i++) await call(method, params);
  const samples = new Float64Array(calls);
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    const a = await call(method, params);
    samples[i] = performance.now() - t;
    if (a.error) throw new Error(JSON.stringify(a.error));
  }
  const total = performance.now() - t0;
  ws.close();
  const sorted = Array.from(samples).sort((a, b) => a - b);
  const q = (x) => sorted[Math.min(sorted.length - 1, Math.floor(x * sorted.length))];
  return { calls, total, p50: q(0.5), p99: q(0.99), max: sorted[sorted.length - 1] };
}

async function inServiceFromPage(page, deadline) {
  return page.evaluate(async (deadlineMs) => {
    const ws = new WebSocket(`ws://${location.host}/bridge`);
    await new Promise((ok, fail) => {
      ws.onopen = ok;
      ws.onerror = fail;
    });
    let id = 0;
    const call = () =>
      new Promise((resolve) => {
        id += 1;
        const want = id;
        const h = (m) => {
          const msg = JSON.parse(m.data);
          if (msg.id === want) {
            ws.removeEventListener("message", h);
            resolve(msg);
          }
        };
        ws.addEventListener("message", h);
        ws.send(JSON.stringify({ id: want, method: "terminal.status", params: {} }));
      });
    while (Date.now() < deadlineMs) {
      const a = await call();
      if (a.result && a.result.inService) {
        ws.close();
        return true;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    ws.close();
    return false;
  }, deadline);
}

async function main() {
  const url = arg("url", "http://127.0.0.1:8780/");
  const calls = Number(arg("calls", "10000"));
  const keeperBin = arg("keeper");
  const keeperConfig = arg("keeper-config");
  const { chromium } = loadPlaywright();
  const executablePath = process.env.OPENTELLER_CHROMIUM || "/usr/bin/chromium";

  let keeper = null;
  const stopKeeper = async () => {
    if (keeper && keeper.exitCode === null) {
      keeper.kill("SIGTERM");
      await new Promise((r) => keeper.once("exit", r));
    }
  };
  try {
    // The browser is started first: its own start is not the terminal's.
    const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
    const page = await browser.newPage();
    if (keeperBin && keeperConfig) {
      const t0 = Date.now();
      keeper = spawn(keeperBin, ["--config", keeperConfig], { stdio: "ignore" });
      const deadline = t0 + 120_000;
      await httpUp(url, deadline);
      const tHttp = Date.now();
      await page.goto(url, { waitUntil: "load" });
      const tLoaded = Date.now();
      if (!(await inServiceFromPage(page, deadline))) throw new Error("never in service");
      const tService = Date.now();
      console.log(
        `cold start: kiosk served after ${tHttp - t0} ms, page loaded after ${tLoaded - t0} ms, ` +
          `in service after ${tService - t0} ms (keeper start = 0)`,
      );
    } else {
      await page.goto(url, { waitUntil: "load" });
    }
    for (const [method, params] of [
      ["device.status", { device: "idc" }],
      ["terminal.status", {}],
    ]) {
      const r = await page.evaluate(pageRoundTrips, { calls, method, params });
      console.log(
        `${method} from Chromium: ${r.calls} calls, ${(r.calls / (r.total / 1000)).toFixed(0)}/s, ` +
          `p50 ${r.p50.toFixed(3)} ms, p99 ${r.p99.toFixed(3)} ms, max ${r.max.toFixed(3)} ms`,
      );
    }
    await browser.close();
  } finally {
    await stopKeeper();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
