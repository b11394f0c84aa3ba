// Browser end-to-end test of the testers' device panel (docs/device-panel.md).
//
// Starts four real driver-proxies with virtual devices (CardReader, PinPad, CashDispenser,
// ReceiptPrinter) on unix sockets in a temp dir, a real `devsim panel` on a free loopback port,
// opens the page in headless Debian Chromium (playwright-core, never Playwright's own browser
// download) and checks it as a tester would, while `devsim exec` plays the ATM application.
//
// Environment:
//   OPENTELLER_BIN_DIR     where driver-proxy and devsim are (default $CARGO_TARGET_DIR/debug,
//                          else <repo>/target/debug)
//   OPENTELLER_CHROMIUM    the browser (default /usr/bin/chromium)
//   OPENTELLER_ARTIFACTS   where the screenshot and the process logs go (default a temp dir)
//
// Run with: node --test panel.test.mjs (run.sh installs what this needs first).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..', '..');
const BIN_DIR = process.env.OPENTELLER_BIN_DIR
  ? path.resolve(process.env.OPENTELLER_BIN_DIR)
  : path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target', 'debug');
const CHROMIUM = process.env.OPENTELLER_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.OPENTELLER_ARTIFACTS
  ? path.resolve(process.env.OPENTELLER_ARTIFACTS)
  : fs.mkdtempSync(path.join(os.tmpdir(), 'openteller-e2e-artifacts-'));

// How long to wait for something to show on the page or a process to answer.
const WAIT_MS = 10_000;

// The library card of the simulated bank (driver-proxy's default card library).
const LIBRARY_CARD = 'debit-zhang';
const TRACK2 = '6222020200112233445=4912101000000000';
// The same card with the track edited in the dialog (inserted as an ad-hoc card).
const TRACK2_EDITED = '6222020200112233445=4912101000000099';
// The PIN typed on the page keypad; the page must never show it.
const PIN = '7294';

const DEVICES = [
  { name: 'idc', cls: 'CardReader', label: 'Card reader' },
  { name: 'pin', cls: 'PinPad', label: 'PIN pad' },
  { name: 'cdm', cls: 'CashDispenser', label: 'Cash dispenser' },
  { name: 'ptr', cls: 'ReceiptPrinter', label: 'Receipt printer' },
];

// ------------------------------------------------------------------ processes

const children = new Set();
let tmp; // sockets, state dirs, logs, the browser profile
let panel; // { child, url }
let context; // the persistent browser context
let page;
const pageErrors = [];

function bin(name) {
  const file = path.join(BIN_DIR, name);
  if (!fs.existsSync(file)) {
    throw new Error(`${file} is missing: build it first (cargo build -p openteller-driver-proxy -p openteller-device-panel) `
      + 'or point OPENTELLER_BIN_DIR / CARGO_TARGET_DIR at the build');
  }
  return file;
}

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function endpoint(name) {
  return `unix:${path.join(tmp, `${name}.sock`)}`;
}

function logTail(file, lines = 30) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function socketAccepts(socket) {
  return new Promise((resolve) => {
    const c = net.createConnection({ path: socket });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

async function startProxy({ name, cls }) {
  const socket = path.join(tmp, `${name}.sock`);
  const log = path.join(tmp, `${name}.log`);
  const out = fs.openSync(log, 'a');
  const child = track(spawn(bin('driver-proxy'), [
    '--class', cls, '--backend', 'virtual', '--listen', `unix:${socket}`, '--state-dir', path.join(tmp, `${name}-state`),
  ], { stdio: ['ignore', out, out] }));
  fs.closeSync(out);
  const deadline = Date.now() + 30_000;
  while (!(await socketAccepts(socket))) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`driver-proxy ${cls} exited (${child.exitCode ?? child.signalCode}):\n${logTail(log)}`);
    }
    if (Date.now() > deadline) throw new Error(`driver-proxy ${cls} did not listen on ${socket}:\n${logTail(log)}`);
    await delay(50);
  }
}

