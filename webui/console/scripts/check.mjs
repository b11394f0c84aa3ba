// Checks run before every build (npm run build):
//  - src/locales/zh-CN.json and en.json hold the same keys, each a non-empty string;
//  - every literal key passed to t()/tOr() in src exists, and every dynamic prefix ('org.level.' + x)
//    has its known values (ENUMS below);
//  - the menu name keys of the catalogue (docs/backoffice.md) are there;
//  - no v-html, innerHTML or outerHTML anywhere in src (user data is always rendered as text).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SRC = path.join(ROOT, 'src');
const problems = [];

const locales = {};
for (const l of ['zh-CN', 'en']) {
  const file = path.join(SRC, 'locales', `${l}.json`);
  const data = JSON.parse(fs.readFileSync(file, 'utf8'));
  for (const [k, v] of Object.entries(data)) {
    if (typeof v !== 'string' || !v.trim()) problems.push(`${l}.json: ${k} is not a non-empty string`);
  }
  locales[l] = data;
}
for (const [a, b] of [['zh-CN', 'en'], ['en', 'zh-CN']]) {
  for (const k of Object.keys(locales[a])) if (!(k in locales[b])) problems.push(`${k} is in ${a}.json but not in ${b}.json`);
}
const keys = new Set(Object.keys(locales.en));

const MENUS = ['system', 'audit', 'system.orgs', 'system.users', 'system.roles', 'system.menus', 'system.dict', 'system.i18n',
  'system.tasks', 'system.blacklist', 'system.files', 'audit.logs', 'audit.logins', 'audit.access'];
const ENUMS = {
  'menu.': MENUS,
  'org.level.': ['head_office', 'branch', 'sub_branch', 'outlet'],
  'user.status.': ['active', 'locked', 'frozen', 'disabled'],
  'role.status.': ['pending', 'enabled', 'rejected'],
  'role.scope.': ['own_org', 'org_subtree', 'all'],
  'domain.': ['technical', 'business', 'shared'],
  'kind.': ['technical', 'business'],
  'locale.': ['zh-CN', 'en'],
  'menuAdmin.kind.': ['dir', 'page'],
  'blacklist.kind.': ['user', 'address'],
  'task.outcome.': ['ok', 'failed'],
  'task.trigger.': ['schedule', 'manual'],
  'log.allowed.': ['true', 'false'],
  'log.sort.': ['asc', 'desc'],
  'perm.fn.': ['query', 'edit', 'delete', 'unlock', 'review', 'run', 'upload'],
  'error.code.': ['INVALID_ARGUMENT', 'WEAK_PASSWORD', 'UNAUTHENTICATED', 'BAD_CREDENTIALS', 'PERMISSION_DENIED',
    'ACCOUNT_DISABLED', 'BLACKLISTED', 'ACCOUNT_LOCKED', 'ACCOUNT_FROZEN', 'NOT_FOUND', 'CONFLICT', 'FAILED_PRECONDITION',
    'ROLE_CONFLICT', 'DOMAIN_MISMATCH', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'INTERNAL', 'UNAVAILABLE', 'NETWORK'],
};
for (const [prefix, values] of Object.entries(ENUMS)) {
  for (const v of values) if (!keys.has(prefix + v)) problems.push(`missing key ${prefix}${v}`);
}

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return /\.(vue|js)$/.test(e.name) ? [p] : [];
  });
}
const call = /\b(?:t|tOr)\(\s*'([^']+)'(\s*\+)?/g;
for (const file of walk(SRC)) {
  const text = fs.readFileSync(file, 'utf8');
  const rel = path.relative(ROOT, file);
  if (/v-html|innerHTML|outerHTML|insertAdjacentHTML/.test(text)) problems.push(`${rel}: uses raw HTML insertion`);
  for (const m of text.matchAll(call)) {
    const [, key, dynamic] = m;
    if (dynamic) {
      if (!(key in ENUMS)) problems.push(`${rel}: dynamic key prefix '${key}' is not listed in scripts/check.mjs ENUMS`);
    } else if (!keys.has(key)) {
      problems.push(`${rel}: key '${key}' is missing from the locales`);
    }
  }
}

if (problems.length) {
  console.error(`console check failed:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`console check ok: ${keys.size} keys in each locale, no raw HTML`);
