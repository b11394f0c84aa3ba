// Unit tests of the SJSL protocol layer and the SJSBL components over a fake transport that
// plays the host side of the bridge protocol (docs/terminal-native.md). The real bridge is
// exercised by e2e/kiosk.test.mjs.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Sjsl, SjslError, ipcTransport, webSocketTransport } from '../src/sjsl/index.js';
import { createSjsbl, validateAmount } from '../src/sjsbl/index.js';

/** A transport whose host side is a function of the request; it records what was sent. */
function fakeTransport(handler) {
  const t = {
    kind: 'fake',
    isOpen: true,
    onMessage: null,
    onState: null,
    sent: [],
    send(text) {
      if (!t.isOpen) return false;
      const msg = JSON.parse(text);
      t.sent.push(msg);
      queueMicrotask(() => handler(msg, t));
      return true;
    },
    close() {
      t.isOpen = false;
    },
    /** host → page */
    push(obj) {
      t.onMessage(JSON.stringify(obj));
    },
    drop() {
      t.isOpen = false;
      t.onState('closed');
    },
    reopen() {
      t.isOpen = true;
      t.onState('open');
    },
  };
  return t;
}

const DEVICES = [
  { name: 'idc', class: 'CardReader' },
  { name: 'pin', class: 'PinPad' },
  { name: 'cdm', class: 'CashDispenser' },
  { name: 'ptr', class: 'ReceiptPrinter' },
];

/** A host answering device.list and delegating the rest. */
function host(rest) {
  return (msg, t) => {
    if (msg.method === 'device.list') return t.push({ id: msg.id, result: DEVICES });
    return rest(msg, t);
  };
}

const ok = (body) => ({ completion: { code: 'COMPLETION_CODE_SUCCESS' }, ...body });

describe('SJSL protocol', () => {
  it('matches answers by id in completion order', async () => {
    const held = [];
    const t = fakeTransport((msg, tr) => {
      held.push(msg);
      if (held.length === 2) {
        tr.push({ id: held[1].id, result: 'second' });
        tr.push({ id: held[0].id, result: 'first' });
      }
    });
    const s = new Sjsl(t);
    const [a, b] = await Promise.all([s.bridge.call('x.one', {}), s.bridge.call('x.two', {})]);
    assert.equal(a, 'first');
    assert.equal(b, 'second');
    assert.deepEqual(t.sent.map((m) => m.method), ['x.one', 'x.two']);
    assert.notEqual(t.sent[0].id, t.sent[1].id);
  });

  it('turns bridge errors into typed SjslErrors', async () => {
    const t = fakeTransport((msg, tr) =>
      tr.push({ id: msg.id, error: { code: 'COMMAND_FAILED', message: 'jam', completion: 'COMMAND_ERROR', xfsCode: -200, data: { k: 1 } } }));
    const s = new Sjsl(t);
    await assert.rejects(s.bridge.call('device.execute', {}), (e) => {
      assert.ok(e instanceof SjslError);
      assert.equal(e.code, 'COMMAND_FAILED');
      assert.equal(e.completion, 'COMMAND_ERROR');
      assert.equal(e.xfsCode, -200);
      assert.deepEqual(e.data, { k: 1 });
      assert.equal(e.message, 'jam');
      return true;
    });
  });

  it('times out on the page side and drops the late answer', async () => {
    let late;
    const t = fakeTransport((msg) => {
      late = msg;
    });
    const s = new Sjsl(t);
    await assert.rejects(s.bridge.call('txn.inquiry', {}, { timeoutMs: 20 }), { code: 'TIMEOUT' });
    t.push({ id: late.id, result: 'too late' }); // must not throw or resolve anything
    assert.equal(s.bridge.pending.size, 0);
  });

  it('fails pending calls with DISCONNECTED and waits for the link before sending', async () => {
    const t = fakeTransport(() => {});
    const s = new Sjsl(t, { connectWaitMs: 1000 });
    const pending = s.bridge.call('txn.withdrawal', { amount: 1, currency: 'CNY' });
    await new Promise((r) => setTimeout(r, 5));
    t.drop();
    await assert.rejects(pending, { code: 'DISCONNECTED' });
    // While down, a call waits for the link and goes out once it is back.
    t.sent.length = 0;
    const later = s.bridge.call('terminal.status');
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(t.sent.length, 0, 'nothing sent while down');
    t.reopen();
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(t.sent.length, 1);
    t.push({ id: t.sent[0].id, result: { inService: true } });
    assert.deepEqual(await later, { inService: true });
  });

  it('refuses an already aborted call without sending', async () => {
    const t = fakeTransport(() => {});
    const s = new Sjsl(t);
    const c = new AbortController();
    c.abort();
    await assert.rejects(s.bridge.call('x', {}, { signal: c.signal }), { code: 'ABORTED' });
    assert.equal(t.sent.length, 0);
  });

  it('delivers events to subscribers until they unsubscribe, survives a throwing one', async () => {
    const t = fakeTransport(() => {});
    const s = new Sjsl(t);
    const seen = [];
    const off = s.terminal.onStatus((st) => seen.push(st.inService));
    s.on('terminal.status', () => {
      throw new Error('subscriber bug');
    });
    const errorLog = console.error;
    console.error = () => {};
    try {
      t.push({ event: 'terminal.status', data: { inService: false } });
      off();
      t.push({ event: 'terminal.status', data: { inService: true } });
      t.onMessage('not json');
    } finally {
      console.error = errorLog;
    }
    assert.deepEqual(seen, [false]);
  });
});

