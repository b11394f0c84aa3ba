// Browser end-to-end test of the backoffice console (docs/backoffice.md).
//
// Starts a real `backoffice serve` on a free loopback port with its SQLite database and object
// directory in a temp dir (OPENTELLER_INIT_ADMIN_PASSWORD sets the first `sysadmin`'s password),
// opens the console it serves in headless Debian Chromium (playwright-core, never Playwright's own
// browser download) and walks through the first days of a bank as its administrators would:
//
//   sysadmin (the initial one) creates a branch, a technical role `auditor` (pending) and a second
//   technical administrator `secadmin`; secadmin's first login disables the initial sysadmin for
//   good; secadmin approves `auditor` (its author may not) and creates `alice` with it; alice sees
//   only the audit and login logs, gets the 403 page and PERMISSION_DENIED elsewhere, and finds
//   every step in the audit log. Then: the zh-CN/en switch, and hostile text shown as text.
//
// The page is driven through data-testid hooks only (never through wording), so the texts may
// change freely.
//
// Environment:
//   OPENTELLER_BIN_DIR     where `backoffice` is (default $CARGO_TARGET_DIR/debug, else <repo>/target/debug)
//   OPENTELLER_CHROMIUM    the browser (default /usr/bin/chromium)
//   OPENTELLER_ARTIFACTS   where the screenshots and the server log go (default a temp dir)
//
// Run with: node --test console.test.mjs (run.sh installs what this needs first).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..', '..');
const BIN_DIR = process.env.OPENTELLER_BIN_DIR
  ? path.resolve(process.env.OPENTELLER_BIN_DIR)
  : path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target', 'debug');
const CHROMIUM = process.env.OPENTELLER_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.OPENTELLER_ARTIFACTS
  ? path.resolve(process.env.OPENTELLER_ARTIFACTS)
  : fs.mkdtempSync(path.join(os.tmpdir(), 'openteller-console-e2e-'));

// How long to wait for something to show on the page.
const WAIT_MS = 10_000;
// How long the server may take to be ready (first start migrates the database).
const READY_MS = 60_000;

const INIT_PASSWORD = 'Init#Admin2026';
const SECADMIN = { username: 'secadmin', displayName: 'Security Admin', password: 'Sec#Admin2026' };
const ALICE = { username: 'alice', displayName: 'Alice Auditor', password: 'Audit#Reader2026' };
const XSS = '<img src=x onerror=window.__xss=1>';
const XSS_USER = { username: 'xssprobe', displayName: XSS, password: 'Xss#Probe2026' };
const BRANCH = { code: 'BR-E2E', name: 'E2E Branch' };

// ------------------------------------------------------------------ the server

let tmp; // database, objects, config, logs, browser profile
let server; // { child, url, log }
let context;
let page;
const pageErrors = [];
const dialogs = []; // alert()/confirm() the page opened: none is expected
const apiRequests = []; // every /api/v2 request the page sent, with its headers

function backofficeBin() {
  const file = path.join(BIN_DIR, 'backoffice');
  if (!fs.existsSync(file)) {
    throw new Error(`${file} is missing: build it first (cargo build, after building webui/console which it embeds) `
      + 'or point OPENTELLER_BIN_DIR / CARGO_TARGET_DIR at the build');
  }
  return file;
}

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

function logTail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function startBackoffice() {
  const port = await freePort();
  const config = path.join(tmp, 'bo.toml');
  // JSON strings are valid TOML basic strings for these plain paths.
  fs.writeFileSync(config, [
    '[http]',
    `listen = ${JSON.stringify(`127.0.0.1:${port}`)}`,
    '',
    '[database]',
    `url = ${JSON.stringify(`sqlite://${path.join(tmp, 'bo.db')}`)}`,
    '',
    '[objects]',
    `dir = ${JSON.stringify(path.join(tmp, 'objects'))}`,
    '',
  ].join('\n'));
  const log = path.join(tmp, 'backoffice.log');
  const out = fs.openSync(log, 'a');
  const env = { ...process.env, OPENTELLER_INIT_ADMIN_PASSWORD: INIT_PASSWORD };
  // Only our config counts: no OPENTELLER_HTTP__LISTEN & co. from the caller's shell.
  for (const k of Object.keys(env)) if (/^OPENTELLER_[A-Z]+__/.test(k)) delete env[k];
  const child = spawn(backofficeBin(), ['serve', '--config', config], { stdio: ['ignore', out, out], env });
  fs.closeSync(out);
  const url = `http://127.0.0.1:${port}`;
  const exited = once(child, 'exit');
  const deadline = Date.now() + READY_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`backoffice exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${logTail(log)}`);
    }
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`backoffice did not answer GET /readyz = 200 within ${READY_MS} ms:\n${logTail(log)}`);
    await Promise.race([delay(200), exited]);
  }
  return { child, url, log };
}

