// The kiosk's business flow: attract → card → PIN → services → receipt → card back, written
// with SJSL / SJSBL. The UI (App.vue) only draws `ui` and reports the customer's choices
// through `act()`, `touch()`, `moreTime()` and `cancelPin()`; everything that talks to the
// terminal is here.
import { reactive } from 'vue';
import { Sjsl, SjslError, defaultTransport } from './sjsl/index.js';
import { createSjsbl, validateAmount, XFS } from './sjsbl/index.js';
import { i18n, money, rcText, setLocale, t } from './i18n.js';

/** The state the screens draw. */
export const ui = reactive({
  /** boot | oos | attract | reading | pin | menu | amount | entry | transferConfirm | processing
   *  | dispensing | takeCash | result | printing | message | takeCard | goodbye */
  screen: 'boot',
  connected: false,
  inService: false,
  terminalId: '',
  bankName: '',
  locales: /** @type {string[]} */ ([]),
  pinPrompt: 'pin.title',
  pinDigits: 0,
  pinTriesLeft: /** @type {number|null} */ (null),
  pinProblem: '',
  presets: /** @type {number[]} */ ([]),
  currency: 'CNY',
  rules: /** @type {{multipleOf?: number, min?: number, max?: number}} */ ({}),
  pinMin: 4,
  pinMax: 6,
  amountProblem: /** @type {string|null} */ (null),
  entry: '',
  entryKind: /** @type {'amount'|'account'} */ ('amount'),
  entryTitle: '',
  entryProblem: '',
  transfer: { account: '', amount: 0 },
  result: /** @type {{title: string, lines: string[], big?: string, canPrint: boolean}|null} */ (null),
  message: /** @type {{key: string, params?: any, tone: 'info'|'error'|'warn'}|null} */ (null),
  moreTime: false,
  busyKey: 'processing.title',
});

/** The customer walked away (timeout, "no more time") or canceled. */
class CustomerGone extends Error {}
/** The card was retained; `key` is the message to show. */
class CardRetained extends Error {
  /** @param {string} key */
  constructor(key) {
    super(key);
    this.key = key;
  }
}

/** @type {any} */
let cfg = null;
/** @type {Sjsl} */
let sjsl;
/** @type {ReturnType<typeof createSjsbl>} */
let sjsbl;
let signedOn = false;
/** @type {AbortController|null} */
let attractAbort = null;
/** @type {AbortController|null} */
let pinAbort = null;
/** @type {((value: any) => void)|null} */
let choice = null;
/** @type {(() => void)|null} */
let activity = null;
/** @type {((yes: boolean) => void)|null} */
let moreTimeAnswer = null;

const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/** The customer chose something on the current screen. */
export function act(/** @type {any} */ value) {
  const c = choice;
  choice = null;
  if (c) c(value);
}

/** The customer did something (typing on the on-screen keyboard): the idle timer restarts. */
export function touch() {
  if (activity) activity();
}

/** The answer to "more time?". */
export function moreTime(/** @type {boolean} */ yes) {
  if (moreTimeAnswer) moreTimeAnswer(yes);
}

/** The on-screen cancel during PIN entry. */
export function cancelPin() {
  if (pinAbort) pinAbort.abort();
}

/** The on-screen keyboard. */
export function key(/** @type {string} */ k) {
  touch();
  const max = ui.entryKind === 'account' ? 19 : 9;
  if (k === 'BACK') ui.entry = ui.entry.slice(0, -1);
  else if (k === 'CLEAR') ui.entry = '';
  else if (/^\d$/.test(k) && ui.entry.length < max) {
    if (ui.entryKind === 'amount' && ui.entry === '' && k === '0') return;
    ui.entry += k;
  }
  ui.entryProblem = '';
}

/** Switches the language. */
export function chooseLocale(/** @type {string} */ l) {
  touch();
  setLocale(l);
}

