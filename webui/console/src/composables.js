// Small building blocks shared by the pages: paged lists, user actions (one X-Txn-Group-Id each,
// errors kept for display), confirmations, and the organisation choices.
import { reactive, ref } from 'vue';
import { api, ApiError, newTxnId } from './api.js';
import { can, currentUser } from './session.js';
import { t } from './i18n.js';

export function toError(e) {
  return e instanceof ApiError ? e : new ApiError('CLIENT_ERROR', e && e.message ? e.message : String(e));
}

// A paged list of GET `path` (a string or a function giving it): the answer is the page object
// {pageNo, pageSize, totalCount, totalPages, rows}.
// `transform(filters)` turns the form's filters into query parameters (e.g. local times → RFC 3339).
export function usePaged(path, filters = {}, { pageSize = 20, sortOrder, transform } = {}) {
  const s = reactive({
    filters: { ...filters },
    pageNo: 1,
    pageSize,
    sortOrder,
    rows: [],
    totalCount: 0,
    totalPages: 0,
    loading: false,
    error: null,
    loaded: false,
  });
  let seq = 0;
  async function load() {
    const mine = ++seq;
    s.loading = true;
    try {
      const f = transform ? transform({ ...s.filters }) : { ...s.filters };
      const query = { ...f, pageNo: s.pageNo, pageSize: s.pageSize };
      if (s.sortOrder) query.sortOrder = s.sortOrder;
      const p = await api.get(typeof path === 'function' ? path() : path, query);
      if (mine !== seq) return;
      s.rows = p && Array.isArray(p.rows) ? p.rows : [];
      s.totalCount = p && Number.isFinite(p.totalCount) ? p.totalCount : s.rows.length;
      s.totalPages = p && Number.isFinite(p.totalPages) ? p.totalPages : 1;
      if (p && Number.isFinite(p.pageNo)) s.pageNo = p.pageNo;
      s.error = null;
    } catch (e) {
      if (mine !== seq) return;
      s.error = toError(e);
      s.rows = [];
    } finally {
      if (mine === seq) {
        s.loading = false;
        s.loaded = true;
      }
    }
  }
  function search() {
    s.pageNo = 1;
    return load();
  }
  function go(n) {
    s.pageNo = Math.max(1, n);
    return load();
  }
  return { s, load, search, go };
}

// One user action: `run(fn)` calls fn(call) where `call` sends every mutation under one fresh
// X-Txn-Group-Id; an error is kept in `error` (code + message are shown) and run() gives false.
export function useAction() {
  const error = ref(null);
  const busy = ref(false);
  async function run(fn) {
    if (busy.value) return false;
    busy.value = true;
    error.value = null;
    try {
      await fn(api.bind(newTxnId()));
      return true;
    } catch (e) {
      error.value = toError(e);
      return false;
    } finally {
      busy.value = false;
    }
  }
  return { error, busy, run };
}

// A confirmation dialog: ask(text, fn) opens it, ok() runs fn as one action.
export function useConfirm() {
  const state = reactive({ open: false, text: '', fn: null });
  const action = useAction();
  function ask(text, fn) {
    state.text = text;
    state.fn = fn;
    state.open = true;
    action.error.value = null;
  }
  async function ok() {
    if (await action.run(state.fn)) state.open = false;
  }
  function close() {
    state.open = false;
  }
  return { state, action, ask, ok, close };
}

export function flattenTree(nodes, depth = 0, out = []) {
  for (const n of Array.isArray(nodes) ? nodes : []) {
    out.push({ node: n, depth });
    if (Array.isArray(n.children) && n.children.length) flattenTree(n.children, depth + 1, out);
  }
  return out;
}

// The organisations a form may pick: the tree if the user may read it, else only his own.
export function useOrgOptions() {
  const options = ref([]);
  const error = ref(null);
  async function load() {
    const own = currentUser();
    if (can('platform:org:query')) {
      try {
        const tree = await api.get('/platform/orgs');
        options.value = flattenTree(tree).map(({ node, depth }) => ({
          id: String(node.id),
          label: `${'\u3000'.repeat(depth)}${node.name} (${node.code})`,
        }));
        return;
      } catch (e) {
        error.value = toError(e);
      }
    }
    options.value = own.orgId ? [{ id: String(own.orgId), label: t('org.own', { id: own.orgId }) }] : [];
  }
  return { options, error, load };
}

const pad = (n) => String(n).padStart(2, '0');
export function fmtTime(v) {
  if (!v) return '—';
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// <input type="datetime-local"> value (local time) → RFC 3339 UTC, or '' when empty.
export function toRfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

export function fmtJson(v) {
  if (v === null || v === undefined) return '—';
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}

export function fmtSize(n) {
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// Filters with `from`/`to` taken from datetime-local inputs.
export function withTimeRange(f) {
  return { ...f, from: toRfc3339(f.from), to: toRfc3339(f.to) };
}
