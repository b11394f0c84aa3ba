// Browser end-to-end test of the kiosk business pages (docs/sjsl.md, docs/kiosk.md).
//
// The whole terminal, all real processes on loopback / Unix sockets in a temp dir:
//   host-sim (the bank, accounts below) ← online-txn (8583 engine, keys imported) ←
//   terminal-native --headless (transaction client, rules, journal) serving the kiosk's dist/
//   as its business package → four driver-proxy --backend virtual (idc, pin, cdm, ptr),
//   acted on through `devsim panel`'s simulator-control HTTP API as a customer / tester would
//   (insert card, PIN pad keys, take notes, errors), with the TMK loaded into the virtual EPP by a
//   key ceremony straight to its proxy (`devsim exec`), never through terminal-native.
// The kiosk runs in headless Debian Chromium (playwright-core) and is driven through its
// data-testid hooks only. Screenshots of every main screen go to $OPENTELLER_ARTIFACTS.
//
// Environment:
//   OPENTELLER_BIN_DIR     the binaries (default $CARGO_TARGET_DIR/debug, else <repo>/target/debug)
//   OPENTELLER_KIOSK_DIST  the built kiosk (default webui/kiosk/dist)
//   OPENTELLER_CHROMIUM    the browser (default /usr/bin/chromium)
//   OPENTELLER_ARTIFACTS   screenshots and logs (default a temp dir)
//
// Run with: bash e2e/run.sh (installs what this needs, builds the kiosk and the binaries).

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const KIOSK = path.resolve(HERE, '..');
const REPO = path.resolve(KIOSK, '..', '..');
const BIN_DIR = process.env.OPENTELLER_BIN_DIR
  ? path.resolve(process.env.OPENTELLER_BIN_DIR)
  : path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target', 'debug');
const DIST = path.resolve(process.env.OPENTELLER_KIOSK_DIST || path.join(KIOSK, 'dist'));
const CHROMIUM = process.env.OPENTELLER_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.OPENTELLER_ARTIFACTS
  ? path.resolve(process.env.OPENTELLER_ARTIFACTS)
  : fs.mkdtempSync(path.join(os.tmpdir(), 'openteller-kiosk-e2e-'));

/** How long a screen may take to show (host round trips included). */
const WAIT_MS = 20_000;

// Test keys (the same values as terminal-native/tests/online.rs): clear only in this test.
const MASTER = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';
const TMK = '0123456789ABCDEFFEDCBA9876543210';
const ZPK = '11111111111111112222222222222222';
const ZAK = '33333333333333334444444444444444';
const TERMINAL = 'T0000001';
// debit-zhang of the virtual card reader's library (track 2 6222020200112233445=4912101...).
const ZHANG = '6222020200112233445';
const LI = '6222020200198765432';
const START_BALANCE = 100_000_000;