describe('SJSL devices', () => {
  it('sends device.execute in the class form, unwraps the result and routes events', async () => {
    const t = fakeTransport(host((msg, tr) => {
      assert.equal(msg.method, 'device.execute');
      const { requestId } = msg.params;
      tr.push({ event: 'device.event', data: { device: 'idc', requestId, event: { cardReader: { mediaInserted: {} } } } });
      tr.push({ event: 'device.event', data: { device: 'idc', requestId: 'other', event: { cardReader: { mediaRemoved: {} } } } });
      tr.push({ id: msg.id, result: ok({ requestId, cardReader: { readRawData: { track2: { status: 'DATA_STATUS_OK', data: '622202******3445' } } } }) });
    }));
    const s = new Sjsl(t);
    const events = [];
    const r = await s.device('idc').readRawData({ track2: true }, { timeoutMs: 5000, onEvent: (_p, n) => events.push(n) });
    const exec = t.sent.find((m) => m.method === 'device.execute');
    assert.deepEqual(exec.params.command, { cardReader: { readRawData: { track2: true } } });
    assert.equal(exec.params.timeoutMs, 5000);
    assert.match(exec.params.requestId, /^idc-[a-z0-9]+-\d+$/);
    assert.equal(r.result.track2.data, '622202******3445');
    assert.deepEqual(events, ['mediaInserted'], 'only this command\'s events');
  });

  it('refuses a command of another class without sending it', async () => {
    const t = fakeTransport(host(() => assert.fail('nothing but device.list may be sent')));
    const s = new Sjsl(t);
    await assert.rejects(s.device('idc').dispense({ amount: 100 }), { code: 'INVALID_ARGUMENT' });
    await assert.rejects(s.device('nope').eject(), { code: 'UNKNOWN_DEVICE' });
  });

  it('cancels through device.cancel when the signal fires', async () => {
    let exec;
    const t = fakeTransport(host((msg, tr) => {
      if (msg.method === 'device.execute') exec = msg;
      if (msg.method === 'device.cancel') {
        assert.equal(msg.params.requestId, exec.params.requestId);
        tr.push({ id: msg.id, result: { canceled: [msg.params.requestId] } });
        tr.push({ id: exec.id, error: { code: 'COMMAND_FAILED', message: 'canceled', completion: 'CANCELED' } });
      }
    }));
    const s = new Sjsl(t);
    const c = new AbortController();
    const p = s.device('pin').getPin({ minLength: 4 }, { signal: c.signal });
    await new Promise((r) => setTimeout(r, 10));
    c.abort();
    await assert.rejects(p, (e) => e.canceled && e.completion === 'CANCELED');
  });

  it('passes the authorisation of a dispense', async () => {
    const t = fakeTransport(host((msg, tr) => tr.push({ id: msg.id, error: { code: 'DISPENSE_REFUSED', message: 'no authorisation' } })));
    const s = new Sjsl(t);
    await assert.rejects(s.device('cdm').dispense({ currency: 'CNY', amount: 100 }, { authorization: 'R1' }), { code: 'DISPENSE_REFUSED' });
    assert.equal(t.sent.at(-1).params.authorization, 'R1');
  });

  it('routes notices by device and event name; waitFor times out', async () => {
    const t = fakeTransport(() => {});
    const s = new Sjsl(t);
    const got = s.device('idc').waitFor('mediaRemoved', { timeoutMs: 1000 });
    t.push({ event: 'device.notice', data: { device: 'cdm', sequence: 1, event: { cardReader: { mediaRemoved: {} } } } });
    t.push({ event: 'device.notice', data: { device: 'idc', sequence: 2, event: { cardReader: { mediaRemoved: {} } } } });
    assert.equal((await got).name, 'mediaRemoved');
    await assert.rejects(s.device('idc').waitFor('mediaRemoved', { timeoutMs: 10 }), { code: 'TIMEOUT' });
  });
});