/** Asks "more time?" for `cfg.moreTimeMs`; resolves true for yes. */
function offerMoreTime() {
  return new Promise((resolve) => {
    ui.moreTime = true;
    const timer = setTimeout(() => finish(false), cfg.moreTimeMs);
    const finish = (/** @type {boolean} */ yes) => {
      clearTimeout(timer);
      moreTimeAnswer = null;
      ui.moreTime = false;
      resolve(yes);
    };
    moreTimeAnswer = finish;
  });
}

/**
 * Shows `screen` and waits for the customer's choice, with the idle timeout and the
 * "more time?" prompt. Rejects CustomerGone when the customer does not answer.
 * @param {string} screen
 * @returns {Promise<any>}
 */
function askCustomer(screen) {
  ui.screen = screen;
  return new Promise((resolve, reject) => {
    /** @type {any} */
    let timer = null;
    let asking = false;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        asking = true;
        const yes = await offerMoreTime();
        asking = false;
        if (choice !== onChoice) return; // answered meanwhile
        if (yes) arm();
        else done(() => reject(new CustomerGone('no answer')));
      }, cfg.customerTimeoutMs);
    };
    const done = (/** @type {() => void} */ fn) => {
      clearTimeout(timer);
      if (asking && moreTimeAnswer) moreTimeAnswer(true);
      activity = null;
      if (choice === onChoice) choice = null;
      fn();
    };
    const onChoice = (/** @type {any} */ v) => done(() => resolve(v));
    choice = onChoice;
    activity = arm;
    arm();
  });
}

/**
 * Shows a message for `cfg.messageMs`.
 * @param {string} key
 * @param {'info'|'error'|'warn'} [tone]
 * @param {any} [params]
 */
async function showMessage(key, tone = 'error', params) {
  ui.message = { key, tone, params };
  ui.screen = 'message';
  await sleep(cfg.messageMs);
}

/** A line for the electronic journal (the host adds time and terminal id; best effort). */
function note(/** @type {string} */ text) {
  sjsl.journal.write(`KIOSK ${text}`).catch(() => {});
}

/** Loads the kiosk configuration shipped next to index.html. */
async function loadConfig() {
  const res = await fetch('./kiosk.config.json', { cache: 'no-store' });
  if (!res.ok) throw new Error(`kiosk.config.json: HTTP ${res.status}`);
  return res.json();
}

/** Starts the kiosk: configuration, connection, status, then the customer loop forever. */
export async function start() {
  cfg = await loadConfig();
  ui.bankName = cfg.bankName || '';
  ui.locales = cfg.locales || ['zh-CN', 'en'];
  ui.presets = cfg.presetAmounts || [];
  ui.currency = cfg.currency;
  ui.rules = cfg.amountRules || {};
  ui.pinMin = cfg.minPinLength || 4;
  ui.pinMax = cfg.maxPinLength || 6;
  setLocale(cfg.defaultLocale || 'zh-CN');
  ui.screen = 'oos';

  sjsl = new Sjsl(defaultTransport(), { connectWaitMs: 10_000 });
  sjsbl = createSjsbl(sjsl, cfg);
  const applyStatus = (/** @type {any} */ s) => {
    if (!s) return;
    ui.inService = !!s.inService;
    ui.terminalId = s.terminalId || '';
    if (!ui.inService && attractAbort) attractAbort.abort();
  };
  sjsl.terminal.onStatus(applyStatus);
  sjsl.on('bridge.open', () => {
    ui.connected = true;
    signedOn = false;
    sjsl.terminal.status().then(applyStatus, () => {});
  });
  sjsl.on('bridge.closed', () => {
    ui.connected = false;
    ui.inService = false;
    if (attractAbort) attractAbort.abort();
  });
  if (sjsl.connected) {
    ui.connected = true;
    applyStatus(await sjsl.terminal.status().catch(() => null));
  }
  for (;;) {
    try {
      await attract();
    } catch (e) {
      console.error('kiosk loop', e);
      await sleep(1000);
    }
  }
}

