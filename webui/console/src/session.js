// The signed-in user: the token (sessionStorage, gone with the tab) and the session of the login
// answer — user, permissions, and the menus the side bar is built from.
import { reactive } from 'vue';
import { api, ApiError, getToken, newTxnId, setToken } from './api.js';

const SESSION_KEY = 'openteller.session';

function cachedSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    return s && typeof s === 'object' ? s : null;
  } catch {
    return null;
  }
}

export const session = reactive({
  token: getToken(),
  data: getToken() ? cachedSession() : null,
  checked: false, // the session was confirmed with the server since the page loaded
});

function permSet() {
  const p = session.data && Array.isArray(session.data.permissions) ? session.data.permissions : [];
  return new Set(p);
}

export function can(perm) {
  return permSet().has(perm);
}
export function canAny(perms) {
  const s = permSet();
  return perms.some((p) => s.has(p));
}

export function currentUser() {
  return (session.data && session.data.user) || {};
}
export function menus() {
  return (session.data && Array.isArray(session.data.menus)) ? session.data.menus : [];
}

function store(token, data) {
  session.token = token;
  session.data = data;
  session.checked = true;
  setToken(token);
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(data));
}

export function clearSession() {
  session.token = '';
  session.data = null;
  session.checked = false;
  setToken('');
  sessionStorage.removeItem(SESSION_KEY);
}

export async function login(username, password) {
  const d = await api.post('/auth/login', { username, password }, { auth: false, txn: newTxnId() });
  if (!d || typeof d.token !== 'string' || !d.session) {
    throw new ApiError('BAD_RESPONSE', 'login answer without token or session');
  }
  store(d.token, d.session);
}

// Confirms a token left from before a reload and refreshes permissions and menus.
export async function restore() {
  if (!session.token) return;
  try {
    const s = await api.get('/auth/session');
    store(session.token, s);
  } catch (e) {
    if (e instanceof ApiError && (e.code === 'UNAUTHENTICATED' || e.status === 401)) clearSession();
    else session.checked = true; // server trouble: keep the cached session, the pages show errors
  }
}

export async function logout() {
  try {
    if (session.token) await api.post('/auth/logout', {}, { txn: newTxnId() });
  } catch {
    // the session may be gone already; forgetting it here is what matters
  }
  clearSession();
}