describe('SJSL transports', () => {
  it('IPC: posts requests and receives through window.__opentellerReceive', async () => {
    const posted = [];
    const win = { ipc: { postMessage: (text) => posted.push(JSON.parse(text)) } };
    const s = new Sjsl(ipcTransport(win));
    const p = s.terminal.status();
    await new Promise((r) => setTimeout(r, 1));
    assert.equal(posted[0].method, 'terminal.status');
    win.__opentellerReceive(JSON.stringify({ id: posted[0].id, result: { inService: true } }));
    assert.deepEqual(await p, { inService: true });
  });

  it('WebSocket: reconnects with back-off after the socket closes', async () => {
    const sockets = [];
    class FakeWS {
      constructor(url) {
        this.url = url;
        sockets.push(this);
        setTimeout(() => this.onopen?.(), 1);
      }
      send() {}
      close() {
        this.onclose?.();
      }
    }
    const t = webSocketTransport('ws://h/bridge', { WebSocketImpl: FakeWS, minBackoffMs: 5 });
    const states = [];
    t.onState = (s) => states.push(s);
    await new Promise((r) => setTimeout(r, 10));
    sockets[0].onclose();
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(sockets.length, 2, 'a second socket after the first closed');
    assert.equal(sockets[1].url, 'ws://h/bridge');
    assert.deepEqual(states, ['open', 'closed', 'open']);
    t.close();
  });
});