/** One turn of the idle loop: out of service, or wait for a card and serve the customer. */
async function attract() {
  if (!ui.connected || !ui.inService) {
    ui.screen = 'oos';
    while (!ui.connected || !ui.inService) await sleep(250);
    return;
  }
  setLocale(cfg.defaultLocale || 'zh-CN');
  ui.pinTriesLeft = null;
  if (!signedOn) await signOn();
  ui.screen = 'attract';
  attractAbort = new AbortController();
  let card;
  try {
    card = await sjsbl.readCard({
      signal: attractAbort.signal,
      timeoutMs: cfg.cardReadTimeoutMs || 0,
      onInserted: () => {
        ui.screen = 'reading';
      },
    });
  } catch (e) {
    const err = /** @type {SjslError} */ (e);
    if (err.canceled || err.timedOut || err.code === 'DISCONNECTED') return;
    if (err.code === 'OUT_OF_SERVICE') {
      ui.inService = false;
      return;
    }
    if (err.code === 'SEQUENCE_ERROR') {
      // A card session is still open (the page was reloaded mid-session): give the card back.
      await giveCardBack();
      return;
    }
    if (err.xfsCode === XFS.INVALIDMEDIA || err.code === 'INVALID_CARD') {
      await showMessage('card.invalid', 'warn');
      await giveCardBack();
      return;
    }
    console.error('card read', err);
    await sleep(1000);
    return;
  } finally {
    attractAbort = null;
  }
  await session(card.maskedPan);
}

/** Sign-on (key exchange) once per connection; failures leave it for the next turn. */
async function signOn() {
  try {
    await sjsbl.signOn();
    signedOn = true;
  } catch (e) {
    const err = /** @type {SjslError} */ (e);
    // Without [online] there is nothing to sign on to: the flows fail with NOT_CONFIGURED.
    if (err.code === 'NOT_CONFIGURED') signedOn = true;
    else console.warn('sign-on failed', err.code, err.message);
  }
}

/** One customer, from the card in to the card out. */
async function session(/** @type {string} */ maskedPan) {
  let retained = false;
  note(`SESSION card=${maskedPan}`);
  try {
    await askPin('pin.title');
    for (;;) {
      const service = await askCustomer('menu');
      if (service === 'exit') break;
      const next = await runService(service);
      if (next === 'finish') break;
    }
  } catch (e) {
    if (e instanceof CardRetained) {
      retained = true;
      note(`CARD RETAINED ${e.key}`);
      await showMessage(e.key, 'error');
    } else if (!(e instanceof CustomerGone)) {
      const err = /** @type {SjslError} */ (e);
      console.error('session', err);
      await showMessage(errorKey(err), 'error');
    }
  }
  if (!retained) await giveCardBack();
  ui.screen = 'goodbye';
  await sleep(1500);
}

/**
 * The message for a failure.
 * @param {SjslError} err
 */
function errorKey(err) {
  switch (err && err.code) {
    case 'HOST_TIMEOUT':
      return 'error.hostTimeout';
    case 'HOST_UNAVAILABLE':
      return 'error.hostUnavailable';
    default:
      return 'error.session';
  }
}

/** Ejects the card and waits for the customer to take it (retained when left). */
async function giveCardBack() {
  ui.screen = 'takeCard';
  const r = await sjsbl.returnCard({ takeTimeoutMs: cfg.cardTakeTimeoutMs, retainOnTimeout: cfg.retainCardOnTimeout });
  if (r.returned) return;
  if (r.error) await showMessage(r.retained ? 'card.jammed' : 'card.stuck', 'error');
  else if (r.retained) await showMessage('card.retainedTimeout', 'error');
}

/**
 * PIN entry with the masked echo; more time on a timeout.
 * @param {string} prompt
 */
