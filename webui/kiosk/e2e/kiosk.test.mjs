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
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import {
  ARTIFACTS, CHROMIUM, KIOSK_CONFIG, LI, SUCCESS, TERMINAL, WAIT_MS, ZHANG,
  account, cdm, eventually, http, hostControl, idcStatus, insertCard, journal, native, pressKeys,
  sim, startWorld, stopWorld, sumOf, takeCard, takeNotes, typePin,
} from './world.mjs';

let browser;
let page;
let pin = '1234';
const pageErrors = [];
let shot = 0;

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
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (run.sh does it)`);
    await startWorld({ kioskConfig: KIOSK_CONFIG });

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
    await stopWorld();
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
