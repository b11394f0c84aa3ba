// Device handles: `sjsl.device('idc').readRawData({track2: true}, {timeoutMs, signal})`.
//
// Each command of the device's class is a promise-returning method. The command goes out as
// `device.execute` with a generated requestId; the device's timeout is `timeoutMs`; an
// AbortSignal sends `device.cancel` (the promise then rejects with COMMAND_FAILED / CANCELED, as
// the device reports it). Intermediate events of the command reach `opts.onEvent`; every event
// of the device (the command's and the unsolicited notices) reaches `on(name, fn)` subscribers.

import { SjslError } from './errors.js';

/** The bridge's class names and the JSON member each class's commands go under. */
export const CLASS_KEYS = Object.freeze({
  CardReader: 'cardReader',
  PinPad: 'pinPad',
  CashDispenser: 'cashDispenser',
  ReceiptPrinter: 'receiptPrinter',
});

/**
 * The commands a page may send, per class (PinPad key management and MACs are reserved to the
 * host: the bridge answers FORBIDDEN, so they are not offered here).
 */
export const COMMANDS = Object.freeze({
  CardReader: ['readRawData', 'eject', 'retain', 'reset', 'chipIo'],
  PinPad: ['getKeyDetail', 'getPin', 'getData', 'getPinBlock', 'reset'],
  CashDispenser: ['denominate', 'dispense', 'present', 'retract', 'reject', 'reset'],
  ReceiptPrinter: ['printText', 'printForm', 'reset'],
});

/** Page-side grace on top of a device timeout before SJSL gives up on the answer. */
export const DEVICE_GRACE_MS = 5000;
/** The device's own default when no timeout is given (driver-proxy --default-timeout-ms). */
export const DEVICE_DEFAULT_TIMEOUT_MS = 60_000;

let requestCounter = 0;
const pageTag = Math.random().toString(36).slice(2, 8);

/**
 * A fresh request id (1-64 printable ASCII, no spaces).
 * @param {string} device
 */
export function newRequestId(device) {
  requestCounter += 1;
  return `${device}-${pageTag}-${requestCounter}`.slice(0, 64);
}

/**
 * @typedef {object} CommandOptions
 * @property {number} [timeoutMs]       the device's limit for the command (0/absent: the device default)
 * @property {AbortSignal} [signal]     cancels the command at the device
 * @property {string} [requestId]       default: generated
 * @property {string} [authorization]   CashDispenser.Dispense / Present: the host's authorisation reference
 * @property {(event: any, name: string) => void} [onEvent]  this command's intermediate events
 */

/**
 * @typedef {object} CommandResult
 * @property {string} requestId
 * @property {any} completion  `{code, errorCode?, errorName?, description?}`
 * @property {any} result      the class result's payload (e.g. readRawData's tracks) or null
 * @property {any} raw         the whole CommandCompletion as the bridge sent it
 */

/**
 * The name and payload of a DeviceEvent's oneof: `{cardReader: {mediaRemoved: {}}}` →
 * ['mediaRemoved', {}]; `{statusChanged: {...}}` → ['statusChanged', {...}].
 * @param {any} event
 * @returns {[string, any]}
 */
export function eventName(event) {
  if (!event || typeof event !== 'object') return ['unknown', event];
  if (event.statusChanged) return ['statusChanged', event.statusChanged];
  for (const key of Object.values(CLASS_KEYS)) {
    const inner = event[key];
    if (inner && typeof inner === 'object') {
      const name = Object.keys(inner)[0];
      if (name) return [name, inner[name]];
    }
  }
  return ['unknown', event];
}

export class DeviceHandle {
  /**
   * @param {import('./index.js').Sjsl} sjsl
   * @param {string} name  the configured device name (terminal-native [devices.NAME])
   */
  constructor(sjsl, name) {
    this.sjsl = sjsl;
    this.name = name;
    /** @type {Set<string>} requests of this handle still running */
    this.running = new Set();
    for (const cls of Object.keys(COMMANDS)) {
      for (const cmd of COMMANDS[/** @type {keyof COMMANDS} */ (cls)]) {
        if (/** @type {any} */ (this)[cmd]) continue;
        /** @type {any} */ (this)[cmd] = (/** @type {any} */ params, /** @type {CommandOptions} */ opts) =>
          this.execute(cmd, params, opts);
      }
    }
  }

  /** The device's class (`CardReader` ...), from `device.list` (cached). */
  async deviceClass() {
    return this.sjsl.classOf(this.name);
  }

