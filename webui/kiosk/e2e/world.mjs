// The world the kiosk e2e tests run in (docs/kiosk.md): every real process of a terminal and
// its bank, started in a temp dir on loopback and Unix sockets, and the simulated customer's
// hands (devsim panel's simulator API), the bank's books (host-sim's control API) and the
// e-journal to check. Used by kiosk.test.mjs (headless Chromium) and windowed.test.mjs (the
// windowed host under Xvfb).

import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const KIOSK = path.resolve(HERE, '..');
const REPO = path.resolve(KIOSK, '..', '..');
export const BIN_DIR = process.env.OPENTELLER_BIN_DIR
  ? path.resolve(process.env.OPENTELLER_BIN_DIR)
  : path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target', 'debug');
export const DIST = path.resolve(process.env.OPENTELLER_KIOSK_DIST || path.join(KIOSK, 'dist'));
export const CHROMIUM = process.env.OPENTELLER_CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = process.env.OPENTELLER_ARTIFACTS
  ? path.resolve(process.env.OPENTELLER_ARTIFACTS)
  : fs.mkdtempSync(path.join(os.tmpdir(), 'openteller-kiosk-e2e-'));

/** How long a screen may take to show (host round trips included). */
export const WAIT_MS = 20_000;

// Test keys (the same values as terminal-native/tests/online.rs): clear only in this test.
export const MASTER = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';
export const TMK = '0123456789ABCDEFFEDCBA9876543210';
export const ZPK = '11111111111111112222222222222222';
export const ZAK = '33333333333333334444444444444444';
export const TERMINAL = 'T0000001';
// debit-zhang of the virtual card reader's library (track 2 6222020200112233445=4912101...).
export const ZHANG = '6222020200112233445';
export const LI = '6222020200198765432';
export const START_BALANCE = 100_000_000;

// Short customer-side timers so the timeout cases run in seconds.
export const KIOSK_CONFIG = {
  devices: { idc: 'idc', pin: 'pin', cdm: 'cdm', ptr: 'ptr' },
  currency: 'CNY',
  presetAmounts: [10000, 20000, 30000, 50000, 100000, 200000],
  amountRules: { multipleOf: 10000, min: 10000, max: 500000 },
  transferMax: 5000000,
  defaultLocale: 'zh-CN',
  locales: ['zh-CN', 'en'],
  customerTimeoutMs: 12000,
  moreTimeMs: 10000,
  pinTimeoutMs: 30000,
  cashTakeTimeoutMs: 6000,
  cardTakeTimeoutMs: 15000,
  retainCardOnTimeout: true,
  messageMs: 1500,
  minPinLength: 4,
  maxPinLength: 6,
  bankName: 'OpenTeller Bank',
};

/** The running world (live bindings: importers see them once `startWorld` set them). */
export let tmp;
export const children = [];
export let hostControl; // http://127.0.0.1:PORT of host-sim
export let panel; // http://127.0.0.1:PORT of devsim panel
export let native; // { url, journalDir }

// ------------------------------------------------------------------ processes

