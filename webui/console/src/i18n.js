// UI texts: the bundles shipped in src/locales, overlaid with the server's entries from
// GET /api/v2/i18n/{locale} (the server's win). The choice is kept in localStorage.
import { reactive } from 'vue';
import { api } from './api.js';
import zhCN from './locales/zh-CN.json';
import en from './locales/en.json';

export const LOCALES = ['zh-CN', 'en'];
const LOCALE_KEY = 'openteller.locale';
const bundles = { 'zh-CN': zhCN, en };

function initialLocale() {
  const l = localStorage.getItem(LOCALE_KEY);
  return LOCALES.includes(l) ? l : 'zh-CN';
}

export const i18n = reactive({ locale: initialLocale(), overlay: { 'zh-CN': {}, en: {} } });

export function t(key, params) {
  const l = i18n.locale;
  let s = i18n.overlay[l][key];
  if (typeof s !== 'string') s = bundles[l][key];
  if (typeof s !== 'string') s = bundles.en[key];
  if (typeof s !== 'string') return key;
  if (params) s = s.replace(/\{(\w+)\}/g, (m, k) => (params[k] === undefined ? m : String(params[k])));
  return s;
}

// Like t() but '' when no text exists (for optional labels such as permission functions).
export function tOr(key, fallback) {
  const s = t(key);
  return s === key ? fallback : s;
}

export async function loadOverlay(locale) {
  try {
    const d = await api.get(`/i18n/${encodeURIComponent(locale)}`, undefined, { auth: false });
    if (d && typeof d === 'object' && !Array.isArray(d)) {
      const clean = {};
      for (const [k, v] of Object.entries(d)) if (typeof v === 'string') clean[k] = v;
      i18n.overlay[locale] = clean;
    }
  } catch {
    // the shipped bundle stays in force
  }
}

export async function setLocale(locale) {
  if (!LOCALES.includes(locale)) return;
  i18n.locale = locale;
  localStorage.setItem(LOCALE_KEY, locale);
  document.documentElement.lang = locale;
  await loadOverlay(locale);
}

export function startI18n() {
  document.documentElement.lang = i18n.locale;
  return loadOverlay(i18n.locale);
}