async function startPanel() {
  const log = path.join(tmp, 'panel.log');
  const err = fs.openSync(log, 'a');
  const args = ['panel', '--listen', '127.0.0.1:0'];
  for (const d of DEVICES) args.push('--device', `${d.name}=${endpoint(d.name)}`);
  const child = track(spawn(bin('devsim'), args, { stdio: ['ignore', 'pipe', err] }));
  fs.closeSync(err);
  const lines = readline.createInterface({ input: child.stdout });
  const first = new Promise((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code, signal) => reject(new Error(`devsim panel exited (${code ?? signal}):\n${logTail(log)}`)));
  });
  const line = await withTimeout(first, WAIT_MS, () => `devsim panel did not start:\n${logTail(log)}`);
  const m = /^devsim panel listening on (http:\/\/\S+?)\/?$/.exec(line.trim());
  if (!m) throw new Error(`unexpected first line of devsim panel: ${JSON.stringify(line)}`);
  return { child, url: m[1] };
}

// `devsim --device ENDPOINT exec COMMAND` in the background: the ATM application's side.
function exec(device, command) {
  const child = track(spawn(bin('devsim'), ['--device', endpoint(device), 'exec', JSON.stringify(command)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const done = once(child, 'close').then(([code, signal]) => {
    const lines = stdout.split('\n').filter(Boolean).map((l) => {
      try { return JSON.parse(l); } catch { return { unparsed: l }; }
    });
    const last = lines.findLast((l) => l.completion) || null;
    return { code, signal, stdout, stderr, lines, completion: last && last.completion };
  });
  const describeRun = (r) => `exit ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  return {
    child,
    describe: describeRun,
    // The run's outcome, failing if it takes longer than `ms`.
    result: (ms = WAIT_MS) => withTimeout(done, ms, () => `devsim exec ${JSON.stringify(command)} did not finish in ${ms} ms\nstdout: ${stdout}\nstderr: ${stderr}`),
    // Waits for `promise` (something on the page) but fails at once, with the output, if the
    // exec ends before it.
    whileRunning: (promise) => Promise.race([
      promise,
      done.then((r) => { throw new Error(`devsim exec ended early:\n${describeRun(r)}`); }),
    ]),
  };
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const quit = await Promise.race([exited.then(() => true), delay(2000).then(() => false)]);
  if (!quit) {
    child.kill('SIGKILL');
    await exited;
  }
}

// Last resort if the runner dies without after(): no process outlives the test.
process.once('exit', () => {
  for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
});

// ------------------------------------------------------------------ helpers

async function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(typeof message === 'function' ? message() : message)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Polls `probe` (every 100 ms) until it returns something truthy.
async function until(what, probe, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await delay(100);
  }
}

// Waits until `locator` is visible with text matching `re`; the error tells what it shows.
async function expectText(locator, re, what, ms = WAIT_MS) {
  try {
    await locator.filter({ hasText: re }).first().waitFor({ state: 'visible', timeout: ms });
  } catch {
    const now = await locator.allInnerTexts().catch((e) => [`(${e.message})`]);
    throw new Error(`${what}: expected ${re}, the page shows ${JSON.stringify(now)}`);
  }
}

function pane(name) {
  return page.getByTestId(`pane-${name}`);
}

// The value of a row of a device's Status list (e.g. "Media").
function statusValue(name, key) {
  return pane(name).getByTestId('status').locator(`dt:text-is("${key}") + dd`);
}

async function openTab(name) {
  await page.getByTestId(`tab-${name}`).click();
  await pane(name).waitFor({ state: 'visible' });
}

// The result line under Status: the completion of the tester's last action.
async function expectResult(name, action, re) {
  await expectText(pane(name).getByTestId('result'), new RegExp(`^${action} — ${re.source}`), `${name} result line after ${action}`);
}

function assertSuccess(run, r) {
  assert.equal(r.code, 0, run.describe(r));
  assert.equal(r.completion?.completion?.code, 'COMPLETION_CODE_SUCCESS', run.describe(r));
}

// A card read waiting for the customer: the dialog must open by itself.
async function startRead(requestId) {
  const run = exec('idc', { requestId, timeoutMs: 20_000, cardReader: { readRawData: { track1: true, track2: true } } });
  const dialog = page.locator('#insert-dialog');
  await run.whileRunning(dialog.waitFor({ state: 'visible' }));
  await run.whileRunning(expectText(page.locator('#insert-wait'), /The reader is waiting for a card/, 'InsertCard dialog note'));
  assert.match(await page.locator('#insert-title').innerText(), /idc/);
  await page.locator(`#insert-select option[value="${LIBRARY_CARD}"]`).waitFor({ state: 'attached' });
  await page.locator('#insert-select').selectOption(LIBRARY_CARD);
  await until('Track 2 filled from the library card', async () => (await page.inputValue('#insert-t2')) === TRACK2);
  return run;
}

async function insertAndRead(run) {
  await page.locator('#insert-go').click();
  await page.locator('#insert-dialog').waitFor({ state: 'hidden' });
  const r = await run.result();
  assertSuccess(run, r);
  await expectText(statusValue('idc', 'Media'), /^PRESENT$/, 'card reader media after the read');
  return r;
}

async function ejectToSlot() {
  const run = exec('idc', { cardReader: { eject: {} } });
  assertSuccess(run, await run.result());
  await expectText(statusValue('idc', 'Media'), /^ENTERING$/, 'card reader media after eject');
  await expectText(pane('idc').getByTestId('take-note'), /The card waits in the slot/, 'TakeCard note');
}

// ------------------------------------------------------------------ the test

describe('device panel in headless Chromium', { timeout: 120_000 }, () => {
  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ot-e2e-'));
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    bin('driver-proxy');
    bin('devsim');
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (run.sh does it)`);
    await Promise.all(DEVICES.map(startProxy));
    panel = await startPanel();

    context = await chromium.launchPersistentContext(path.join(tmp, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1400, height: 1000 },
      timeout: 30_000,
    });
    context.setDefaultTimeout(WAIT_MS);
    page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') console.log(`[page console] ${m.text()}`); });
    await page.goto(`${panel.url}/`);
  });

  after(async () => {
    if (page) {
      await page.screenshot({ path: path.join(ARTIFACTS, 'device-panel.png'), fullPage: true }).catch(() => {});
    }
    if (context) await context.close().catch(() => {});
    await Promise.all([...children].map(stopChild));
    if (tmp) {
      for (const f of fs.readdirSync(tmp).filter((f) => f.endsWith('.log'))) {
        fs.copyFileSync(path.join(tmp, f), path.join(ARTIFACTS, f));
      }
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    console.log(`# screenshot and logs in ${ARTIFACTS}`);
  });

  it('shows the four devices connected with their status', async () => {
    await expectText(page.locator('#panel-conn'), /^live$/, 'panel event stream');
    for (const d of DEVICES) {
      const tab = page.getByTestId(`tab-${d.name}`);
      await expectText(tab, new RegExp(d.label), `tab ${d.name}`);
      // Green dot: connected and ONLINE.
      await until(`the ${d.name} tab's dot to turn green`, async () => /\bok\b/.test(await tab.locator('.dot').getAttribute('class')));
      await openTab(d.name);
      await expectText(pane(d.name).getByTestId('device-state'), /^ONLINE$/, `${d.name} device state`);
      await expectText(statusValue(d.name, 'Class'), new RegExp(`^${d.label}$`), `${d.name} class`);
      await expectText(statusValue(d.name, 'Endpoint'), new RegExp(`${d.name}\\.sock$`), `${d.name} endpoint`);
      await expectText(pane(d.name).getByTestId('event-log'), /Connected/, `${d.name} event log`);
      assert.equal(await pane(d.name).locator('.banner').isVisible(), false, `${d.name}: no "not connected" banner`);
      if (d.name === 'idc') await expectText(statusValue('idc', 'Media'), /^NOT_PRESENT$/, 'card reader media');
      if (d.name === 'pin') await expectText(statusValue('pin', 'Entry'), /^idle$/, 'PIN pad entry');
      if (d.name === 'ptr') await expectText(statusValue('ptr', 'Paper'), /^FULL$/, 'printer paper');
    }
  });

  describe('card reader (seed 001 §12)', () => {
    let failed = false;
    const step = (name, fn) => it(name, async (t) => {
      if (failed) return t.skip('an earlier card reader step failed');
      try { await fn(); } catch (e) { failed = true; throw e; }
    });

    step('InsertCard dialog opens by itself; a library card is read with its track 2', async () => {
      await openTab('idc');
      const run = await startRead('e2e-read-1');
      assert.equal(await page.locator('#insert-t2').isEditable(), true, 'Track 2 is editable');
      assert.equal(await page.locator('#insert-go').isEnabled(), true, 'InsertCard is enabled while a read waits');
      const r = await insertAndRead(run);
      assert.equal(r.completion.cardReader?.readRawData?.track2?.data, TRACK2, run.describe(r));
      assert.equal(r.completion.cardReader?.readRawData?.track2?.status, 'DATA_STATUS_OK', run.describe(r));
      assert.ok(r.lines.some((l) => l.event?.cardReader?.mediaInserted), `a MediaInserted event\n${run.describe(r)}`);
      await expectText(pane('idc').getByTestId('event-log').locator('li'), /CardReader\.ReadRawData \(e2e-read-1\) → SUCCESS/, 'event log');
    });

    step('eject, then Take Away Card: the card leaves the slot', async () => {
      await ejectToSlot();
      await pane('idc').getByRole('button', { name: 'Take Away Card', exact: true }).click();
      await expectResult('idc', 'TakeCard', /SUCCESS/);
      await expectText(statusValue('idc', 'Media'), /^NOT_PRESENT$/, 'media after Take Away Card');
      await expectText(pane('idc').getByTestId('event-log').locator('li'), /cardReader\.mediaRemoved/, 'MediaRemoved in the event log');
    });

    step('edited tracks are inserted as typed; Not Take Card lets the reader retain the card', async () => {
      const retain = pane('idc').getByTestId('retain-timeout');
      await retain.fill('300');
      await pane('idc').getByRole('button', { name: 'Set', exact: true }).click();
      await expectResult('idc', 'SetRetainTimeout', /SUCCESS/);

      const run = await startRead('e2e-read-2');
      await page.locator('#insert-t2').fill(TRACK2_EDITED);
      const r = await insertAndRead(run);
      assert.equal(r.completion.cardReader?.readRawData?.track2?.data, TRACK2_EDITED, run.describe(r));

      await ejectToSlot();
      await pane('idc').getByRole('button', { name: 'Not Take Card', exact: true }).click();
      await expectResult('idc', 'NotTakeCard', /SUCCESS/);
      await expectText(statusValue('idc', 'Media'), /^NOT_PRESENT$/, 'media once the card is retained');
      await expectText(statusValue('idc', 'Retain bin'), /\(1\/\d+\)$/, 'retain count');
      await expectText(pane('idc').getByTestId('event-log').locator('li'), /cardReader\.cardAction RETAINED/, 'retained card in the event log');
    });

    step('ErrorSimulating: MEDIAJAM preset on CardReader.Eject fails the next eject', async () => {
      const p = pane('idc');
      await p.getByTestId('error-command').selectOption('CardReader.Eject');
      await p.getByTestId('error-code').selectOption('-200');
      await p.getByRole('button', { name: 'Set error', exact: true }).click();
      await expectResult('idc', 'SetError', /SUCCESS/);

      const run = exec('idc', { requestId: 'e2e-jam', cardReader: { eject: {} } });
      const r = await run.result();
      assert.equal(r.code, 1, run.describe(r));
      assert.equal(r.completion?.completion?.errorName, 'MEDIAJAM', run.describe(r));
      assert.equal(r.completion?.completion?.errorCode, -200, run.describe(r));
      await expectText(p.getByTestId('event-log').locator('li'), /CardReader\.Eject \(e2e-jam\) → COMMAND_ERROR · MEDIAJAM \(-200\)/, 'jam in the event log');
      await expectText(p.getByTestId('device-state'), /^HARDWARE_ERROR$/, 'device state after the jam');

      // The Status dialog brings it back.
      await p.getByTestId('state-device').selectOption('DEVICE_STATE_ONLINE');
      await p.getByRole('button', { name: 'Apply', exact: true }).click();
      await expectResult('idc', 'SetDeviceState', /SUCCESS/);
      await expectText(p.getByTestId('device-state'), /^ONLINE$/, 'device state after Status → ONLINE');
    });
  });

  it('PIN pad: keypad digits reach a GetPin, the page shows them only masked', async () => {
    await openTab('pin');
    const p = pane('pin');
    // Watch every change of the page during the entry for the PIN or an unmasked digit.
    await page.evaluate(({ pin, strip }) => {
      window.__pinLeaks = [];
      const token = new RegExp(`(^|\\D)${pin}(\\D|$)`);
      const check = () => {
        let text = document.body.innerText;
        for (const s of strip) text = text.split(s).join('');
        if (token.test(text)) window.__pinLeaks.push('the PIN in the page text');
        for (const i of document.querySelectorAll('input, textarea')) {
          if (i.value.includes(pin)) window.__pinLeaks.push(`the PIN in an input: ${i.outerHTML}`);
        }
        const echo = document.querySelector('[data-testid="pin-echo"]');
        if (echo && /[^●\s]/.test(echo.textContent)) window.__pinLeaks.push(`unmasked echo: ${echo.textContent}`);
        for (const pre of document.querySelectorAll('pre')) {
          if (/"key":\s*"\d"/.test(pre.textContent)) window.__pinLeaks.push(`a digit key in a notice: ${pre.textContent}`);
        }
      };
      window.__pinObserver = new MutationObserver(check);
      window.__pinObserver.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
      check();
    }, { pin: PIN, strip: [tmp] });

    const run = exec('pin', { requestId: 'e2e-pin', timeoutMs: 20_000, pinPad: { getPin: { minLength: 4, maxLength: 6 } } });
    await run.whileRunning(expectText(statusValue('pin', 'Entry'), /^active$/, 'PIN entry active'));
    const echo = p.getByTestId('pin-echo');
    for (const [i, digit] of [...PIN].entries()) {
      await p.getByRole('button', { name: digit, exact: true }).click();
      await run.whileRunning(until(`${i + 1} masked digits`, async () => (await echo.innerText()).trim() === '●'.repeat(i + 1)));
    }
    await p.getByRole('button', { name: 'ENTER', exact: true }).click();
    const r = await run.result();
    assertSuccess(run, r);
    assert.equal(r.completion.pinPad?.getPin?.digits, 4, run.describe(r));
    assert.equal(r.completion.pinPad?.getPin?.completion, 'ENTRY_COMPLETION_ENTER', run.describe(r));
    const keys = r.lines.map((l) => l.event?.pinPad?.keyPressed?.key).filter(Boolean);
    assert.deepEqual(keys, ['*', '*', '*', '*'], 'the ATM sees masked key presses');
    await expectText(statusValue('pin', 'Entry'), /^idle$/, 'PIN entry after ENTER');
    await expectText(p.getByTestId('event-log').locator('li'), /PinPad\.GetPin \(e2e-pin\) → SUCCESS/, 'GetPin in the event log');

    const leaks = await page.evaluate(() => { window.__pinObserver.disconnect(); return window.__pinLeaks; });
    assert.deepEqual(leaks, [], 'the page never showed the PIN');
  });

  it('cash dispenser: the cassette table shows 6 units', async () => {
    await openTab('cdm');
    const rows = pane('cdm').getByTestId('cash-units').locator('tr');
    await until('6 cash unit rows', async () => (await rows.count()) === 6);
    const cells = await rows.evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.innerText.trim())));
    assert.deepEqual(cells.map((c) => c[0]), ['1', '2', '3', '4', '5', '6'], JSON.stringify(cells));
    assert.deepEqual(cells.map((c) => c[2]), ['BILL_CASSETTE', 'BILL_CASSETTE', 'BILL_CASSETTE', 'BILL_CASSETTE', 'REJECT', 'RETRACT'], JSON.stringify(cells));
    assert.equal(cells[0][4], '100.00', `denomination of unit 1: ${JSON.stringify(cells[0])}`);
    await expectText(pane('cdm').getByText(/^Output position:/), /EMPTY/, 'output position');
  });

  it('receipt printer: a printed receipt appears in the list', async () => {
    await openTab('ptr');
    const marker = `E2E RECEIPT ${process.pid}-${Date.now()}`;
    const run = exec('ptr', { requestId: 'e2e-print', receiptPrinter: { printText: { text: `${marker}\nAMOUNT   100.00 CNY\nTHANK YOU` } } });
    const r = await run.result();
    assertSuccess(run, r);
    const id = r.completion.receiptPrinter?.print?.receiptId;
    assert.ok(id, run.describe(r));
    const receipt = pane('ptr').getByTestId('receipts').locator('.receipt', { hasText: marker });
    await receipt.waitFor({ state: 'visible' });
    assert.match(await receipt.innerText(), new RegExp(`${id}[\\s\\S]*AMOUNT {3}100\\.00 CNY[\\s\\S]*THANK YOU`));
    await expectText(statusValue('ptr', 'Printed'), /^1$/, 'receipts printed');
  });

  it('the page raised no script errors', async () => {
    await openTab('idc');
    await page.screenshot({ path: path.join(ARTIFACTS, 'device-panel-idc.png'), fullPage: true });
    assert.deepEqual(pageErrors, []);
  });
});