export function bin(name) {
  const file = path.join(BIN_DIR, name);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: build it first (run.sh does) or set OPENTELLER_BIN_DIR`);
  return file;
}

export function logTail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Spawns a server and resolves with its first stdout line (its "listening" line). */
export async function spawnListening(name, file, args, env = {}) {
  const log = path.join(tmp, `${name}.log`);
  const err = fs.openSync(log, 'a');
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', err], env: { ...process.env, RUST_LOG: 'info', ...env } });
  fs.closeSync(err);
  children.push(child);
  const rl = readline.createInterface({ input: child.stdout });
  const line = await Promise.race([
    once(rl, 'line').then(([l]) => l),
    once(child, 'exit').then(([code]) => {
      throw new Error(`${name} exited (${code}) before it was ready:\n${logTail(log)}`);
    }),
    delay(60_000).then(() => {
      throw new Error(`${name} printed no listening line within 60 s:\n${logTail(log)}`);
    }),
  ]);
  rl.on('line', () => {}); // keep draining stdout
  return line;
}

export function word(line, key) {
  const w = line.split(/\s+/).find((x) => x.startsWith(key));
  if (!w) throw new Error(`no ${key} in ${line}`);
  return w.slice(key.length);
}

export async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  if (!(await Promise.race([exited.then(() => true), delay(5000).then(() => false)]))) {
    child.kill('SIGKILL');
    await exited;
  }
}

export async function startHostSide() {
  fs.writeFileSync(path.join(tmp, 'accounts.toml'), [
    '[[account]]', `pan = "${ZHANG}"`, 'pin = "1234"', 'name = "ZHANG/SAN"', `balance = ${START_BALANCE}`, '',
    '[[account]]', `pan = "${LI}"`, 'pin = "1234"', 'name = "LI/SI"', `balance = ${START_BALANCE}`, '',
  ].join('\n'));
  // The host allows more wrong PINs than the terminal, so the terminal's limit (3) is what the
  // wrong-PIN case meets.
  fs.writeFileSync(path.join(tmp, 'host-sim.toml'), [
    'listen = "127.0.0.1:0"', 'control = "127.0.0.1:0"', 'accounts = "accounts.toml"', 'max_pin_tries = 6',
    '[keys]', `zpk = "${ZPK}"`, `zak = "${ZAK}"`, '',
  ].join('\n'));
  const hostLine = await spawnListening('host-sim', bin('host-sim'), ['serve', '--config', path.join(tmp, 'host-sim.toml')]);
  hostControl = word(hostLine, 'control=');
  const iso = word(hostLine, 'iso8583=');

  const engineCfg = path.join(tmp, 'online-txn.toml');
  fs.writeFileSync(engineCfg, [
    '[journal]', `url = ${JSON.stringify(`sqlite://${path.join(tmp, 'journal.db')}`)}`,
    '[keys]', `file = ${JSON.stringify(path.join(tmp, 'keys.json'))}`,
    '[terminals]', 'listen = "127.0.0.1:0"',
    '[host]', `address = "${iso}"`, 'timeout_ms = 20000', '',
  ].join('\n'));
  for (const [name, usage, value] of [[`term/${TERMINAL}/TMK`, 'kek', TMK], ['host/ZPK', 'pin', ZPK], ['host/ZAK', 'mac', ZAK]]) {
    await run(bin('online-txn'), ['keys', '--config', engineCfg, 'import', '--name', name, '--usage', usage, '--hex', value],
      { env: { ...process.env, OPENTELLER_MASTER_KEY: MASTER } });
  }
  const engineLine = await spawnListening('online-txn', bin('online-txn'), ['serve', '--config', engineCfg], { OPENTELLER_MASTER_KEY: MASTER });
  return word(engineLine, 'terminals=');
}

export const DEVICES = [['idc', 'CardReader'], ['pin', 'PinPad'], ['cdm', 'CashDispenser'], ['ptr', 'ReceiptPrinter']];
export const sock = (name) => `unix:${path.join(tmp, `${name}.sock`)}`;

export async function devsim(name, ...args) {
  return run(bin('devsim'), ['--device', sock(name), ...args]);
}

export async function startProxies() {
  for (const [name, cls] of DEVICES) {
    const log = path.join(tmp, `proxy-${name}.log`);
    const err = fs.openSync(log, 'a');
    const child = spawn(bin('driver-proxy'), ['--class', cls, '--backend', 'virtual', '--listen', sock(name),
      '--state-dir', path.join(tmp, `${name}-state`)], { stdio: ['ignore', 'ignore', err], env: { ...process.env, RUST_LOG: 'warn' } });
    fs.closeSync(err);
    children.push(child);
  }
  for (const [name] of DEVICES) {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await devsim(name, 'status');
        break;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`driver-proxy ${name} not ready: ${e.message}\n${logTail(path.join(tmp, `proxy-${name}.log`))}`);
        await delay(100);
      }
    }
  }
}

/** The key ceremony: the TMK into the EPP as two clear components (XOR), straight to the proxy. */
export async function loadTmk() {
  const tmk = Buffer.from(TMK, 'hex');
  const c1 = Buffer.from(Array.from({ length: 16 }, (_, i) => (i * 37 + 11) & 0xff));
  const c2 = Buffer.from(tmk.map((b, i) => b ^ c1[i]));
  const cmd = { pinPad: { importKeyComponents: { name: 'TMK', usage: 'KEY_USAGE_KEY_ENCRYPTION', algorithm: 'KEY_ALGORITHM_TDES',
    components: [c1.toString('base64'), c2.toString('base64')] } } };
  await devsim('pin', 'exec', JSON.stringify(cmd));
}

export async function startPanel() {
  const line = await spawnListening('devsim-panel', bin('devsim'), ['panel', '--listen', '127.0.0.1:0',
    ...DEVICES.flatMap(([name]) => ['--device', `${name}=${sock(name)}`])]);
  const m = line.match(/listening on (http:\/\/[^\s/]+)/);
  if (!m) throw new Error(`no address in ${line}`);
  return m[1];
}

export function writePackage(kioskConfig) {
  if (!fs.existsSync(path.join(DIST, 'index.html'))) throw new Error(`${DIST}/index.html is missing: npm run build first (run.sh does)`);
  const pkg = path.join(tmp, 'package');
  fs.cpSync(DIST, pkg, { recursive: true });
  fs.writeFileSync(path.join(pkg, 'kiosk.config.json'), JSON.stringify(kioskConfig, null, 2));
  // The fixture page for the safety rule: SJSL as plain ES modules next to it.
  fs.cpSync(path.join(KIOSK, 'src', 'sjsl'), path.join(pkg, 'e2e-fixtures', 'sjsl'), { recursive: true });
  fs.copyFileSync(path.join(HERE, 'fixtures', 'dispense-probe.html'), path.join(pkg, 'e2e-fixtures', 'dispense-probe.html'));
  return pkg;
}

/**
 * terminal-native for the package: `--headless` (resolves with its URL), or windowed on the X
 * display `display` (a binary built with `--features window`; no port, the kiosk in a wry
 * webview over IPC).
 */
export async function startNative(terminals, pkg, opts = {}) {
  const journalDir = path.join(tmp, 'ej');
  const text = [
    `terminal_id = "${TERMINAL}"`,
    `business_package = ${JSON.stringify(pkg)}`,
    `journal_dir = ${JSON.stringify(journalDir)}`,
    `state_dir = ${JSON.stringify(path.join(tmp, 'native-state'))}`,
    '[headless]', 'listen = "127.0.0.1:0"',
    ...(opts.display ? ['[window]', 'fullscreen = true', 'cursor = false'] : []),
    '[rules]', 'max_pin_attempts = 3',
    '[self_check]', 'interval_s = 3',
    ...DEVICES.flatMap(([name, cls]) => [`[devices.${name}]`, `class = "${cls}"`, `endpoint = ${JSON.stringify(sock(name))}`,
      ...(name === 'ptr' ? ['critical = false'] : [])]),
    '[online]', `address = "${terminals}"`, 'pinpad = "pin"', 'response_timeout_ms = 5000', '',
  ].join('\n');
  const cfg = path.join(tmp, 'native.toml');
  fs.writeFileSync(cfg, text);
  if (opts.display) {
    const log = path.join(tmp, 'terminal-native.log');
    const err = fs.openSync(log, 'a');
    const env = { ...process.env, DISPLAY: opts.display, WEBKIT_DISABLE_DMABUF_RENDERER: '1', LIBGL_ALWAYS_SOFTWARE: '1', RUST_LOG: 'info' };
    delete env.WAYLAND_DISPLAY;
    const child = spawn(opts.binary || bin('terminal-native'), ['--config', cfg], { stdio: ['ignore', 'ignore', err], env });
    fs.closeSync(err);
    children.push(child);
    native = { url: null, journalDir, child };
    return native;
  }
  const line = await spawnListening('terminal-native', bin('terminal-native'), ['--config', cfg, '--headless']);
  const m = line.match(/listening on (http:\/\/\S+?)\/?$/);
  if (!m) throw new Error(`no address in ${line}`);
  native = { url: m[1], journalDir };
  return native;
}

/**
 * Starts everything but the browser: host-sim, online-txn, the proxies with the TMK loaded,
 * devsim panel, the package (dist/ + `kioskConfig` + fixtures) and terminal-native.
 * @param {{kioskConfig: object, display?: string, binary?: string}} opts
 */
export async function startWorld(opts) {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiosk-e2e-'));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const terminals = await startHostSide();
  await startProxies();
  await loadTmk();
  panel = await startPanel();
  return startNative(terminals, writePackage(opts.kioskConfig), opts);
}

/** Stops every process (also on failure) and keeps the logs and the e-journal in ARTIFACTS. */
export async function stopWorld() {
  for (const c of children.reverse()) await stopChild(c);
  if (tmp) {
    for (const f of fs.readdirSync(tmp)) {
      if (f.endsWith('.log')) fs.copyFileSync(path.join(tmp, f), path.join(ARTIFACTS, f));
    }
    if (native && fs.existsSync(native.journalDir)) fs.cpSync(native.journalDir, path.join(ARTIFACTS, 'ej'), { recursive: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`# screenshots, logs and the e-journal in ${ARTIFACTS}`);
}

