// SJSL — the standard JavaScript library of OpenTeller's business pages (seed 001 §4.3.1):
// the connection to the native platform (terminal-native), request/answer handling, device
// access, the electronic journal, logging and data storage. Plain ES modules, no framework;
// see docs/sjsl.md.
//
//   import { connect } from './sjsl/index.js';
//   const sjsl = await connect();
//   const card = await sjsl.device('idc').readRawData({ track2: true }, { timeoutMs: 30000 });
//   const r = await sjsl.txn.withdrawal({ amount: 30000, currency: 'CNY' });

import { Bridge } from './bridge.js';
import { DeviceHandle } from './device.js';
import { SjslError } from './errors.js';
import { defaultTransport } from './transport.js';

export { SjslError, LOCAL_CODES } from './errors.js';
export { Bridge } from './bridge.js';
export { DeviceHandle, COMMANDS, CLASS_KEYS, eventName, newRequestId } from './device.js';
export { ipcTransport, webSocketTransport, defaultTransport } from './transport.js';

/** Page-side limit for txn.* answers (the host's own response timeout is 30 s by default). */
export const TXN_TIMEOUT_MS = 90_000;

/**
 * @typedef {object} TxnAnswer
 * @property {string} responseCode   the host's F39 (`00` approved, `55` wrong PIN, `51` funds ...)
 * @property {boolean} approved
 * @property {string} [authorization] withdrawal: the reference CashDispenser.Dispense needs
 * @property {{available: number, ledger: number, currency: string}} [balance]
 * @property {number} [pinTriesLeft] after a wrong PIN; 0: the card is to be retained
 * @property {boolean} [cardRetained] the host retained the card (PIN limit)
 */

/** One connection to terminal-native and everything pages do through it. */
export class Sjsl {
  /**
   * @param {import('./transport.js').Transport} transport
   * @param {{callTimeoutMs?: number, connectWaitMs?: number}} [opts]
   */
  constructor(transport, opts = {}) {
    this.bridge = new Bridge(transport, opts);
    /** @type {Map<string, DeviceHandle>} */
    this.handles = new Map();
    /** @type {Map<string, string>|null} device name → class */
    this.classes = null;
    // The device list may change across a host restart: forget it on reconnect.
    this.bridge.on('bridge.open', () => {
      this.classes = null;
    });

    const call = (/** @type {string} */ m, /** @type {any} */ p, /** @type {any} */ o) => this.bridge.call(m, p, o);
    const txnOpts = (/** @type {any} */ o = {}) => ({ timeoutMs: TXN_TIMEOUT_MS, ...o });

    /** Host transactions (`txn.*`): declines are results (`approved: false`), not errors. */
    this.txn = {
      /** @returns {Promise<TxnAnswer>} sign-on: working keys into the EPP */
      signOn: (/** @type {any} */ o) => call('txn.signOn', {}, txnOpts(o)),
      /**
       * @param {{pinBlockFrom?: 'pinpad'}} [p]
       * @returns {Promise<TxnAnswer>}
       */
      inquiry: (p = {}, /** @type {any} */ o) => call('txn.inquiry', p, txnOpts(o)),
      /**
       * @param {{amount: number, currency: string, pinBlockFrom?: 'pinpad'}} p  amount in minor units
       * @returns {Promise<TxnAnswer>}
       */
      withdrawal: (p, /** @type {any} */ o) => call('txn.withdrawal', p, txnOpts(o)),
      /**
       * @param {{toAccount: string, amount: number, currency: string}} p
       * @returns {Promise<TxnAnswer>}
       */
      transfer: (p, /** @type {any} */ o) => call('txn.transfer', p, txnOpts(o)),
      /**
       * One step of a PIN change, after a PinPad.GetPin: 'current', 'new', then 'confirm'
       * (PIN_MISMATCH when the confirmation differs from the new PIN).
       * @param {{step: 'current'|'new'|'confirm'}} p
       * @returns {Promise<any>}
       */
      pinChange: (p, /** @type {any} */ o) => call('txn.pinChange', p, txnOpts(o)),
    };

    /** The electronic journal (fsynced by the host; PANs are masked there again). */
    this.journal = {
      /** @param {string} text */
      write: (text, /** @type {any} */ o) => call('journal.write', { text: String(text) }, o),
    };

    /** The host's log (stderr / journald), by level. */
    this.log = {
      /**
       * @param {'error'|'warn'|'info'|'debug'} level
       * @param {string} text
       */
      write: (level, text, /** @type {any} */ o) => call('log.write', { level, text: String(text) }, o),
      info: (/** @type {string} */ text) => call('log.write', { level: 'info', text: String(text) }),
      warn: (/** @type {string} */ text) => call('log.write', { level: 'warn', text: String(text) }),
      error: (/** @type {string} */ text) => call('log.write', { level: 'error', text: String(text) }),
    };

    /** Small persistent key/value data kept by the host for the business pages. */
    this.data = {
      /** @param {string} key */
      get: (key, /** @type {any} */ o) => call('data.get', { key }, o),
      /**
       * @param {string} key
       * @param {any} value
       */
      set: (key, value, /** @type {any} */ o) => call('data.set', { key, value }, o),
      /** @param {string} key */
      delete: (key, /** @type {any} */ o) => call('data.delete', { key }, o),
    };

    /** The terminal: in service or not, and why. */
    this.terminal = {
      /** @returns {Promise<{terminalId: string, inService: boolean, paused: boolean, pauseReason: any, outOfServiceReasons: string[], devices: any[], session: any}>} */
      status: (/** @type {any} */ o) => call('terminal.status', undefined, o),
      /**
       * Every change of the terminal status (the host's `terminal.status` event).
       * @param {(status: any) => void} fn
       * @returns {() => void} unsubscribe
       */
      onStatus: (fn) => this.bridge.on('terminal.status', fn),
      /**
       * Fraud and safety alarms (`terminal.alarm`).
       * @param {(alarm: any) => void} fn
       */
      onAlarm: (fn) => this.bridge.on('terminal.alarm', fn),
    };
  }

