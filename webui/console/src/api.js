// The backoffice HTTP client: every call goes to /api/v2 on the same origin, answers are the
// envelope {code, message, data}; anything but code "OK" becomes an ApiError carrying the code,
// the message and the trace id, so the pages can show them as they are.
//
// Every request carries `Authorization: Bearer <token>` (except the login and the public i18n
// bundle); every mutation carries `X-Txn-Group-Id`, one random id per user action (see bind()).
// An UNAUTHENTICATED answer calls the handler set by setUnauthenticatedHandler (back to login).

export const API_BASE = '/api/v2';
const TOKEN_KEY = 'openteller.token';

export class ApiError extends Error {
  constructor(code, message, { status = 0, traceId = '', data = null } = {}) {
    super(message || code);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.traceId = traceId;
    this.data = data;
  }
}

let unauthenticated = () => {};
export function setUnauthenticatedHandler(fn) {
  unauthenticated = fn;
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}
export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// A random id (UUID v4 form) for X-Txn-Group-Id. getRandomValues works on plain http too, where
// crypto.randomUUID does not (it needs a secure context).
export function newTxnId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function buildUrl(path, query) {
  let url = API_BASE + path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === '') continue;
      qs.append(k, String(v));
    }
    const s = qs.toString();
    if (s) url += `?${s}`;
  }
  return url;
}

async function parseEnvelope(res) {
  const traceId = res.headers.get('X-Trace-Id') || '';
  const text = await res.text();
  let env = null;
  try {
    env = text ? JSON.parse(text) : null;
  } catch {
    env = null;
  }
  if (env && typeof env === 'object' && typeof env.code === 'string') {
    if (env.code === 'OK') return env.data === undefined ? null : env.data;
    throw new ApiError(env.code, typeof env.message === 'string' ? env.message : '', {
      status: res.status, traceId, data: env.data ?? null,
    });
  }
  const code = res.ok ? 'BAD_RESPONSE' : `HTTP_${res.status}`;
  throw new ApiError(code, res.statusText || 'not an API answer', { status: res.status, traceId });
}

async function request(method, path, opts = {}) {
  const { query, body, form, txn, auth = true, raw = false } = opts;
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  if (method !== 'GET') headers['X-Txn-Group-Id'] = txn || newTxnId();
  let payload;
  if (form) {
    payload = form; // multipart: the browser sets the boundary
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(buildUrl(path, query), { method, headers, body: payload, credentials: 'same-origin' });
  } catch (e) {
    throw new ApiError('NETWORK', e && e.message ? e.message : 'network error');
  }
  try {
    if (raw && res.ok) return res;
    return await parseEnvelope(res);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'UNAUTHENTICATED' && auth) unauthenticated(e);
    throw e;
  }
}

export const api = {
  get: (path, query, opts = {}) => request('GET', path, { ...opts, query }),
  post: (path, body, opts = {}) => request('POST', path, { ...opts, body }),
  put: (path, body, opts = {}) => request('PUT', path, { ...opts, body }),
  del: (path, opts = {}) => request('DELETE', path, opts),
  upload: (path, file, opts = {}) => {
    const form = new FormData();
    form.append('file', file, file.name);
    return request('POST', path, { ...opts, form });
  },
  // The raw Response of a GET (file bytes); errors still come back as ApiError.
  fetchRaw: (path, opts = {}) => request('GET', path, { ...opts, raw: true }),
  // The same calls, all under one X-Txn-Group-Id: what one user action does.
  bind(txn) {
    return {
      txn,
      get: (path, query, o = {}) => request('GET', path, { ...o, query }),
      post: (path, body, o = {}) => request('POST', path, { ...o, body, txn }),
      put: (path, body, o = {}) => request('PUT', path, { ...o, body, txn }),
      del: (path, o = {}) => request('DELETE', path, { ...o, txn }),
      upload: (path, file, o = {}) => api.upload(path, file, { ...o, txn }),
    };
  },
};