// ------------------------------------------------------------------ the simulated world

export async function http(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** One simulator action through the panel; resolves with the reply (refusals included). */
export function sim(device, action) {
  return http('POST', `${panel}/api/devices/${device}/simulator`, action);
}

export const SUCCESS = 'COMPLETION_CODE_SUCCESS';

/** Repeats a simulator action until the device accepts it (e.g. keys only while a GetPin runs). */
export async function simUntil(device, action, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const r = await sim(device, action);
    if (r.result?.code === SUCCESS) return r;
    if (Date.now() > deadline) throw new Error(`${what}: the device kept refusing: ${JSON.stringify(r.result)}`);
    await delay(100);
  }
}

export const insertCard = () => simUntil('idc', { cardReader: { insertCard: { libraryName: 'debit-zhang' } } }, 'insert card');
export const takeCard = () => simUntil('idc', { cardReader: { takeCard: {} } }, 'take card');
export const takeNotes = () => simUntil('cdm', { cashDispenser: { takeItems: {} } }, 'take notes');
export const pressKeys = (keys) => simUntil('pin', { pinPad: { pressKeys: { keys } } }, `keys ${keys.length}`);
export const typePin = (digits) => pressKeys([...digits.split(''), 'ENTER']);

export async function account(pan) {
  return http('GET', `${hostControl}/state/accounts/${pan}`);
}

export async function cdm() {
  return (await http('GET', `${panel}/api/devices/cdm/status`)).cashDispenser;
}

export async function idcStatus() {
  return (await http('GET', `${panel}/api/devices/idc/status`)).cardReader;
}

export const sumOf = (units, field) => units.reduce((n, u) => n + Number(u[field] ?? 0), 0);

export function journal() {
  if (!fs.existsSync(native.journalDir)) return '';
  return fs.readdirSync(native.journalDir).sort()
    .map((f) => fs.readFileSync(path.join(native.journalDir, f), 'utf8')).join('');
}

export async function eventually(what, fn, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await delay(200);
  }
}