async function askPin(prompt) {
  for (;;) {
    ui.pinPrompt = prompt;
    ui.pinDigits = 0;
    ui.screen = 'pin';
    pinAbort = new AbortController();
    try {
      await sjsbl.enterPin({
        signal: pinAbort.signal,
        timeoutMs: cfg.pinTimeoutMs,
        minLength: cfg.minPinLength,
        maxLength: cfg.maxPinLength,
        onKey: (n) => {
          ui.pinDigits = n;
        },
      });
      ui.pinProblem = '';
      return;
    } catch (e) {
      const err = /** @type {SjslError} */ (e);
      if (err.code === 'CUSTOMER_CANCEL' || err.canceled) throw new CustomerGone('canceled');
      if (err.timedOut) {
        if (await offerMoreTime()) continue;
        throw new CustomerGone('no PIN');
      }
      throw err;
    } finally {
      pinAbort = null;
    }
  }
}

/**
 * A wrong PIN in a host answer: records the tries left, retains the card at the limit.
 * @param {any} r  a txn answer
 * @returns {Promise<boolean>} true when the PIN was wrong (and the card is still in)
 */
async function wrongPin(r) {
  const limit = r.responseCode === '75' || r.responseCode === '38';
  if (r.responseCode !== '55' && !limit) return false;
  if (typeof r.pinTriesLeft === 'number') ui.pinTriesLeft = r.pinTriesLeft;
  note(`WRONG PIN rc=${r.responseCode} triesLeft=${r.pinTriesLeft ?? '?'}${r.cardRetained ? ' cardRetained' : ''}`);
  if (r.cardRetained === true) throw new CardRetained('card.retainedPin');
  // terminal-native tried to retain the card and the reader failed: the card must not be given
  // back, the staff must come.
  if (r.cardRetained === false) throw new CardRetained('card.stuck');
  if (r.pinTriesLeft === 0 || limit) {
    // A host side without card retention: the page keeps the card itself.
    const kept = await sjsbl.retainCard(`PIN limit (rc=${r.responseCode})`);
    throw new CardRetained(kept ? 'card.retainedPin' : 'card.stuck');
  }
  return true;
}

/**
 * A host transaction, with re-entry of a wrong PIN and one sign-on retry on A7.
 * @param {() => Promise<any>} send
 * @param {string} busyKey
 */
async function hostTxn(send, busyKey = 'processing.title') {
  let signOnRetried = false;
  for (;;) {
    ui.busyKey = busyKey;
    ui.screen = 'processing';
    const r = await send();
    if (r.responseCode === 'A7' && !signOnRetried) {
      signOnRetried = true;
      signedOn = false;
      await signOn();
      continue;
    }
    if (await wrongPin(r)) {
      await askPin('pin.retry');
      continue;
    }
    return r;
  }
}

/**
 * A declined answer: the message, then back to the menu.
 * @param {any} r
 */
async function declined(r) {
  note(`DECLINED rc=${r.responseCode}`);
  await showMessage('error.decline', 'warn', { code: r.responseCode, text: rcText(r.responseCode) });
  return 'menu';
}

/**
 * One service from the menu. Resolves 'menu' (back to the menu) or 'finish' (card out).
 * @param {string} service
 * @returns {Promise<'menu'|'finish'>}
 */
async function runService(service) {
  try {
    switch (service) {
      case 'withdrawal':
        return await withdrawal();
      case 'inquiry':
        return await inquiry();
      case 'transfer':
        return await transfer();
      case 'pinChange':
        return await pinChange();
      default:
        return 'menu';
    }
  } catch (e) {
    if (e instanceof CardRetained || e instanceof CustomerGone) throw e;
    const err = /** @type {SjslError} */ (e);
    console.error(service, err);
    note(`${service} FAILED ${err.code}: ${err.message}`);
    await showMessage(
      err.code === 'HOST_TIMEOUT' ? 'error.hostTimeout' : err.code === 'HOST_UNAVAILABLE' ? 'error.hostUnavailable' : 'error.generic',
      'error',
    );
    return 'finish';
  }
}

