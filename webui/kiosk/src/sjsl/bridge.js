// The SJSL protocol layer: requests with ids, answers matched by id (they come in completion
// order), unsolicited events fanned out to subscribers, page-side timeouts and aborts, and the
// connection state. Transport-agnostic (see transport.js); the protocol is in
// docs/terminal-native.md "The bridge protocol".

import { SjslError } from './errors.js';

/**
 * @typedef {object} CallOptions
 * @property {number} [timeoutMs]   page-side limit for the answer (default: the bridge's callTimeoutMs)
 * @property {AbortSignal} [signal] abort before sending: ABORTED; after sending: the promise
 *                                  rejects with ABORTED (the host finishes the request anyway)
 */

export class Bridge {
  /**
   * @param {import('./transport.js').Transport} transport
   * @param {{callTimeoutMs?: number, connectWaitMs?: number}} [opts]
   */
  constructor(transport, opts = {}) {
    this.transport = transport;
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
    this.connectWaitMs = opts.connectWaitMs ?? 10_000;
    this.nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, cleanup: Function, method: string}>} */
    this.pending = new Map();
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    /** @type {Set<Function>} */
    this.openWaiters = new Set();
    transport.onMessage = (text) => this.receive(text);
    transport.onState = (state) => this.stateChanged(state);
  }

  /** True while the link to the host is up. */
  get connected() {
    return this.transport.isOpen;
  }

  /**
   * Resolves once the link is up (at once when it is), rejects with DISCONNECTED after `waitMs`.
   * @param {number} [waitMs]
   * @returns {Promise<void>}
   */
  whenOpen(waitMs = this.connectWaitMs) {
    if (this.transport.isOpen) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.openWaiters.delete(done);
        resolve(undefined);
      };
      const timer = setTimeout(() => {
        this.openWaiters.delete(done);
        reject(new SjslError('DISCONNECTED', `no connection to the terminal host within ${waitMs} ms`));
      }, waitMs);
      this.openWaiters.add(done);
    });
  }

  /**
   * One request. Resolves with `result`, rejects with an SjslError.
   * @param {string} method
   * @param {object} [params]
   * @param {CallOptions} [opts]
   * @returns {Promise<any>}
   */
  async call(method, params, opts = {}) {
    const { signal } = opts;
    if (signal && signal.aborted) throw new SjslError('ABORTED', `${method} aborted before it was sent`, { method });
    if (!this.transport.isOpen) await this.whenOpen(Math.min(this.connectWaitMs, opts.timeoutMs ?? Infinity));
    if (signal && signal.aborted) throw new SjslError('ABORTED', `${method} aborted before it was sent`, { method });
    const id = this.nextId++;
    /** @type {any} */
    const msg = { id, method };
    if (params !== undefined) msg.params = params;
    const timeoutMs = opts.timeoutMs ?? this.callTimeoutMs;
    return new Promise((resolve, reject) => {
      /** @type {any} */
      let timer = null;
      const onAbort = () => {
        this.settle(id, null, new SjslError('ABORTED', `${method} aborted`, { method }));
      };
      const cleanup = () => {
        clearTimeout(timer);
        if (signal) signal.removeEventListener('abort', onAbort);
      };
      this.pending.set(id, { resolve, reject, cleanup, method });
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          this.settle(id, null, new SjslError('TIMEOUT', `${method}: no answer within ${timeoutMs} ms`, { method }));
        }, timeoutMs);
      }
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      if (!this.transport.send(JSON.stringify(msg))) {
        this.settle(id, null, new SjslError('DISCONNECTED', `${method}: the connection to the terminal host is down`, { method }));
      }
    });
  }

  /**
   * @param {number} id
   * @param {any} result
   * @param {SjslError|null} error
   */
  settle(id, result, error) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.cleanup();
    if (error) p.reject(error);
    else p.resolve(result);
  }

  /**
   * Subscribes to an unsolicited event (`device.notice`, `terminal.status`, ...) or to the
   * connection pseudo-events `bridge.open` / `bridge.closed`; `*` gets every event as (name, data).
   * @param {string} event
   * @param {(data: any, name: string) => void} fn
   * @returns {() => void} unsubscribe
   */
  on(event, fn) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }

  /**
   * @param {string} name
   * @param {any} data
   */
  emit(name, data) {
    for (const key of [name, '*']) {
      const set = this.listeners.get(key);
      if (!set) continue;
      for (const fn of [...set]) {
        try {
          fn(data, name);
        } catch (e) {
          // A subscriber's bug must not break the others or the protocol loop.
          console.error(`SJSL: a "${key}" subscriber threw`, e);
        }
      }
    }
  }

  /** @param {string} text */
  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.error('SJSL: a message from the host is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (typeof msg.event === 'string') {
      this.emit(msg.event, msg.data);
      return;
    }
    if (typeof msg.id === 'number' && this.pending.has(msg.id)) {
      const method = this.pending.get(msg.id)?.method;
      if (msg.error !== undefined) this.settle(msg.id, null, SjslError.fromBridge(msg.error, method));
      else if ('result' in msg) this.settle(msg.id, msg.result, null);
      else this.settle(msg.id, null, new SjslError('PROTOCOL', `answer to ${method} has neither result nor error`, { method }));
    }
    // An answer nobody waits for any more (timed out, aborted) is dropped.
  }

  /** @param {'open'|'closed'} state */
  stateChanged(state) {
    if (state === 'open') {
      for (const done of [...this.openWaiters]) done();
      this.emit('bridge.open', {});
    } else {
      for (const id of [...this.pending.keys()]) {
        const method = this.pending.get(id)?.method;
        this.settle(id, null, new SjslError('DISCONNECTED', `${method}: the connection to the terminal host was lost`, { method }));
      }
      this.emit('bridge.closed', {});
    }
  }

  /** Closes the transport; pending calls fail with DISCONNECTED. */
  close() {
    this.transport.close();
    this.stateChanged('closed');
  }
}