// Short customer-side timers so the timeout cases run in seconds.
const KIOSK_CONFIG = {
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

let tmp;
const children = [];
let hostControl; // http://127.0.0.1:PORT of host-sim
let panel; // http://127.0.0.1:PORT of devsim panel
let native; // { url, journalDir }
let browser;
let page;
let pin = '1234';
const pageErrors = [];
let shot = 0;

// ------------------------------------------------------------------ processes

function bin(name) {
  const file = path.join(BIN_DIR, name);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: build it first (run.sh does) or set OPENTELLER_BIN_DIR`);
  return file;
}

function logTail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Spawns a server and resolves with its first stdout line (its "listening" line). */
async function spawnListening(name, file, args, env = {}) {
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

function word(line, key) {
  const w = line.split(/\s+/).find((x) => x.startsWith(key));
  if (!w) throw new Error(`no ${key} in ${line}`);
  return w.slice(key.length);
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  if (!(await Promise.race([exited.then(() => true), delay(5000).then(() => false)]))) {
    child.kill('SIGKILL');
    await exited;
  }
}

async function startHostSide() {
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

const DEVICES = [['idc', 'CardReader'], ['pin', 'PinPad'], ['cdm', 'CashDispenser'], ['ptr', 'ReceiptPrinter']];
const sock = (name) => `unix:${path.join(tmp, `${name}.sock`)}`;

async function devsim(name, ...args) {
  return run(bin('devsim'), ['--device', sock(name), ...args]);
}

async function startProxies() {
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
async function loadTmk() {
  const tmk = Buffer.from(TMK, 'hex');
  const c1 = Buffer.from(Array.from({ length: 16 }, (_, i) => (i * 37 + 11) & 0xff));
  const c2 = Buffer.from(tmk.map((b, i) => b ^ c1[i]));
  const cmd = { pinPad: { importKeyComponents: { name: 'TMK', usage: 'KEY_USAGE_KEY_ENCRYPTION', algorithm: 'KEY_ALGORITHM_TDES',
    components: [c1.toString('base64'), c2.toString('base64')] } } };
  await devsim('pin', 'exec', JSON.stringify(cmd));
}

async function startPanel() {
  const line = await spawnListening('devsim-panel', bin('devsim'), ['panel', '--listen', '127.0.0.1:0',
    ...DEVICES.flatMap(([name]) => ['--device', `${name}=${sock(name)}`])]);
  const m = line.match(/listening on (http:\/\/[^\s/]+)/);
  if (!m) throw new Error(`no address in ${line}`);
  return m[1];
}

function writePackage() {
  if (!fs.existsSync(path.join(DIST, 'index.html'))) throw new Error(`${DIST}/index.html is missing: npm run build first (run.sh does)`);
  const pkg = path.join(tmp, 'package');
  fs.cpSync(DIST, pkg, { recursive: true });
  fs.writeFileSync(path.join(pkg, 'kiosk.config.json'), JSON.stringify(KIOSK_CONFIG, null, 2));
  // The fixture page for the safety rule: SJSL as plain ES modules next to it.
  fs.cpSync(path.join(KIOSK, 'src', 'sjsl'), path.join(pkg, 'e2e-fixtures', 'sjsl'), { recursive: true });
  fs.copyFileSync(path.join(HERE, 'fixtures', 'dispense-probe.html'), path.join(pkg, 'e2e-fixtures', 'dispense-probe.html'));
  return pkg;
}

async function startNative(terminals, pkg) {
  const journalDir = path.join(tmp, 'ej');
  const text = [
    `terminal_id = "${TERMINAL}"`,
    `business_package = ${JSON.stringify(pkg)}`,
    `journal_dir = ${JSON.stringify(journalDir)}`,
    `state_dir = ${JSON.stringify(path.join(tmp, 'native-state'))}`,
    '[headless]', 'listen = "127.0.0.1:0"',
    '[rules]', 'max_pin_attempts = 3',
    '[self_check]', 'interval_s = 3',
    ...DEVICES.flatMap(([name, cls]) => [`[devices.${name}]`, `class = "${cls}"`, `endpoint = ${JSON.stringify(sock(name))}`,
      ...(name === 'ptr' ? ['critical = false'] : [])]),
    '[online]', `address = "${terminals}"`, 'pinpad = "pin"', 'response_timeout_ms = 5000', '',
  ].join('\n');
  const cfg = path.join(tmp, 'native.toml');
  fs.writeFileSync(cfg, text);
  const line = await spawnListening('terminal-native', bin('terminal-native'), ['--config', cfg, '--headless']);
  const m = line.match(/listening on (http:\/\/\S+?)\/?$/);
  if (!m) throw new Error(`no address in ${line}`);
  return { url: m[1], journalDir };
}

// ------------------------------------------------------------------ the simulated world

async function http(method, url, body) {
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
function sim(device, action) {
  return http('POST', `${panel}/api/devices/${device}/simulator`, action);
}

const SUCCESS = 'COMPLETION_CODE_SUCCESS';

/** Repeats a simulator action until the device accepts it (e.g. keys only while a GetPin runs). */
async function simUntil(device, action, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const r = await sim(device, action);
    if (r.result?.code === SUCCESS) return r;
    if (Date.now() > deadline) throw new Error(`${what}: the device kept refusing: ${JSON.stringify(r.result)}`);
    await delay(100);
  }
}

const insertCard = () => simUntil('idc', { cardReader: { insertCard: { libraryName: 'debit-zhang' } } }, 'insert card');
const takeCard = () => simUntil('idc', { cardReader: { takeCard: {} } }, 'take card');
const takeNotes = () => simUntil('cdm', { cashDispenser: { takeItems: {} } }, 'take notes');
const pressKeys = (keys) => simUntil('pin', { pinPad: { pressKeys: { keys } } }, `keys ${keys.length}`);
const typePin = (digits) => pressKeys([...digits.split(''), 'ENTER']);

async function account(pan) {
  return http('GET', `${hostControl}/state/accounts/${pan}`);
}

async function cdm() {
  return (await http('GET', `${panel}/api/devices/cdm/status`)).cashDispenser;
}

async function idcStatus() {
  return (await http('GET', `${panel}/api/devices/idc/status`)).cardReader;
}

const sumOf = (units, field) => units.reduce((n, u) => n + Number(u[field] ?? 0), 0);

function journal() {
  if (!fs.existsSync(native.journalDir)) return '';
  return fs.readdirSync(native.journalDir).sort()
    .map((f) => fs.readFileSync(path.join(native.journalDir, f), 'utf8')).join('');
}

async function eventually(what, fn, ms = WAIT_MS) {
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

// ------------------------------------------------------------------ the page

const screen = (name) => page.getByTestId(`screen-${name}`);
async function waitScreen(name, ms = WAIT_MS) {
  await screen(name).waitFor({ state: 'visible', timeout: ms });
}
const click = (id) => page.getByTestId(id).click();

async function snap(name) {
  shot += 1;
  // Let the cross-fade finish so the picture shows one screen.
  await delay(250);
  await page.screenshot({ path: path.join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`) });
}