  /**
   * The handle for a configured device (`idc`, `pin`, `cdm`, `ptr` ... as in terminal-native's
   * [devices.NAME]); its commands are methods, its events subscriptions.
   * @param {string} name
   * @returns {DeviceHandle & Record<string, (params?: object, opts?: import('./device.js').CommandOptions) => Promise<import('./device.js').CommandResult>>}
   */
  device(name) {
    let h = this.handles.get(name);
    if (!h) this.handles.set(name, (h = new DeviceHandle(this, name)));
    return /** @type {any} */ (h);
  }

  /** `device.list`: every configured device with its health. */
  async devices() {
    const list = await this.bridge.call('device.list');
    this.classes = new Map(list.map((/** @type {any} */ d) => [d.name, d.class]));
    return list;
  }

  /**
   * The class of a configured device (`UNKNOWN_DEVICE` when there is none of that name).
   * @param {string} name
   */
  async classOf(name) {
    if (!this.classes || !this.classes.has(name)) await this.devices();
    const cls = this.classes?.get(name);
    if (!cls) throw new SjslError('UNKNOWN_DEVICE', `no device named ${name} is configured`);
    return cls;
  }

  /**
   * Unsolicited events of the host by name (`terminal.status`, `device.notice`, `bridge.open`,
   * `bridge.closed` ...).
   * @param {string} event
   * @param {(data: any, name: string) => void} fn
   */
  on(event, fn) {
    return this.bridge.on(event, fn);
  }

  /** True while the link to the host is up. */
  get connected() {
    return this.bridge.connected;
  }

  /** Closes the connection. */
  close() {
    this.bridge.close();
  }
}

/** @type {Sjsl|null} */
let current = null;

/**
 * Connects to terminal-native (IPC in the windowed host, else the WebSocket `/bridge`) and
 * waits until the link is up. Later calls return the same connection.
 * @param {{transport?: import('./transport.js').Transport, callTimeoutMs?: number, connectWaitMs?: number}} [opts]
 * @returns {Promise<Sjsl>}
 */
export async function connect(opts = {}) {
  if (current && !opts.transport) {
    await current.bridge.whenOpen();
    return current;
  }
  const sjsl = new Sjsl(opts.transport || defaultTransport(), opts);
  if (!opts.transport) current = sjsl;
  await sjsl.bridge.whenOpen();
  return sjsl;
}

/**
 * The handle of a device on the connection `connect()` opened.
 * @param {string} name
 */
export function device(name) {
  if (!current) throw new SjslError('DISCONNECTED', 'call connect() first');
  return current.device(name);
}
