// The kiosk in terminal-native's windowed host (tao + wry, WebKitGTK) under Xvfb: the same
// world as kiosk.test.mjs, but the package is served from openteller://localhost/ and SJSL talks
// over wry's IPC (window.ipc.postMessage / window.__opentellerReceive) instead of the WebSocket.
// There is no DOM access here, so the customer only uses the devices (card, PIN pad) and the
// kiosk's own timers: sign-on, card read, PIN, the idle "more time?" running out, the card back;
// then a second customer cancels on the PIN pad. The e-journal shows every step.
//
// Needs a terminal-native built with the window feature
// (`cargo build -p openteller-terminal-native --features window`) named by
// OPENTELLER_WINDOWED_BIN, Xvfb and WebKitGTK 4.1; skipped without OPENTELLER_WINDOWED_BIN.
// A screenshot of the screen (xwd + ImageMagick's convert, when installed) goes to ARTIFACTS.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import {
  ARTIFACTS, KIOSK_CONFIG, children, eventually, insertCard, journal, native, pressKeys, startWorld, stopWorld,
  takeCard, typePin,
} from './world.mjs';

const run = promisify(execFile);
const BINARY = process.env.OPENTELLER_WINDOWED_BIN;

/** Xvfb on the first free display from :90. */
async function startXvfb() {
  for (let n = 90; n < 190; n += 1) {
    if (fs.existsSync(`/tmp/.X11-unix/X${n}`) || fs.existsSync(`/tmp/.X${n}-lock`)) continue;
    const child = spawn('Xvfb', [`:${n}`, '-screen', '0', '1024x768x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
    children.push(child);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && child.exitCode === null) {
      if (fs.existsSync(`/tmp/.X11-unix/X${n}`)) return `:${n}`;
      await delay(50);
    }
    child.kill('SIGKILL');
  }
  throw new Error('no free X display for Xvfb in :90..:190');
}

let display;

async function screenshot(name) {
  const xwd = path.join(ARTIFACTS, `${name}.xwd`);
  try {
    await run('xwd', ['-root', '-silent', '-display', display, '-out', xwd]);
    await run('convert', [xwd, path.join(ARTIFACTS, `${name}.png`)]);
  } catch {
    // xwd / convert not installed: no picture, the journal tells the story.
  } finally {
    fs.rmSync(xwd, { force: true });
  }
}

describe('kiosk in the windowed host (wry IPC)', { skip: BINARY ? false : 'OPENTELLER_WINDOWED_BIN is not set', concurrency: false }, () => {
  before(async () => {
    display = await startXvfb();
    await startWorld({
      kioskConfig: { ...KIOSK_CONFIG, customerTimeoutMs: 4000, moreTimeMs: 3000 },
      display,
      binary: path.resolve(BINARY),
    });
  });

  after(async () => {
    await stopWorld();
  });

  it('signs on, reads the card and takes the PIN over IPC; an idle customer gets the card back', async () => {
    await eventually('the kiosk\'s sign-on', () => /TXN SIGN-ON stan=\d+ rc=00/.test(journal()), 60_000);
    await insertCard();
    await typePin('1234');
    await eventually('the page\'s session line', () => /PAGE KIOSK SESSION card=622202\*+3445/.test(journal()));
    assert.match(journal(), /pin PinPad\.GetPin \S+ SUCCESS/);
    await delay(1000);
    await screenshot('windowed-menu');
    // Nobody chooses: "more time?" after 4 s, no answer within 3 s: the card comes back.
    await takeCard();
    assert.match(journal(), /idc CardReader\.Eject \S+ SUCCESS/);
  });

  it('a customer who cancels on the PIN pad gets the card back', async () => {
    await insertCard();
    await eventually('the PIN entry', async () => {
      await pressKeys(['1', 'CANCEL']);
      return true;
    });
    await takeCard();
    const ej = journal();
    assert.equal((ej.match(/PAGE KIOSK SESSION/g) || []).length, 2, ej);
    assert.equal(native.child.exitCode, null, 'the windowed host is still running');
  });
});