/** The amount screen: a preset, or "other" and the on-screen keyboard. Null: back. */
async function chooseWithdrawalAmount() {
  const rules = cfg.amountRules || {};
  let typing = false;
  return sjsbl.chooseAmount({
    ...rules,
    ask: async (problem) => {
      ui.amountProblem = problem;
      for (;;) {
        if (!typing) {
          const v = await askCustomer('amount');
          if (v === 'back') return null;
          if (v !== 'other') return Number(v);
          typing = true;
          ui.amountProblem = null;
        }
        const s = await askEntry('amount.enter', 'amount', problem ? amountProblemText(problem) : '');
        problem = null;
        if (s === null) {
          typing = false;
          continue;
        }
        return Number(s) * 100;
      }
    },
  });
}

/** @param {string} problem */
function amountProblemText(problem) {
  const r = cfg.amountRules || {};
  return t(`amount.problem.${problem}`, {
    min: money(r.min || 0, cfg.currency),
    max: money(r.max || 0, cfg.currency),
    multiple: money(r.multipleOf || 0, cfg.currency),
  });
}

/**
 * The on-screen keyboard: resolves the digits typed, or null for cancel.
 * @param {string} title
 * @param {'amount'|'account'} kind
 * @param {string} [problem]
 */
async function askEntry(title, kind, problem = '') {
  ui.entry = '';
  ui.entryKind = kind;
  ui.entryTitle = title;
  ui.entryProblem = problem;
  for (;;) {
    const v = await askCustomer('entry');
    if (v === 'cancel') return null;
    if (v === 'ok' && ui.entry !== '') return ui.entry;
  }
}

async function withdrawal() {
  const amount = await chooseWithdrawalAmount();
  if (amount === null) return 'menu';
  const currency = cfg.currency;
  const r = await hostTxn(() => sjsl.txn.withdrawal({ amount, currency, pinBlockFrom: 'pinpad' }));
  if (!r.approved) return declined(r);
  note(`WITHDRAWAL approved ref=${r.authorization} amount=${amount} ${currency}`);
  ui.busyKey = 'cash.dispensing';
  ui.screen = 'dispensing';
  let d;
  try {
    d = await sjsbl.dispenseCash({
      amount,
      currency,
      authorization: r.authorization,
      takeTimeoutMs: cfg.cashTakeTimeoutMs,
      onPresented: () => {
        ui.screen = 'takeCash';
      },
    });
  } catch (e) {
    const err = /** @type {SjslError} */ (e);
    note(`DISPENSE FAILED ref=${r.authorization}: ${err.code} ${err.message}`);
    await showMessage('error.dispense', 'error');
    return 'finish';
  }
  if (!d.taken) {
    note(`CASH NOT TAKEN ref=${r.authorization}`);
    await showMessage('error.cashNotTaken', 'error');
    return 'finish';
  }
  return showResult({
    title: t('result.withdrawal', { amount: money(amount, currency) }),
    big: money(amount, currency),
    lines: receiptBody([
      `${t('menu.withdrawal')}: ${money(amount, currency)}`,
      `REF: ${r.authorization}`,
      ...(r.balance ? [`${t('result.inquiry')}: ${money(r.balance.available, currency)}`] : []),
    ]),
  });
}

async function inquiry() {
  const r = await hostTxn(() => sjsl.txn.inquiry({ pinBlockFrom: 'pinpad' }));
  if (!r.approved) return declined(r);
  const cur = r.balance?.currency && /^[A-Z]{3}$/.test(r.balance.currency) ? r.balance.currency : cfg.currency;
  const available = money(r.balance?.available ?? 0, cur);
  const ledger = money(r.balance?.ledger ?? r.balance?.available ?? 0, cur);
  return showResult({
    title: t('result.inquiry'),
    big: available,
    lines: receiptBody([`${t('result.inquiry')}: ${available}`, `${t('result.ledger')}: ${ledger}`]),
  });
}