/** Card in, PIN typed: the menu. */
async function startSession(digits = pin) {
  await waitScreen('attract');
  await insertCard();
  await waitScreen('pin');
  await typePin(digits);
  await waitScreen('menu');
}

/** Finish on the result screen, take the card, back to the attract screen. */
async function finishAndTakeCard() {
  await waitScreen('takeCard');
  await takeCard();
  await waitScreen('attract');
}

/** Types digits on the on-screen keyboard and presses OK. */
async function oskType(digits) {
  await waitScreen('entry');
  for (const d of digits) await click(`osk-${d}`);
  await click('osk-ok');
}

/**
 * After a failed case: end whatever session is left (finish, cancel, take card and notes) so the
 * next case starts from the attract screen.
 */
async function recover() {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (await screen('attract').isVisible().catch(() => false)) return;
    if (await screen('oos').isVisible().catch(() => false)) {
      await sim('idc', { openDevice: {} }).catch(() => {});
    }
    for (const id of ['more-time-no', 'result-finish', 'menu-exit', 'pin-cancel', 'osk-cancel', 'amount-back', 'confirm-cancel']) {
      const el = page.getByTestId(id);
      if (await el.isVisible().catch(() => false)) await el.click({ timeout: 1000 }).catch(() => {});
    }
    await sim('idc', { cardReader: { takeCard: {} } }).catch(() => {});
    await sim('cdm', { cashDispenser: { takeItems: {} } }).catch(() => {});
    await delay(500);
  }
  throw new Error('the kiosk did not come back to the attract screen');
}

// ------------------------------------------------------------------ the tests