async function stopChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const quit = await Promise.race([exited.then(() => true), delay(5000).then(() => false)]);
  if (!quit) {
    child.kill('SIGKILL');
    await exited;
  }
}

// Last resort if the runner dies without after(): the server does not outlive the test.
process.once('exit', () => {
  if (server && server.child.exitCode === null) {
    try { server.child.kill('SIGKILL'); } catch { /* gone */ }
  }
});

// ------------------------------------------------------------------ page helpers

const byId = (id, root = page) => root.getByTestId(id);

// Waits until `locator` is visible with text matching `re`; the error tells what it shows.
async function expectText(locator, re, what, ms = WAIT_MS) {
  try {
    await locator.filter({ hasText: re }).first().waitFor({ state: 'visible', timeout: ms });
  } catch {
    const now = await locator.allInnerTexts().catch((e) => [`(${e.message})`]);
    throw new Error(`${what}: expected ${re}, the page shows ${JSON.stringify(now)}`);
  }
}

// Polls `probe` (every 100 ms) until it returns something truthy.
async function until(what, probe, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await delay(100);
  }
}

// The error bar's code inside `root`, once one shows.
async function errorCode(root, what) {
  const code = byId('error-code', root).first();
  try {
    await code.waitFor({ state: 'visible' });
  } catch {
    throw new Error(`${what}: no error shown; the page shows ${JSON.stringify(await root.innerText().catch(() => '?'))}`);
  }
  return (await code.innerText()).trim();
}

// Fails with the error the page shows, if any, instead of a bare timeout.
async function visibleOrError(locator, what, root = page) {
  try {
    await locator.waitFor({ state: 'visible' });
  } catch (e) {
    const err = await byId('error', root).allInnerTexts().catch(() => []);
    throw new Error(`${what} did not show${err.length ? `; the page shows the error ${JSON.stringify(err)}` : ''} (${e.message.split('\n')[0]})`);
  }
}

async function signIn({ username, password }) {
  await byId('page-login').waitFor({ state: 'visible' });
  await byId('login-username').fill(username);
  await byId('login-password').fill(password);
  await byId('login-submit').click();
}

async function signInOk(user) {
  await signIn(user);
  await visibleOrError(byId('layout'), `the console after ${user.username} signs in`, byId('page-login'));
  await expectText(byId('header-username'), new RegExp(`^${user.username}$`), 'the user name in the header');
}

async function signOut() {
  await byId('btn-logout').click();
  await byId('page-login').waitFor({ state: 'visible' });
}

// Opens a page through the side menu (so the menu must offer it).
async function openMenu(code, pageId) {
  const item = byId(`menu-${code}`);
  if (!(await item.isVisible())) {
    const parent = byId(`menu-${code.split('.')[0]}`);
    if (await parent.getAttribute('aria-expanded') === 'false') await parent.click();
  }
  await item.click();
  await byId(pageId).waitFor({ state: 'visible' });
}

// Clicks `button` and gives the API request that matches, once answered; the request must carry
// a bearer token and, being a mutation, an X-Txn-Group-Id.
async function mutation(method, pathRe, button, what) {
  const reqP = page.waitForRequest((r) => r.method() === method && pathRe.test(new URL(r.url()).pathname));
  await button.click();
  const req = await reqP;
  const res = await req.response();
  const headers = req.headers();
  assert.match(headers.authorization || '', /^Bearer \S+$/, `${what}: Authorization header`);
  assert.ok(headers['x-txn-group-id'], `${what}: X-Txn-Group-Id header`);
  return { req, res, txn: headers['x-txn-group-id'], body: safeJson(req) };
}

function safeJson(req) {
  try {
    return req.postDataJSON();
  } catch {
    return null;
  }
}