async function transfer() {
  let account = null;
  let problem = '';
  for (;;) {
    account = await askEntry('transfer.account', 'account', problem);
    if (account === null) return 'menu';
    if (/^\d{12,19}$/.test(account)) break;
    problem = t('transfer.badAccount');
  }
  let amount = 0;
  problem = '';
  for (;;) {
    const s = await askEntry('transfer.amount', 'amount', problem);
    if (s === null) return 'menu';
    amount = Number(s) * 100;
    const p = validateAmount(amount, { min: 100, max: cfg.transferMax });
    if (!p) break;
    problem = t(`amount.problem.${p}`, { min: money(100, cfg.currency), max: money(cfg.transferMax || 0, cfg.currency), multiple: '' });
  }
  ui.transfer = { account, amount };
  const ok = await askCustomer('transferConfirm');
  if (ok !== 'ok') return 'menu';
  const currency = cfg.currency;
  const r = await hostTxn(() => sjsl.txn.transfer({ toAccount: account, amount, currency }));
  if (!r.approved) return declined(r);
  note(`TRANSFER approved amount=${amount} ${currency}`);
  const masked = account.length > 10 ? `${account.slice(0, 6)}${'*'.repeat(account.length - 10)}${account.slice(-4)}` : account;
  return showResult({
    title: t('result.transfer', { amount: money(amount, currency), account: masked }),
    big: money(amount, currency),
    lines: receiptBody([`${t('menu.transfer')}: ${money(amount, currency)}`, `${t('transfer.to')}: ${masked}`]),
  });
}

async function pinChange() {
  let prompt = 'pin.current';
  for (;;) {
    await askPin(prompt);
    await sjsl.txn.pinChange({ step: 'current' });
    ui.pinProblem = '';
    /** @type {any} */
    let r = null;
    while (r === null) {
      await askPin('pin.new');
      await sjsl.txn.pinChange({ step: 'new' });
      await askPin('pin.confirm');
      ui.busyKey = 'processing.title';
      ui.screen = 'processing';
      try {
        r = await sjsl.txn.pinChange({ step: 'confirm' });
      } catch (e) {
        const err = /** @type {SjslError} */ (e);
        if (err.code !== 'PIN_MISMATCH') throw err;
        ui.pinProblem = 'error.pinMismatch';
      }
    }
    ui.pinProblem = '';
    // The current PIN is checked by the host with the change: start again when it was wrong.
    if (await wrongPin(r)) {
      prompt = 'pin.current';
      ui.pinProblem = 'pin.retry';
      continue;
    }
    if (!r.approved) return declined(r);
    note('PIN CHANGE approved');
    return showResult({ title: t('result.pinChange'), lines: receiptBody([t('result.pinChange')]) });
  }
}

/**
 * The receipt's text around the transaction lines.
 * @param {string[]} lines
 */
function receiptBody(lines) {
  const now = new Date();
  const pad = (/** @type {number} */ n) => String(n).padStart(2, '0');
  return [
    cfg.bankName || 'OpenTeller',
    `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())} ${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}`,
    `TERMINAL: ${ui.terminalId}`,
    '--------------------------------',
    ...lines,
    '--------------------------------',
  ];
}

/**
 * The result screen: print a receipt, another service, or finish.
 * @param {{title: string, lines: string[], big?: string}} r
 */
async function showResult(r) {
  ui.result = { ...r, canPrint: !!cfg.devices.ptr };
  const v = await askCustomer('result');
  if (v === 'another') return 'menu';
  if (v === 'print') {
    ui.screen = 'printing';
    const p = await sjsbl.printReceipt({ lines: r.lines });
    if (p.printed) await showMessage('receipt.take', 'info');
    else await showMessage('receipt.failed', 'warn');
  }
  return 'finish';
}

export { i18n };