describe('kiosk end to end', { concurrency: false }, () => {
  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiosk-e2e-'));
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (run.sh does it)`);
    const terminals = await startHostSide();
    await startProxies();
    await loadTmk();
    panel = await startPanel();
    native = await startNative(terminals, writePackage());

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: 30_000,
    });
    const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
    context.setDefaultTimeout(WAIT_MS);
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') console.log(`[kiosk console] ${m.text()}`);
    });
    await page.goto(`${native.url}/`);
  });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(ARTIFACTS, 'zz-last.png') }).catch(() => {});
    if (browser) await browser.close().catch(() => {});
    for (const c of children.reverse()) await stopChild(c);
    if (tmp) {
      for (const f of fs.readdirSync(tmp)) {
        if (f.endsWith('.log')) fs.copyFileSync(path.join(tmp, f), path.join(ARTIFACTS, f));
      }
      if (native && fs.existsSync(native.journalDir)) fs.cpSync(native.journalDir, path.join(ARTIFACTS, 'ej'), { recursive: true });
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    console.log(`# screenshots, logs and the e-journal in ${ARTIFACTS}`);
  });

  afterEach(async () => {
    if (page) await recover();
  });

  it('shows the attract screen in service, in zh-CN and en', async () => {
    await waitScreen('attract');
    await snap('attract-zh');
    assert.match(await screen('attract').innerText(), /请插入您的银行卡/);
    await click('lang-en');
    await page.getByText('Please insert your card').waitFor();
    await snap('attract-en');
    await click('lang-zh-CN');
    await page.getByText('请插入您的银行卡').waitFor();
    assert.equal(await page.getByTestId('terminal-id').innerText(), TERMINAL);
  });

  it('withdraws cash: host debited, cassettes counted down, receipt printed, journaled', async () => {
    const before = (await account(ZHANG)).available;
    const units = (await cdm()).units;
    await waitScreen('attract');
    await insertCard();
    await waitScreen('pin');
    await pressKeys(['1', '2']);
    await eventually('two dots', async () => (await page.locator('[data-testid=pin-echo] .dot.filled').count()) === 2);
    await snap('pin-entry');
    // The page never sees a digit: only the dots.
    assert.doesNotMatch(await screen('pin').innerText(), /12/);
    await pressKeys(['3', '4', 'ENTER']);
    await waitScreen('menu');
    await snap('menu');
    await click('menu-withdrawal');
    await waitScreen('amount');
    await snap('amount');
    await click('amount-30000');
    await waitScreen('takeCash');
    await snap('take-cash');
    await takeNotes();
    await waitScreen('result');
    await snap('result-withdrawal');
    assert.match(await page.getByTestId('result-big').innerText(), /300/);
    await click('result-print');
    await waitScreen('takeCard');
    await snap('take-card');
    await takeCard();
    await waitScreen('attract');

    assert.equal((await account(ZHANG)).available, before - 30000, 'host balance down by 300.00');
    const after = (await cdm()).units;
    assert.equal(sumOf(after, 'count'), sumOf(units, 'count') - 3 + 0, 'three notes left the cassettes');
    assert.equal(sumOf(after, 'presentedCount') - sumOf(units, 'presentedCount'), 3);
    const receipts = await sim('ptr', { receiptPrinter: { listReceipts: { limit: 1 } } });
    const text = receipts.receipts?.receipts?.[0]?.text ?? '';
    assert.match(text, /300/, text);
    assert.match(text, new RegExp(TERMINAL));
    assert.doesNotMatch(text, new RegExp(ZHANG), 'no full PAN on the receipt');
    const ej = journal();
    assert.match(ej, /TXN WITHDRAWAL stan=\d+ amount=30000 CNY rc=00/);
    assert.match(ej, /cdm CashDispenser\.Dispense \S+ SUCCESS/);
    assert.match(ej, /cdm CashDispenser\.Present \S+ SUCCESS/);
    assert.match(ej, /ptr ReceiptPrinter\.PrintText \S+ SUCCESS/);
    assert.match(ej, /KIOSK WITHDRAWAL approved/, 'the page\'s own journal line (journal.write)');
    assert.doesNotMatch(ej, new RegExp(ZHANG));
  });

  it('shows the balance on screen and prints it on request', async () => {
    const { available } = await account(ZHANG);
    await startSession();
    await click('menu-inquiry');
    await waitScreen('result');
    await snap('result-inquiry');
    const shown = await page.getByTestId('result-big').innerText();
    const yuan = (available / 100).toLocaleString('en-US', { minimumFractionDigits: 2 });
    assert.ok(shown.replace(/\s/g, '').includes(yuan), `${shown} shows ${yuan}`);
    await click('result-print');
    await finishAndTakeCard();
    const receipts = await sim('ptr', { receiptPrinter: { listReceipts: { limit: 1 } } });
    assert.ok(receipts.receipts.receipts[0].text.includes(yuan), 'the balance on the receipt');
  });

  it('transfers with the on-screen keyboard', async () => {
    const from = (await account(ZHANG)).available;
    const to = (await account(LI)).available;
    await startSession();
    await click('menu-transfer');
    await waitScreen('entry');
    await oskType('12345');
    await page.getByTestId('entry-problem').getByText(/12-19|12 to 19/).waitFor();
    await click('osk-clear');
    for (const d of LI) await click(`osk-${d}`);
    await snap('transfer-account');
    await click('osk-ok');
    await page.getByTestId('entry-title').getByText(/转账金额|amount to transfer/).waitFor();
    await oskType('500');
    await waitScreen('transferConfirm');
    assert.equal(await page.getByTestId('confirm-account').innerText(), LI);
    await snap('transfer-confirm');
    await click('confirm-ok');
    await waitScreen('result');
    await click('result-finish');
    await finishAndTakeCard();
    assert.equal((await account(ZHANG)).available, from - 50000);
    assert.equal((await account(LI)).available, to + 50000);
  });

  it('changes the PIN (a mismatched confirmation is asked again)', async () => {
    await startSession();
    await click('menu-pinChange');
    await waitScreen('pin');
    await typePin(pin);
    await page.getByTestId('pin-prompt').getByText(/新密码|new PIN/).waitFor();
    await typePin('4321');
    await page.getByTestId('pin-prompt').getByText(/再次|again/).waitFor();
    await typePin('4322');
    await page.getByTestId('pin-problem').waitFor();
    await snap('pin-mismatch');
    await typePin('4321');
    await page.getByTestId('pin-prompt').getByText(/再次|again/).waitFor();
    await typePin('4321');
    await waitScreen('result');
    await click('result-finish');
    await finishAndTakeCard();
    pin = '4321';
    // The new PIN works for the next customer session.
    await startSession('4321');
    await click('menu-inquiry');
    await waitScreen('result');
    await click('result-finish');
    await finishAndTakeCard();
  });

  it('retains the card after three wrong PINs', async () => {
    const retainedBefore = (await idcStatus()).retainCount ?? 0;
    await startSession('9999');
    await click('menu-inquiry');
    for (const left of [2, 1]) {
      await page.getByTestId('pin-tries').getByText(new RegExp(String(left))).waitFor();
      if (left === 2) await snap('pin-wrong');
      await typePin('9999');
    }
    await page.getByTestId('message-card.retainedPin').waitFor();
    await snap('card-retained');
    await waitScreen('attract');
    assert.equal((await idcStatus()).retainCount, retainedBefore + 1, 'the reader retained the card');
    assert.match(journal(), /idc CardReader\.Retain \S+ SUCCESS|CARD RETAINED/);
  });

  it('handles a card jammed on eject: out of service until the self-check resets the reader', async () => {
    await startSession();
    const set = await sim('idc', { setError: { command: 'CardReader.Eject', errorCode: -200, count: 1 } });
    assert.equal(set.result.code, SUCCESS);
    await click('menu-exit');
    // The reader is in a hardware error after the jam, so the retain attempt fails too: the
    // customer is told to call the staff, and the terminal goes out of service.
    await page.locator('[data-testid="message-card.stuck"], [data-testid="message-card.jammed"]').first().waitFor();
    await snap('card-jammed');
    const ej = journal();
    assert.match(ej, /idc CardReader\.Eject \S+ COMMAND_ERROR -200 MEDIAJAM/);
    assert.match(ej, /CARD JAMMED/);
    // terminal-native's self-check ([self_check] interval_s) resets the reader (the terminal is
    // out of service until then), and the kiosk is back.
    await eventually('the self-check reset of the reader', async () => /idc CardReader\.Reset selfcheck-\S+ SUCCESS/.test(journal()), 60_000);
    await waitScreen('attract', 60_000);
  });

  it('retracts notes not taken and reverses the withdrawal', async () => {
    const before = (await account(ZHANG)).available;
    const units = (await cdm()).units;
    await startSession();
    await click('menu-withdrawal');
    await waitScreen('amount');
    await click('amount-other');
    await oskType('250');
    await page.getByTestId('entry-problem').getByText(/100/).waitFor();
    await snap('amount-problem');
    await click('osk-clear');
    await oskType('200');
    await waitScreen('takeCash');
    // Nobody takes the notes: ITEMSNOTTAKEN after cashTakeTimeoutMs, then a retract.
    await page.getByTestId('message-error.cashNotTaken').waitFor({ timeout: WAIT_MS + KIOSK_CONFIG.cashTakeTimeoutMs });
    await finishAndTakeCard();
    const after = (await cdm()).units;
    assert.equal(sumOf(after, 'retractedCount') - sumOf(units, 'retractedCount'), 2, 'two notes retracted');
    assert.match(journal(), /TXN SETTLED ref=\S+ after COMMAND_ERROR -335 ITEMSNOTTAKEN: Retract done; delivered 0 of 20000 CNY: full reversal/);
    await eventually('the host balance restored by the reversal', async () => (await account(ZHANG)).available === before, 30_000);
  });

  it('reverses a withdrawal the host did not answer in time', async () => {
    const before = (await account(ZHANG)).available;
    const units = (await cdm()).units;
    await startSession();
    await http('POST', `${hostControl}/faults`, { delay_ms: 9000 });
    try {
      await click('menu-withdrawal');
      await waitScreen('amount');
      await click('amount-10000');
      await page.getByTestId('message-error.hostTimeout').waitFor({ timeout: 30_000 });
      await snap('host-timeout');
      await finishAndTakeCard();
    } finally {
      await http('DELETE', `${hostControl}/faults`);
    }
    assert.deepEqual((await cdm()).units.map((u) => u.count), units.map((u) => u.count), 'nothing dispensed');
    await eventually('the host balance restored by the reversal', async () => (await account(ZHANG)).available === before, 40_000);
    assert.match(journal(), /TXN REVERSAL/);
  });

  it('asks "more time?" and returns the card when the customer is gone', async () => {
    await startSession();
    await page.getByTestId('more-time').waitFor({ timeout: KIOSK_CONFIG.customerTimeoutMs + WAIT_MS });
    await snap('more-time');
    await click('more-time-yes');
    await page.getByTestId('more-time').waitFor({ state: 'hidden' });
    await waitScreen('menu');
    await page.getByTestId('more-time').waitFor({ timeout: KIOSK_CONFIG.customerTimeoutMs + WAIT_MS });
    await click('more-time-no');
    await finishAndTakeCard();
  });

  it('goes out of service when a critical device is lost, and back', async () => {
    await waitScreen('attract');
    const r = await sim('idc', { closeDevice: {} });
    assert.equal(r.result.code, SUCCESS);
    await waitScreen('oos');
    await snap('out-of-service');
    await sim('idc', { openDevice: {} });
    await waitScreen('attract');
  });

  it('refuses a dispense without an authorisation (DISPENSE_REFUSED), nothing dispensed; data, log, journal through SJSL', async () => {
    const units = (await cdm()).units;
    const probe = await page.context().newPage();
    try {
      await probe.goto(`${native.url}/e2e-fixtures/dispense-probe.html`);
      const result = await probe.evaluate(() => window.probe);
      assert.equal(result.dispense.code, 'DISPENSE_REFUSED', JSON.stringify(result));
      // data / log / journal / typed refusals through SJSL on the real bridge.
      assert.equal(result.servicesError, undefined, result.servicesError);
      assert.deepEqual(result.dataValue, { n: 1, s: 'x' });
      assert.equal(result.dataDeleted, true);
      assert.equal(result.dataAfter, null);
      assert.equal(result.wrongClass, 'INVALID_ARGUMENT');
      assert.equal(result.forbidden, 'FORBIDDEN');
    } finally {
      await probe.close();
    }
    assert.deepEqual((await cdm()).units.map((u) => u.count), units.map((u) => u.count));
    assert.match(journal(), /cdm CashDispenser\.Dispense \S+ REFUSED/);
    assert.match(journal(), /PAGE PROBE page journal line/);
    await waitScreen('attract');
  });

  it('raised no script errors', () => {
    assert.deepEqual(pageErrors, []);
  });
});
