// SJSL transports: how JSON text gets between the page and terminal-native.
//
// - windowed (wry IPC): when `window.ipc.postMessage` exists, requests go out with it and the
//   host calls `window.__opentellerReceive(text)` for every message it sends;
// - headless (WebSocket): `ws(s)://<location.host>/bridge`, reconnected with back-off when it
//   drops (100 ms doubling to 5 s).
//
// A transport is `{send(text) -> boolean, close(), onMessage, onState}`; `onState` gets
// 'open' / 'closed'. Messages are identical JSON in both transports.

/**
 * @typedef {object} Transport
 * @property {(text: string) => boolean} send  false when the link is down (nothing was sent)
 * @property {() => void} close
 * @property {boolean} isOpen
 * @property {string} kind                    'ipc' | 'websocket' | a test's name
 * @property {((text: string) => void)|null} onMessage
 * @property {((state: 'open'|'closed') => void)|null} onState
 */

/**
 * The wry IPC transport. The host side is always there, so it is open at once.
 * @param {any} win  the window object (a parameter so unit tests can pass a fake)
 * @returns {Transport}
 */
export function ipcTransport(win) {
  /** @type {Transport} */
  const t = {
    kind: 'ipc',
    isOpen: true,
    onMessage: null,
    onState: null,
    send(text) {
      win.ipc.postMessage(text);
      return true;
    },
    close() {
      t.isOpen = false;
      if (win.__opentellerReceive === receive) delete win.__opentellerReceive;
    },
  };
  const receive = (/** @type {string} */ text) => {
    if (t.onMessage) t.onMessage(String(text));
  };
  win.__opentellerReceive = receive;
  queueMicrotask(() => t.onState && t.onState('open'));
  return t;
}

/**
 * The WebSocket transport with reconnection.
 * @param {string} url  e.g. ws://127.0.0.1:8780/bridge
 * @param {{WebSocketImpl?: any, minBackoffMs?: number, maxBackoffMs?: number}} [opts]
 * @returns {Transport}
 */
export function webSocketTransport(url, opts = {}) {
  const WS = opts.WebSocketImpl || globalThis.WebSocket;
  const minBackoff = opts.minBackoffMs ?? 100;
  const maxBackoff = opts.maxBackoffMs ?? 5000;
  let backoff = minBackoff;
  let closed = false;
  /** @type {any} */
  let ws = null;
  /** @type {any} */
  let timer = null;

  /** @type {Transport} */
  const t = {
    kind: 'websocket',
    isOpen: false,
    onMessage: null,
    onState: null,
    send(text) {
      if (!ws || !t.isOpen) return false;
      ws.send(text);
      return true;
    },
    close() {
      closed = true;
      clearTimeout(timer);
      if (ws) ws.close();
    },
  };

  const open = () => {
    if (closed) return;
    const sock = new WS(url);
    ws = sock;
    sock.onopen = () => {
      if (ws !== sock) return;
      backoff = minBackoff;
      t.isOpen = true;
      if (t.onState) t.onState('open');
    };
    sock.onmessage = (/** @type {{data: any}} */ ev) => {
      if (ws === sock && t.onMessage && typeof ev.data === 'string') t.onMessage(ev.data);
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      const was = t.isOpen;
      t.isOpen = false;
      ws = null;
      if (was && t.onState) t.onState('closed');
      if (!closed) {
        timer = setTimeout(open, backoff);
        backoff = Math.min(backoff * 2, maxBackoff);
      }
    };
    // An error is always followed by close, which does the work.
    sock.onerror = () => {};
  };
  open();
  return t;
}

/**
 * The transport for this page: IPC inside the windowed host, else the WebSocket.
 * @param {any} [win]
 * @returns {Transport}
 */
export function defaultTransport(win = globalThis) {
  if (win.ipc && typeof win.ipc.postMessage === 'function') return ipcTransport(win);
  const loc = win.location;
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return webSocketTransport(`${scheme}//${loc.host}/bridge`);
}