describe('SJSBL', () => {
  const config = { devices: { idc: 'idc', pin: 'pin', cdm: 'cdm', ptr: 'ptr' }, currency: 'CNY' };

  it('validates amounts', () => {
    const rules = { multipleOf: 10000, min: 10000, max: 300000 };
    assert.equal(validateAmount(20000, rules), null);
    assert.equal(validateAmount(25000, rules), 'NOT_MULTIPLE');
    assert.equal(validateAmount(400000, rules), 'TOO_LARGE');
    assert.equal(validateAmount(0, rules), 'NOT_A_NUMBER');
    assert.equal(validateAmount(Number.NaN, rules), 'NOT_A_NUMBER');
  });

  it('enterPin echoes digit counts and reports a customer cancel', async () => {
    const t = fakeTransport(host((msg, tr) => {
      const { requestId } = msg.params;
      for (const [k, n] of [['*', 1], ['*', 2], ['CANCEL', 2]]) {
        tr.push({ event: 'device.event', data: { device: 'pin', requestId, event: { pinPad: { keyPressed: { key: k, digitsEntered: n } } } } });
      }
      tr.push({ id: msg.id, result: ok({ requestId, pinPad: { getPin: { digits: 2, completion: 'ENTRY_COMPLETION_CANCEL' } } }) });
    }));
    const b = createSjsbl(new Sjsl(t), config);
    const echo = [];
    await assert.rejects(b.enterPin({ onKey: (n) => echo.push(n) }), { code: 'CUSTOMER_CANCEL' });
    assert.deepEqual(echo, [1, 2, 2]);
  });

  it('dispenseCash leaves notes not taken to the host\'s settler (no page retract)', async () => {
    const t = fakeTransport(host((msg, tr) => {
      if (msg.method === 'journal.write') return tr.push({ id: msg.id, result: {} });
      const cmd = msg.params.command.cashDispenser;
      assert.equal(msg.params.authorization, 'REF1');
      if (cmd.dispense) {
        assert.equal(cmd.dispense.present, false);
        return tr.push({ id: msg.id, result: ok({ cashDispenser: { dispense: { dispensed: { items: [{ unitNumber: 1, count: 3 }] } } } }) });
      }
      if (cmd.present) return tr.push({ id: msg.id, error: { code: 'COMMAND_FAILED', message: 'not taken', completion: 'COMMAND_ERROR', xfsCode: -335 } });
      assert.fail(`unexpected ${JSON.stringify(cmd)}`);
    }));
    const b = createSjsbl(new Sjsl(t), config);
    const r = await b.dispenseCash({ amount: 30000, authorization: 'REF1', takeTimeoutMs: 100 });
    assert.deepEqual(r, { taken: false, notes: 3 });
    const cmds = t.sent.filter((m) => m.method === 'device.execute').map((m) => Object.keys(m.params.command.cashDispenser)[0]);
    assert.deepEqual(cmds, ['dispense', 'present']);
    assert.match(t.sent.find((m) => m.method === 'journal.write').params.text, /NOT TAKEN ref=REF1/);
  });

  it('dispenseCash passes other failures on', async () => {
    const t = fakeTransport(host((msg, tr) =>
      tr.push({ id: msg.id, error: { code: 'COMMAND_FAILED', message: 'cannot', completion: 'COMMAND_ERROR', xfsCode: -306 } })));
    const b = createSjsbl(new Sjsl(t), config);
    await assert.rejects(b.dispenseCash({ amount: 30000, authorization: 'REF1' }), { xfsCode: -306 });
  });

  it('returnCard retains a card whose eject jammed', async () => {
    const t = fakeTransport(host((msg, tr) => {
      if (msg.method === 'journal.write') return tr.push({ id: msg.id, result: {} });
      const cmd = msg.params.command.cardReader;
      if (cmd.eject) return tr.push({ id: msg.id, error: { code: 'COMMAND_FAILED', message: 'jam', completion: 'COMMAND_ERROR', xfsCode: -200 } });
      if (cmd.retain) return tr.push({ id: msg.id, result: ok({ cardReader: { retain: { retainCount: 1 } } }) });
    }));
    const b = createSjsbl(new Sjsl(t), config);
    const r = await b.returnCard({ takeTimeoutMs: 1000 });
    assert.equal(r.jammed, true);
    assert.equal(r.retained, true);
    assert.equal(r.returned, false);
  });

  it('returnCard resolves when the card is taken and retains it when not', async () => {
    const taken = fakeTransport(host((msg, tr) => {
      tr.push({ id: msg.id, result: ok({}) });
      setTimeout(() => tr.push({ event: 'device.notice', data: { device: 'idc', sequence: 5, event: { cardReader: { mediaRemoved: {} } } } }), 5);
    }));
    assert.deepEqual(await createSjsbl(new Sjsl(taken), config).returnCard({ takeTimeoutMs: 1000 }),
      { returned: true, retained: false, jammed: false });

    const left = fakeTransport(host((msg, tr) => tr.push({ id: msg.id, result: ok({}) })));
    const r = await createSjsbl(new Sjsl(left), config).returnCard({ takeTimeoutMs: 20 });
    assert.equal(r.retained, true);
    const cmds = left.sent.filter((m) => m.method === 'device.execute').map((m) => Object.keys(m.params.command.cardReader)[0]);
    assert.deepEqual(cmds, ['eject', 'retain']);
  });
});