  /**
   * Runs one command of this device's class.
   * @param {string} command   e.g. 'readRawData'
   * @param {object} [params]  the command's proto3-JSON body, e.g. `{track2: true}`
   * @param {CommandOptions} [opts]
   * @returns {Promise<CommandResult>}
   */
  async execute(command, params = {}, opts = {}) {
    const cls = await this.deviceClass();
    const allowed = COMMANDS[/** @type {keyof COMMANDS} */ (cls)] || [];
    if (!allowed.includes(command)) {
      throw new SjslError('INVALID_ARGUMENT', `${this.name} is a ${cls}: it has no command ${command}`);
    }
    const { signal } = opts;
    if (signal && signal.aborted) throw new SjslError('ABORTED', `${this.name}.${command} aborted before it was sent`);
    const requestId = opts.requestId || newRequestId(this.name);
    const classKey = CLASS_KEYS[/** @type {keyof CLASS_KEYS} */ (cls)];
    /** @type {any} */
    const p = { device: this.name, requestId, command: { [classKey]: { [command]: params || {} } } };
    if (opts.timeoutMs) p.timeoutMs = opts.timeoutMs;
    if (opts.authorization) p.authorization = opts.authorization;

    const offEvent = opts.onEvent
      ? this.sjsl.bridge.on('device.event', (data) => {
        if (data && data.device === this.name && data.requestId === requestId) {
          const [name, payload] = eventName(data.event);
          opts.onEvent?.(payload, name);
        }
      })
      : null;
    const onAbort = () => {
      this.cancel(requestId).catch(() => {});
    };
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    this.running.add(requestId);
    try {
      const body = await this.sjsl.bridge.call('device.execute', p, {
        timeoutMs: (opts.timeoutMs || DEVICE_DEFAULT_TIMEOUT_MS) + DEVICE_GRACE_MS,
      });
      const inner = body && body[classKey];
      const resultName = inner && typeof inner === 'object' ? Object.keys(inner)[0] : undefined;
      return {
        requestId,
        completion: body?.completion ?? {},
        result: resultName ? inner[resultName] : null,
        raw: body,
      };
    } catch (e) {
      // The page-side timer gave up: stop the command at the device too.
      if (e instanceof SjslError && e.code === 'TIMEOUT') this.cancel(requestId).catch(() => {});
      throw e;
    } finally {
      this.running.delete(requestId);
      if (signal) signal.removeEventListener('abort', onAbort);
      if (offEvent) offEvent();
    }
  }

  /**
   * Cancels commands of this device: one request id, or every one this handle started.
   * @param {string} [requestId]
   * @returns {Promise<string[]>} the request ids the device canceled
   */
  async cancel(requestId) {
    const ids = requestId ? [requestId] : [...this.running];
    const canceled = [];
    for (const id of ids) {
      const r = await this.sjsl.bridge.call('device.cancel', { device: this.name, requestId: id }, { timeoutMs: 10_000 });
      canceled.push(...(r?.canceled ?? []));
    }
    return canceled;
  }

  /** `device.status`: `{device, class, health, connected, status}`. */
  status() {
    return this.sjsl.bridge.call('device.status', { device: this.name });
  }

  /** `device.capabilities`: the proto3-JSON Capabilities. */
  capabilities() {
    return this.sjsl.bridge.call('device.capabilities', { device: this.name });
  }

  /**
   * Subscribes to this device's events by name (`mediaRemoved`, `keyPressed`, `itemsTaken`,
   * `cardAction`, `statusChanged` ...; `*` for all). `fn(payload, info)` where info is
   * `{name, source: 'notice'|'command'|'status', requestId?, sequence?}`. Source `status` is the
   * bridge's `device.status` event (connection and health changes) under the name `status`.
   * @param {string} name
   * @param {(payload: any, info: {name: string, source: string, requestId?: string, sequence?: number}) => void} fn
   * @returns {() => void} unsubscribe
   */
  on(name, fn) {
    const offs = [
      this.sjsl.bridge.on('device.notice', (data) => {
        if (!data || data.device !== this.name) return;
        const [n, payload] = eventName(data.event);
        if (name === '*' || name === n) fn(payload, { name: n, source: 'notice', sequence: data.sequence });
      }),
      this.sjsl.bridge.on('device.event', (data) => {
        if (!data || data.device !== this.name) return;
        const [n, payload] = eventName(data.event);
        if (name === '*' || name === n) fn(payload, { name: n, source: 'command', requestId: data.requestId });
      }),
      this.sjsl.bridge.on('device.status', (data) => {
        if (!data || data.device !== this.name) return;
        if (name === '*' || name === 'status') fn(data, { name: 'status', source: 'status' });
      }),
    ];
    return () => offs.forEach((off) => off());
  }

  /**
   * Waits for one event of this device (see `on`), with a timeout and an AbortSignal.
   * @param {string|string[]} names
   * @param {{timeoutMs?: number, signal?: AbortSignal, filter?: (payload: any, info: any) => boolean}} [opts]
   * @returns {Promise<{name: string, payload: any}>} rejects TIMEOUT / ABORTED
   */
  waitFor(names, opts = {}) {
    const wanted = Array.isArray(names) ? names : [names];
    return new Promise((resolve, reject) => {
      /** @type {any} */
      let timer = null;
      const finish = (/** @type {any} */ err, /** @type {any} */ value) => {
        off();
        clearTimeout(timer);
        if (opts.signal) opts.signal.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(value);
      };
      const off = this.on('*', (payload, info) => {
        if (!wanted.includes(info.name)) return;
        if (opts.filter && !opts.filter(payload, info)) return;
        finish(null, { name: info.name, payload });
      });
      const onAbort = () => finish(new SjslError('ABORTED', `waiting for ${wanted.join('/')} on ${this.name} aborted`));
      if (opts.signal) {
        if (opts.signal.aborted) return onAbort();
        opts.signal.addEventListener('abort', onAbort, { once: true });
      }
      if (opts.timeoutMs) {
        timer = setTimeout(
          () => finish(new SjslError('TIMEOUT', `no ${wanted.join('/')} on ${this.name} within ${opts.timeoutMs} ms`)),
          opts.timeoutMs,
        );
      }
    });
  }
}