async function menuCodes() {
  const ids = await byId('menu').locator('[data-testid^="menu-"]').evaluateAll((els) => els.map((e) => e.getAttribute('data-testid')));
  return ids.filter((id) => id !== 'menu-empty').map((id) => id.slice('menu-'.length)).sort();
}

// ------------------------------------------------------------------ the test

describe('backoffice console in headless Chromium', { timeout: 300_000 }, () => {
  // What the audit log must show: the X-Txn-Group-Id of each step and what its entry names.
  const steps = {};

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ot-console-e2e-'));
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    backofficeBin();
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (run.sh does it)`);
    server = await startBackoffice();

    context = await chromium.launchPersistentContext(path.join(tmp, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1400, height: 1000 },
      timeout: 30_000,
    });
    context.setDefaultTimeout(WAIT_MS);
    page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') console.log(`[page console] ${m.text()}`); });
    page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith('/api/v2/')) apiRequests.push({ method: r.method(), path: u.pathname, headers: r.headers() });
    });
    await page.goto(`${server.url}/`);
  });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(ARTIFACTS, 'console.png'), fullPage: true }).catch(() => {});
    if (context) await context.close().catch(() => {});
    if (server) await stopChild(server.child);
    if (tmp) {
      if (fs.existsSync(path.join(tmp, 'backoffice.log'))) fs.copyFileSync(path.join(tmp, 'backoffice.log'), path.join(ARTIFACTS, 'backoffice.log'));
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    console.log(`# screenshots and the server log in ${ARTIFACTS}`);
  });

  it('sends an unauthenticated visitor to the login page; the initial sysadmin signs in', async () => {
    await byId('page-login').waitFor({ state: 'visible' });
    assert.equal(new URL(page.url()).pathname, '/login');
    // A wrong password is refused with its stable code, shown on the page.
    await signIn({ username: 'sysadmin', password: 'Wrong#Pass2026' });
    assert.equal(await errorCode(byId('login-error'), 'wrong password'), 'BAD_CREDENTIALS');
    await signInOk({ username: 'sysadmin', password: INIT_PASSWORD });
    await byId('page-home').waitFor({ state: 'visible' });
    const codes = await menuCodes();
    for (const c of ['system', 'system.users', 'system.roles', 'audit', 'audit.logs']) {
      assert.ok(codes.includes(c), `sysadmin's menu lacks ${c}: ${codes.join(', ')}`);
    }
    const token = await page.evaluate(() => sessionStorage.getItem('openteller.token'));
    assert.ok(token, 'the token is kept in sessionStorage');
  });

  it('creates a branch under the head office', async (t) => {
    if (!(await byId('menu-system.orgs').count())) {
      // docs/backoffice.md puts the organisation permissions in the business domain, which a
      // technical sysadmin does not hold: then the page must be refused, not half-usable.
      t.diagnostic('sysadmin has no organisation menu (organisations are business-domain): checking the 403 page instead');
      await page.goto(`${server.url}/orgs`);
      await byId('page-forbidden').waitFor({ state: 'visible' });
      await page.goto(`${server.url}/`);
      await byId('page-home').waitFor({ state: 'visible' });
      return;
    }
    await openMenu('system.orgs', 'page-orgs');
    const ho = byId('row-HO');
    await visibleOrError(ho, 'the head office (code HO)');
    await byId('btn-add-child', ho).click();
    const dlg = byId('dialog-org');
    await byId('field-code', dlg).fill(BRANCH.code);
    await byId('field-name', dlg).fill(BRANCH.name);
    await byId('field-level', dlg).selectOption('branch');
    const m = await mutation('POST', /^\/api\/v2\/platform\/orgs$/, byId('dialog-ok', dlg), 'create org');
    assert.equal(m.res.status(), 200, `create org answered ${m.res.status()}: ${await m.res.text()}`);
    await visibleOrError(byId(`row-${BRANCH.code}`), 'the new branch row', dlg);
    assert.equal((await byId('cell-name', byId(`row-${BRANCH.code}`)).innerText()).replace(/^└\s*/, ''), BRANCH.name);
    steps.orgCreate = { txn: m.txn, re: /org/i, what: 'org create' };
  });

  it('creates the technical role auditor, which waits for review', async () => {
    await openMenu('system.roles', 'page-roles');
    await byId('btn-create').click();
    const dlg = byId('dialog-role');
    await byId('field-code', dlg).fill('auditor');
    await byId('field-name', dlg).fill('Auditor');
    await byId('field-domain', dlg).selectOption('technical');
    await byId('field-dataScope', dlg).selectOption('all');
    await visibleOrError(byId('perm-audit:log:query', dlg), 'the permission audit:log:query in the role dialog', dlg);
    await byId('perm-audit:log:query', dlg).check();
    await byId('perm-platform:loginlog:query', dlg).check();
    const m = await mutation('POST', /^\/api\/v2\/platform\/roles$/, byId('dialog-ok', dlg), 'create role');
    assert.equal(m.res.status(), 200, `create role answered ${m.res.status()}: ${await m.res.text()}`);
    assert.deepEqual([...m.body.permissions].sort(), ['audit:log:query', 'platform:loginlog:query']);
    assert.equal(m.body.domain, 'technical');
    const row = byId('row-auditor');
    await visibleOrError(row, 'the auditor role row', dlg);
    assert.equal(await byId('cell-status', row).getAttribute('data-status'), 'pending');
    steps.roleCreate = { txn: m.txn, re: /role/i, what: 'role create', after: /auditor/ };

    // Its author may not review it: the refusal shows with its code.
    await byId('btn-review', row).click();
    const rv = byId('dialog-review');
    await byId('field-comment', rv).fill('my own role');
    await byId('review-approve', rv).click();
    assert.equal(await errorCode(rv, 'review by the author'), 'FAILED_PRECONDITION');
    await byId('dialog-cancel', rv).click();
    await rv.waitFor({ state: 'hidden' });
    assert.equal(await byId('cell-status', row).getAttribute('data-status'), 'pending');
  });

  it('creates a second technical administrator, secadmin', async () => {
    await openMenu('system.users', 'page-users');
    await byId('btn-create').click();
    const dlg = byId('dialog-user');
    await byId('field-username', dlg).fill(SECADMIN.username);
    await byId('field-displayName', dlg).fill(SECADMIN.displayName);
    await byId('field-password', dlg).fill(SECADMIN.password);
    assert.notEqual(await byId('field-org', dlg).inputValue(), '', 'an organisation is chosen');
    await visibleOrError(byId('role-sysadmin', dlg), 'the built-in sysadmin role in the user dialog', dlg);
    await byId('role-sysadmin', dlg).check();
    assert.equal(await byId('role-auditor', dlg).count(), 0, 'a pending role is not offered');
    const m = await mutation('POST', /^\/api\/v2\/platform\/users$/, byId('dialog-ok', dlg), 'create secadmin');
    assert.equal(m.res.status(), 200, `create user answered ${m.res.status()}: ${await m.res.text()}`);
    assert.equal(m.body.username, SECADMIN.username);
    await visibleOrError(byId(`row-${SECADMIN.username}`), 'the secadmin row', dlg);
    steps.secadminCreate = { txn: m.txn, re: /user/i, what: 'user create (secadmin)', after: /secadmin/ };
  });

  it('hands over to secadmin: the initial sysadmin is disabled for good', async () => {
    await signOut();
    await signInOk(SECADMIN);
    await signOut();
    await signIn({ username: 'sysadmin', password: INIT_PASSWORD });
    assert.equal(await errorCode(byId('login-error'), 'sysadmin after the handover'), 'ACCOUNT_DISABLED');
    await signInOk(SECADMIN);
  });

  it('secadmin approves the auditor role', async () => {
    await openMenu('system.roles', 'page-roles');
    const row = byId('row-auditor');
    await visibleOrError(row, 'the auditor role row');
    await byId('btn-review', row).click();
    const rv = byId('dialog-review');
    await byId('field-comment', rv).fill('needed by the audit team');
    const m = await mutation('POST', /^\/api\/v2\/platform\/roles\/\d+\/review$/, byId('review-approve', rv), 'review role');
    assert.equal(m.res.status(), 200, `review answered ${m.res.status()}: ${await m.res.text()}`);
    assert.deepEqual(m.body, { approve: true, comment: 'needed by the audit team' });
    await rv.waitFor({ state: 'hidden' });
    await until('the auditor role to show enabled', async () => (await byId('cell-status', row).getAttribute('data-status')) === 'enabled');
    await expectText(byId('cell-reviewComment', row), /needed by the audit team/, 'the review comment');
    steps.roleReview = { txn: m.txn, re: /role/i, what: 'role review', after: /enabled|approv|review/i };
  });

  it('secadmin creates alice with the auditor role', async () => {
    await openMenu('system.users', 'page-users');
    await byId('btn-create').click();
    const dlg = byId('dialog-user');
    await byId('field-username', dlg).fill(ALICE.username);
    await byId('field-displayName', dlg).fill(ALICE.displayName);
    await byId('field-password', dlg).fill(ALICE.password);
    await visibleOrError(byId('role-auditor', dlg), 'the approved auditor role in the user dialog', dlg);
    await byId('role-auditor', dlg).check();
    const m = await mutation('POST', /^\/api\/v2\/platform\/users$/, byId('dialog-ok', dlg), 'create alice');
    assert.equal(m.res.status(), 200, `create user answered ${m.res.status()}: ${await m.res.text()}`);
    const row = byId(`row-${ALICE.username}`);
    await visibleOrError(row, 'the alice row', dlg);
    await expectText(byId('cell-roles', row), /Auditor/, 'alice\'s roles');
    steps.aliceCreate = { txn: m.txn, re: /user/i, what: 'user create (alice)', after: /alice/ };
  });

  it('alice sees only the audit and login logs and is refused elsewhere', async () => {
    await signOut();
    await signInOk(ALICE);
    assert.deepEqual(await menuCodes(), ['audit', 'audit.logins', 'audit.logs']);
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-alice.png'), fullPage: true });

    // A page she may not use: the 403 page, whether typed in or reloaded.
    await page.goto(`${server.url}/users`);
    await byId('page-forbidden').waitFor({ state: 'visible' });
    assert.equal(await byId('page-users').count(), 0);
    await expectText(byId('header-username'), /^alice$/, 'still signed in after the reload');

    // And the API itself refuses her.
    const answer = await page.evaluate(async () => {
      const res = await fetch('/api/v2/platform/users', { headers: { Authorization: `Bearer ${sessionStorage.getItem('openteller.token')}` } });
      return { status: res.status, body: await res.json() };
    });
    assert.equal(answer.status, 403);
    assert.equal(answer.body.code, 'PERMISSION_DENIED');

    await openMenu('audit.logins', 'page-login-log');
    await visibleOrError(byId('page-login-log').locator('[data-testid^="row-"]').first(), 'a login log row');
  });

  it('the audit log shows each step, found by its transaction group', async () => {
    await openMenu('audit.logs', 'page-audit');
    const root = byId('page-audit');
    for (const step of Object.values(steps)) {
      await byId('filter-txnGroupId', root).fill(step.txn);
      await byId('btn-search', root).click();
      const rows = root.locator(`tr[data-txn="${step.txn}"]`);
      await visibleOrError(rows.first(), `the audit entry of ${step.what} (txnGroupId ${step.txn})`, root);
      const all = root.locator('tbody tr[data-testid^="row-"]');
      assert.equal(await all.count(), await rows.count(), `${step.what}: only its own group is listed`);
      const first = rows.first();
      const text = `${await byId('cell-action', first).innerText()} ${await byId('cell-target', first).innerText()}`;
      assert.match(text, step.re, `${step.what}: action and target ${JSON.stringify(text)}`);
      if (step.after) {
        // Some entry of the group holds the change; before/after are shown as text.
        let found = '';
        for (let i = 0; i < await rows.count(); i += 1) {
          const row = rows.nth(i);
          await byId('btn-details', row).click();
          const id = (await row.getAttribute('data-testid')).slice('row-'.length);
          const detail = byId(`detail-${id}`, root);
          const after = await byId('after', detail).innerText();
          const beforeText = await byId('before', detail).innerText();
          if (step.after.test(after) || step.after.test(beforeText)) found = after;
        }
        assert.ok(found, `${step.what}: no before/after of the group mentions ${step.after}`);
      }
    }
    // The reviewer is not the author.
    await byId('btn-reset', root).click();
    await byId('filter-txnGroupId', root).fill(steps.roleReview.txn);
    await byId('btn-search', root).click();
    await expectText(byId('cell-username', root.locator(`tr[data-txn="${steps.roleReview.txn}"]`).first()), /^secadmin$/, 'who reviewed the role');
    // A search by user name and order works too.
    await byId('btn-reset', root).click();
    await byId('filter-username', root).fill('sysadmin');
    await byId('filter-sortOrder', root).selectOption('asc');
    const listed = page.waitForRequest((r) => r.url().includes('/api/v2/audit/logs') && r.url().includes('sortOrder=asc'));
    await byId('btn-search', root).click();
    const req = await listed;
    assert.match(req.url(), /username=sysadmin/);
    await visibleOrError(root.locator('tbody tr[data-testid^="row-"]').first(), 'sysadmin\'s audit entries', root);
  });

  it('the zh-CN/en switch changes the menu texts and is remembered', async () => {
    const item = byId('menu-audit.logs');
    await page.evaluate(() => localStorage.removeItem('openteller.locale'));
    await page.reload();
    await item.waitFor({ state: 'visible' });
    assert.equal(await byId('locale-switch').inputValue(), 'zh-CN', 'zh-CN by default');
    const zh = (await item.innerText()).trim();
    assert.match(zh, /[\u4e00-\u9fff]/, `the zh-CN menu text ${JSON.stringify(zh)}`);

    const overlay = page.waitForRequest((r) => new URL(r.url()).pathname === '/api/v2/i18n/en');
    await byId('locale-switch').selectOption('en');
    const req = await overlay;
    assert.equal(req.headers().authorization, undefined, 'the i18n bundle is fetched without a token');
    await until('the menu to change language', async () => (await item.innerText()).trim() !== zh);
    const en = (await item.innerText()).trim();
    assert.doesNotMatch(en, /[\u4e00-\u9fff]/, `the en menu text ${JSON.stringify(en)}`);
    assert.match(en, /audit|log/i, `the en menu text ${JSON.stringify(en)}`);
    assert.equal(await page.evaluate(() => localStorage.getItem('openteller.locale')), 'en');

    await page.reload();
    await item.waitFor({ state: 'visible' });
    assert.equal((await item.innerText()).trim(), en, 'the choice survives a reload');
    await byId('locale-switch').selectOption('zh-CN');
    await until('the menu to return to zh-CN', async () => (await item.innerText()).trim() === zh);
  });

  it('shows hostile text as text', async () => {
    await signOut();
    await signInOk(SECADMIN);
    await openMenu('system.users', 'page-users');
    await byId('btn-create').click();
    const dlg = byId('dialog-user');
    await byId('field-username', dlg).fill(XSS_USER.username);
    await byId('field-displayName', dlg).fill(XSS_USER.displayName);
    await byId('field-password', dlg).fill(XSS_USER.password);
    await byId('role-auditor', dlg).check();
    const m = await mutation('POST', /^\/api\/v2\/platform\/users$/, byId('dialog-ok', dlg), 'create the XSS probe user');
    assert.equal(m.res.status(), 200, `create user answered ${m.res.status()}: ${await m.res.text()}`);
    const row = byId(`row-${XSS_USER.username}`);
    await visibleOrError(row, 'the XSS probe row', dlg);
    assert.equal(await byId('cell-displayName', row).innerText(), XSS);

    // Its audit entry shows the display name inside the JSON, as text as well.
    await openMenu('audit.logs', 'page-audit');
    const root = byId('page-audit');
    await byId('filter-txnGroupId', root).fill(m.txn);
    await byId('btn-search', root).click();
    const entry = root.locator(`tr[data-txn="${m.txn}"]`).first();
    await visibleOrError(entry, 'the audit entry of the XSS probe user', root);
    await byId('btn-details', entry).click();
    await expectText(root.locator('[data-testid^="detail-"] [data-testid="after"]'), /<img src=x onerror=/, 'the after JSON');

    await delay(500); // an injected image would have failed to load and fired by now
    assert.equal(await page.evaluate(() => window.__xss), undefined, 'no injected script ran');
    assert.equal(await page.locator('img[src="x"]').count(), 0, 'no injected element');
  });

  it('sent a token with every call and a transaction group with every mutation; no page error', () => {
    const open = new Set(['/api/v2/auth/login']);
    for (const r of apiRequests) {
      if (r.path.startsWith('/api/v2/i18n/')) continue;
      if (!open.has(r.path)) assert.match(r.headers.authorization || '', /^Bearer \S+$/, `${r.method} ${r.path} without a token`);
      if (r.method !== 'GET') assert.ok(r.headers['x-txn-group-id'], `${r.method} ${r.path} without X-Txn-Group-Id`);
    }
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    assert.deepEqual(dialogs, [], 'native dialogs opened by the page');
  });
});
