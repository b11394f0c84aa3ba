'use strict';
// The OpenTeller device simulator panel. Talks only to the panel server it came from:
//   GET /api/devices, POST /api/devices/{name}/simulator, GET /api/events (SSE).
// Messages are proto3 JSON (camelCase fields, enums by full name, bytes as base64, 64-bit
// integers as strings). PIN pad key presses are never kept or shown: only their count.

const LOG_CAP = 300;

// CEN/XFS 3.x error numbers for the ErrorSimulating dialog (XFSAPI.H and the class headers).
const XFS_ERRORS = {
  generic: [['CANCELED', -4], ['DEV_NOT_READY', -13], ['HARDWARE_ERROR', -14], ['INTERNAL_ERROR', -15],
    ['INVALID_COMMAND', -20], ['INVALID_REQ_ID', -27], ['TIMEOUT', -48], ['UNSUPP_COMMAND', -50],
    ['INVALID_DATA', -52], ['USER_ERROR', -55], ['UNSUPP_DATA', -56]],
  DEVICE_CLASS_CARD_READER: [['MEDIAJAM', -200], ['NOMEDIA', -201], ['MEDIARETAINED', -202],
    ['RETAINBINFULL', -203], ['INVALIDDATA', -204], ['INVALIDMEDIA', -205], ['SHUTTERFAIL', -209],
    ['SECURITYFAIL', -210], ['PROTOCOLNOTSUPP', -211], ['ATRNOTOBTAINED', -212], ['INVALIDKEY', -213],
    ['CHIPPOWERNOTSUPP', -215], ['CARDTOOSHORT', -216], ['CARDTOOLONG', -217]],
  DEVICE_CLASS_PIN_PAD: [['KEYNOTFOUND', -400], ['MODENOTSUPPORTED', -401], ['ACCESSDENIED', -402],
    ['INVALIDID', -403], ['DUPLICATEKEY', -404], ['KEYNOVALUE', -406], ['USEVIOLATION', -407],
    ['NOPIN', -408], ['INVALIDKEYLENGTH', -409], ['KEYINVALID', -410], ['KEYNOTSUPPORTED', -411],
    ['NOACTIVEKEYS', -412], ['MINIMUMLENGTH', -415], ['INVALIDDATA', -417], ['ALGORITHMNOTSUPP', -421],
    ['FORMATNOTSUPP', -422], ['KCVVERIFICATIONFAILED', -429]],
  DEVICE_CLASS_CASH_DISPENSER: [['INVALIDCURRENCY', -300], ['CASHUNITERROR', -302],
    ['INVALIDDENOMINATION', -303], ['INVALIDMIXNUMBER', -304], ['NOCURRENCYMIX', -305],
    ['NOTDISPENSABLE', -306], ['TOOMANYITEMS', -307], ['SAFEDOOROPEN', -310], ['SHUTTERNOTOPEN', -312],
    ['SHUTTEROPEN', -313], ['SHUTTERCLOSED', -314], ['INVALIDCASHUNIT', -315], ['NOITEMS', -316],
    ['ITEMSTAKEN', -323], ['ITEMSNOTTAKEN', -335], ['ITEMSLEFT', -336]],
  DEVICE_CLASS_RECEIPT_PRINTER: [['FORMNOTFOUND', -100], ['FIELDNOTFOUND', -101], ['NOMEDIAPRESENT', -102],
    ['FLUSHFAIL', -104], ['MEDIAOVERFLOW', -105], ['FIELDERROR', -107], ['MEDIAJAMMED', -119],
    ['CHARSETDATA', -121], ['PAPERJAMMED', -122], ['PAPEROUT', -123]],
};

// States the Status dialog offers (POWER_OFF is Close Device).
const DEVICE_STATES = ['ONLINE', 'OFFLINE', 'NO_DEVICE', 'HARDWARE_ERROR', 'USER_ERROR', 'BUSY'];
const MEDIA_STATES = ['NOT_PRESENT', 'PRESENT', 'ENTERING', 'JAMMED', 'LATCHED', 'UNKNOWN'];
const PAPER_STATES = ['FULL', 'LOW', 'OUT', 'JAMMED'];
const UNIT_TYPES = ['BILL_CASSETTE', 'REJECT', 'RETRACT'];
const CLASS_LABEL = {
  DEVICE_CLASS_CARD_READER: 'Card reader',
  DEVICE_CLASS_PIN_PAD: 'PIN pad',
  DEVICE_CLASS_CASH_DISPENSER: 'Cash dispenser',
  DEVICE_CLASS_RECEIPT_PRINTER: 'Receipt printer',
};

const devices = new Map();
let selected = null;

// ---------------------------------------------------------------- small helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function short(value, prefix) {
  if (value === undefined || value === null || value === '') return 'UNSPECIFIED';
  return String(value).startsWith(prefix) ? String(value).slice(prefix.length) : String(value);
}

function num(value) {
  const n = Number(value || 0);
  return Number.isFinite(n) ? n : 0;
}

function b64ToHex(b64) {
  if (!b64) return '';
  try {
    return Array.from(atob(b64), (c) => c.charCodeAt(0).toString(16).padStart(2, '0')).join('').toUpperCase();
  } catch (_) {
    return '';
  }
}

function hexToB64(hex) {
  const clean = String(hex || '').replace(/[\s:]/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new Error('hex needs an even number of 0-9/A-F digits');
  let bin = '';
  for (let i = 0; i < clean.length; i += 2) bin += String.fromCharCode(parseInt(clean.slice(i, i + 2), 16));
  return btoa(bin);
}

function timeOf(ms) {
  const d = ms ? new Date(num(ms)) : new Date();
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function select(options, value) {
  const el = h('select');
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    el.append(h('option', { value: v, selected: v === value }, label));
  }
  return el;
}

function field(label, control) {
  return h('label', { class: 'field' }, label, control);
}

function completionText(c) {
  c = c || {};
  let t = short(c.code, 'COMPLETION_CODE_');
  if (c.errorCode) t += ` · ${c.errorName || 'error'} (${c.errorCode})`;
  if (c.description) t += ` · ${c.description}`;
  return t;
}

// ---------------------------------------------------------------- talking to the panel

async function sim(dev, label, request) {
  let outcome;
  try {
    const r = await fetch(`/api/devices/${encodeURIComponent(dev.name)}/simulator`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(request),
    });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      outcome = { ok: false, text: `${r.status} ${body && body.code ? body.code : ''} · ${body && body.message ? body.message : 'no details'}` };
    } else {
      const ok = body.result && body.result.code === 'COMPLETION_CODE_SUCCESS';
      outcome = { ok, text: completionText(body.result), reply: body };
      if (body.status) { dev.status = body.status; render(dev); }
    }
  } catch (e) {
    outcome = { ok: false, text: `the panel cannot be reached: ${e.message}` };
  }
  showResult(dev, label, outcome);
  return outcome;
}

function showResult(dev, label, outcome) {
  const box = dev.el.result;
  box.hidden = false;
  box.className = 'result ' + (outcome.ok ? 'ok' : 'bad');
  box.replaceChildren(h('b', {}, label), ' — ', outcome.text);
  addLog(dev, { kind: outcome.ok ? 'action' : 'action bad', key: label, text: outcome.text });
}

async function refreshStatus(dev) {
  try {
    const r = await fetch(`/api/devices/${encodeURIComponent(dev.name)}/status`);
    if (!r.ok) return;
    dev.status = await r.json();
    render(dev);
  } catch (_) { /* the event stream reports a lost panel */ }
}

// ---------------------------------------------------------------- event log

function addLog(dev, entry, raw) {
  const li = h('li', { class: entry.kind || '' });
  const head = [h('span', { class: 't' }, timeOf(entry.at)), h('span', { class: 'k' }, entry.key), entry.text || ''];
  if (raw) {
    li.append(h('details', {}, h('summary', {}, ...head), h('pre', {}, JSON.stringify(raw, null, 2))));
  } else {
    li.append(...head);
  }
  const log = dev.el.log;
  log.prepend(li);
  while (log.childElementCount > LOG_CAP) log.lastElementChild.remove();
}

function describeNotice(n) {
  const seq = n.sequence ? `#${n.sequence} ` : '';
  if (n.commandStarted) {
    return { key: 'CommandStarted', text: `${seq}${n.commandStarted.command} (${n.commandStarted.requestId})` };
  }
  if (n.commandFinished) {
    const c = n.commandFinished.completion || {};
    const ok = c.code === 'COMPLETION_CODE_SUCCESS';
    return { key: 'CommandFinished', kind: ok ? '' : 'bad', text: `${seq}${n.commandFinished.command} (${n.commandFinished.requestId}) → ${completionText(c)}` };
  }
  const ev = n.event || {};
  if (ev.statusChanged) {
    return { key: 'StatusChanged', text: seq + statusSummary(ev.statusChanged) };
  }
  for (const cls of ['cardReader', 'pinPad', 'cashDispenser', 'receiptPrinter']) {
    if (ev[cls]) {
      const name = Object.keys(ev[cls])[0] || '?';
      const body = ev[cls][name] || {};
      let text = `${seq}${cls}.${name}`;
      if (name === 'keyPressed') text += ` ${body.key || ''} (${num(body.digitsEntered)} entered)`;
      else if (name === 'cardAction') text += ` ${short(body.action, 'CARD_ACTION_')}`;
      else if (name === 'retainBinThreshold') text += ` ${short(body.state, 'RETAIN_BIN_STATE_')}`;
      else if (name === 'paperThreshold') text += ` ${short(body.paper, 'PAPER_STATE_')}`;
      else if (name === 'cashUnitThreshold' && body.unit) text += ` unit ${body.unit.number} ${short(body.unit.status, 'CASH_UNIT_STATUS_')}`;
      return { key: 'Event', text };
    }
  }
  return { key: 'Notice', text: seq };
}

function statusSummary(s) {
  const parts = [`device ${short(s.device, 'DEVICE_STATE_')}`];
  if (s.cardReader) parts.push(`media ${short(s.cardReader.media, 'MEDIA_STATUS_')}`);
  if (s.pinPad) parts.push(`entry ${s.pinPad.entryActive ? 'active' : 'idle'}`, `${num(s.pinPad.digitsEntered)} digits`);
  if (s.cashDispenser) parts.push(`output ${short(s.cashDispenser.output, 'OUTPUT_POSITION_')}`);
  if (s.receiptPrinter) parts.push(`paper ${short(s.receiptPrinter.paper, 'PAPER_STATE_')}`, `media ${short(s.receiptPrinter.media, 'PRINTER_MEDIA_')}`);
  if (s.queuedCommands) parts.push(`${s.queuedCommands} queued`);
  return parts.join(', ');
}

// ---------------------------------------------------------------- live updates

function onDeviceView(view) {
  const dev = devices.get(view.name);
  if (!dev) return;
  const was = dev.view ? dev.view.connected : undefined;
  dev.view = view;
  if (view.capabilities) dev.caps = view.capabilities;
  if (view.status) dev.status = view.status;
  dev.running = new Map((view.running || []).map((r) => [r.requestId, r.command]));
  if (!view.connected) dev.promptPending = false;
  if (was !== view.connected) {
    addLog(dev, view.connected
      ? { kind: 'sys', key: 'Connected', text: view.endpoint }
      : { kind: 'sys', key: 'Disconnected', text: view.error || 'connecting…' });
    if (view.connected) onConnected(dev);
  }
  if (view.missedNotices) addLog(dev, { kind: 'sys', key: 'Lagged', text: `the page missed ${view.missedNotices} updates` });
  buildClassControls(dev);
  render(dev);
}

function onNotice(dev, n) {
  if (n.event && n.event.statusChanged) dev.status = n.event.statusChanged;
  const cr = n.event && n.event.cardReader;
  if (cr && cr.insertCard) dev.promptPending = true;
  if (cr && (cr.mediaInserted || cr.invalidMedia)) dev.promptPending = false;
  if (n.commandStarted) dev.running.set(n.commandStarted.requestId, n.commandStarted.command);
  if (n.commandFinished) {
    dev.running.delete(n.commandFinished.requestId);
    const cmd = n.commandFinished.command || '';
    if (cmd === 'CardReader.ReadRawData') dev.promptPending = false;
    if (cmd.startsWith('ReceiptPrinter.Print') && dev.el.receipts) loadReceipts(dev);
  }
  const d = describeNotice(n);
  addLog(dev, { at: n.atUnixMs, ...d }, n);
  render(dev);
}

function onConnected(dev) {
  const cls = deviceClass(dev);
  if (cls === 'DEVICE_CLASS_CARD_READER') loadCards(dev, true);
  if (cls === 'DEVICE_CLASS_RECEIPT_PRINTER') loadReceipts(dev, true);
}

function connectEvents() {
  const conn = document.getElementById('panel-conn');
  const es = new EventSource('/api/events');
  es.onopen = () => {
    conn.textContent = 'live';
    conn.className = 'pill pill-ok';
    // The stream starts with each device's view and recent notices: rebuild the logs from it.
    for (const dev of devices.values()) { dev.el.log.replaceChildren(); dev.view = null; }
  };
  es.onerror = () => {
    conn.textContent = 'panel unreachable — retrying';
    conn.className = 'pill pill-bad';
  };
  es.addEventListener('device', (e) => onDeviceView(JSON.parse(e.data)));
  es.addEventListener('notice', (e) => {
    const m = JSON.parse(e.data);
    const dev = devices.get(m.device);
    if (dev) onNotice(dev, m.notice);
  });
}

// ---------------------------------------------------------------- building the page

function deviceClass(dev) {
  return (dev.caps && dev.caps.deviceClass) || (dev.status && dev.status.deviceClass) || (dev.view && dev.view.deviceClass) || '';
}

function readWaiting(dev) {
  if (!dev.view || !dev.view.connected) return false;
  for (const cmd of dev.running.values()) if (cmd === 'CardReader.ReadRawData') return true;
  return dev.promptPending;
}

function selectTab(name) {
  selected = name;
  for (const dev of devices.values()) {
    dev.el.tab.setAttribute('aria-selected', String(dev.name === name));
    dev.el.pane.hidden = dev.name !== name;
  }
  history.replaceState(null, '', '#' + encodeURIComponent(name));
}

function buildDevice(view) {
  const dev = { name: view.name, view: null, caps: null, status: null, running: new Map(), promptPending: false, waiting: false, cards: [], el: {}, built: '' };
  const el = dev.el;
  el.dot = h('span', { class: 'dot' });
  el.tabClass = h('span', { class: 'cls' });
  el.tab = h('button', { class: 'tab', role: 'tab', 'data-testid': `tab-${view.name}`, onclick: () => selectTab(dev.name) }, el.dot, view.name, el.tabClass);

  el.banner = h('div', { class: 'banner', hidden: true });
  el.stateTitle = h('span', { class: 'pill', 'data-testid': 'device-state' });
  el.statusList = h('dl', { class: 'kv', 'data-testid': 'status' });
  el.result = h('p', { class: 'result', 'data-testid': 'result', hidden: true });
  el.classArea = h('div', { class: 'col' });
  el.log = h('ul', { class: 'log', 'data-testid': 'event-log' });

  const statusCard = h('section', { class: 'card' },
    h('h2', {}, h('span', {}, 'Status'), el.stateTitle),
    el.banner, el.statusList,
    h('div', { class: 'buttons' },
      el.openBtn = h('button', { onclick: () => sim(dev, 'OpenDevice', { openDevice: {} }) }, 'Open Device'),
      el.closeBtn = h('button', { onclick: () => sim(dev, 'CloseDevice', { closeDevice: {} }) }, 'Close Device')),
    el.result);

  el.commonArea = h('div', { class: 'col' });
  const logCard = h('section', { class: 'card' },
    h('h2', {}, h('span', {}, 'Event log ', h('span', { class: 'muted' }, '(newest first)')),
      h('button', { onclick: () => el.log.replaceChildren() }, 'Clear')),
    el.log);

  el.pane = h('section', { class: 'pane', role: 'tabpanel', 'data-testid': `pane-${view.name}`, hidden: true },
    h('div', { class: 'col' }, statusCard, el.classArea, el.commonArea),
    h('div', { class: 'col' }, logCard));
  devices.set(dev.name, dev);
  return dev;
}

// The class-specific and capability-dependent controls, built once the class is known.
function buildClassControls(dev) {
  const cls = deviceClass(dev);
  const commands = (dev.caps && dev.caps.commands) || [];
  const key = cls + '|' + commands.join(',');
  if (!cls || dev.built === key) return;
  dev.built = key;
  dev.el.tabClass.textContent = CLASS_LABEL[cls] || '';
  dev.el.classArea.replaceChildren();
  dev.el.receipts = null;
  if (cls === 'DEVICE_CLASS_CARD_READER') buildCardReader(dev);
  if (cls === 'DEVICE_CLASS_PIN_PAD') buildPinPad(dev);
  if (cls === 'DEVICE_CLASS_CASH_DISPENSER') buildDispenser(dev);
  if (cls === 'DEVICE_CLASS_RECEIPT_PRINTER') buildPrinter(dev);
  dev.el.commonArea.replaceChildren(buildStatusDialog(dev, cls), buildErrorSimulating(dev, cls, commands));
}

// Seed 001 §12.4 Status: choose from the valid states, not raw bits.
function buildStatusDialog(dev, cls) {
  const state = select([['', '(unchanged)'], ...DEVICE_STATES.map((s) => ['DEVICE_STATE_' + s, s])], '');
  state.dataset.testid = 'state-device';
  const media = cls === 'DEVICE_CLASS_CARD_READER'
    ? select([['', '(unchanged)'], ...MEDIA_STATES.map((s) => ['MEDIA_STATUS_' + s, s])], '') : null;
  if (media) media.dataset.testid = 'state-media';
  const apply = () => {
    const req = {};
    if (state.value) req.device = state.value;
    if (media && media.value) req.media = media.value;
    if (!req.device && !req.media) return showResult(dev, 'SetDeviceState', { ok: false, text: 'choose a state first' });
    sim(dev, 'SetDeviceState', { setDeviceState: req });
  };
  return h('section', { class: 'card' }, h('h2', {}, 'Status'),
    h('p', { class: 'note' }, 'Put the device into a state it can really be in (Close Device powers it off).'),
    h('div', { class: 'row' }, field('Device state', state), media && field('Media (card)', media),
      h('button', { class: 'primary', onclick: apply }, 'Apply')));
}

// Seed 001 §12.3 ErrorSimulating: preset an error for the next commands of a kind.
function buildErrorSimulating(dev, cls, commands) {
  const command = select(commands.length ? commands : [['', '(no commands reported)']], commands[0]);
  command.dataset.testid = 'error-command';
  const errors = [...(XFS_ERRORS[cls] || []), ...XFS_ERRORS.generic];
  const code = select([...errors.map(([n, c]) => [String(c), `${n} (${c})`]), ['custom', 'other number…']], errors.length ? String(errors[0][1]) : 'custom');
  const custom = h('input', { class: 'num', type: 'number', max: '-1', placeholder: '-200', hidden: code.value !== 'custom' });
  code.dataset.testid = 'error-code';
  code.addEventListener('change', () => { custom.hidden = code.value !== 'custom'; });
  const count = h('input', { class: 'num', type: 'number', min: '1', max: '1000', value: '1' });
  const set = () => {
    const errorCode = code.value === 'custom' ? parseInt(custom.value, 10) : parseInt(code.value, 10);
    if (!command.value || !Number.isFinite(errorCode)) return showResult(dev, 'SetError', { ok: false, text: 'choose a command and an error code' });
    sim(dev, 'SetError', { setError: { command: command.value, errorCode, count: parseInt(count.value, 10) || 0 } });
  };
  return h('section', { class: 'card' }, h('h2', {}, 'ErrorSimulating'),
    h('p', { class: 'note' }, 'The next commands of this kind fail with the chosen error, e.g. a jam on eject.'),
    h('div', { class: 'row' }, field('Command', command), field('Error code', h('span', { class: 'row' }, code, custom)), field('Count', count)),
    h('div', { class: 'buttons' },
      h('button', { class: 'primary', onclick: set }, 'Set error'),
      h('button', { onclick: () => sim(dev, 'ClearErrors', { clearErrors: {} }) }, 'Clear all errors')));
}

// ---------------------------------------------------------------- card reader (seed 001 §12)

function cardKind(card) {
  if (!card) return 'magnetic';
  if (card.chip) return 'chip';
  if (card.invalid) return 'invalid';
  return 'magnetic';
}

function cardTracks(card) {
  const m = (card && (card.magnetic || (card.chip && card.chip.stripe))) || {};
  return [m.track1 || '', m.track2 || '', m.track3 || ''];
}

function buildCardReader(dev) {
  const el = dev.el;
  // The dialog can be opened any time to prepare a card; its InsertCard button works only while
  // a read waits (seed 001 §12.2).
  el.insertBtn = h('button', { class: 'primary', onclick: () => openInsert(dev) }, 'InsertCard…');
  el.waitNote = h('p', { class: 'note', 'data-testid': 'read-wait-note' });
  el.takeNote = h('p', { class: 'note', 'data-testid': 'take-note' });
  const customer = h('section', { class: 'card' }, h('h2', {}, 'Customer'),
    el.waitNote, el.takeNote,
    h('div', { class: 'buttons' }, el.insertBtn,
      h('button', { onclick: () => sim(dev, 'TakeCard', { cardReader: { takeCard: {} } }) }, 'Take Away Card'),
      h('button', { onclick: () => sim(dev, 'NotTakeCard', { cardReader: { notTakeCard: {} } }) }, 'Not Take Card')),
    h('div', { class: 'row', style: 'margin-top:10px' },
      field('Retain timeout (ms) for a card not taken', el.retainMs = h('input', { class: 'num', type: 'number', min: '0', value: '30000', 'data-testid': 'retain-timeout' })),
      h('button', { onclick: () => sim(dev, 'SetRetainTimeout', { cardReader: { setRetainTimeout: { timeoutMs: parseInt(el.retainMs.value, 10) || 0 } } }) }, 'Set')));

  // CardInfo (seed 001 §12.5): the persisted card library.
  el.cardRows = h('tbody');
  const f = el.cardForm = {
    name: h('input', { placeholder: 'e.g. unionpay-debit' }),
    kind: select([['magnetic', 'Magnetic'], ['chip', 'IC (chip)'], ['invalid', 'Invalid']], 'magnetic'),
    t1: h('input', { spellcheck: 'false' }), t2: h('input', { spellcheck: 'false' }), t3: h('input', { spellcheck: 'false' }),
    atr: h('input', { spellcheck: 'false', placeholder: '3B6E00…' }),
    apdu: h('textarea', { spellcheck: 'false', placeholder: 'one per line: COMMAND_PREFIX=RESPONSE (hex), e.g. 00A40400=9000' }),
  };
  const chipOnly = h('div', {}, field('ATR (hex)', f.atr), field('Chip answers', f.apdu));
  const syncKind = () => {
    chipOnly.hidden = f.kind.value !== 'chip';
    for (const t of [f.t1, f.t2, f.t3]) t.disabled = f.kind.value === 'invalid';
  };
  f.kind.addEventListener('change', syncKind);
  syncKind();
  el.fillCardForm = (card) => {
    f.name.value = card ? card.name || '' : '';
    f.kind.value = cardKind(card);
    [f.t1.value, f.t2.value, f.t3.value] = cardTracks(card);
    f.atr.value = card && card.chip ? b64ToHex(card.chip.atr) : '';
    f.apdu.value = card && card.chip ? (card.chip.apduRules || []).map((r) => `${b64ToHex(r.commandPrefix)}=${b64ToHex(r.response)}`).join('\n') : '';
    syncKind();
  };
  const save = () => {
    let card;
    try { card = formCard(f.name.value.trim(), f.kind.value, [f.t1.value, f.t2.value, f.t3.value], f.atr.value, f.apdu.value); } catch (e) {
      return showResult(dev, 'PutCard', { ok: false, text: e.message });
    }
    if (!card.name) return showResult(dev, 'PutCard', { ok: false, text: 'give the card a name' });
    sim(dev, 'PutCard', { cardReader: { putCard: { card } } }).then((o) => { if (o.ok) loadCards(dev, true); });
  };
  const del = () => {
    const name = f.name.value.trim();
    if (!name) return showResult(dev, 'DeleteCard', { ok: false, text: 'choose a card first' });
    if (!confirm(`Delete card ${name} from the library?`)) return;
    sim(dev, 'DeleteCard', { cardReader: { deleteCard: { name } } }).then((o) => { if (o.ok) { el.fillCardForm(null); loadCards(dev, true); } });
  };
  const library = h('section', { class: 'card' },
    h('h2', {}, h('span', {}, 'CardInfo ', h('span', { class: 'muted' }, '(card library)')),
      h('button', { onclick: () => loadCards(dev) }, 'Refresh')),
    h('div', { class: 'scroll-x' }, h('table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Type'), h('th', {}, 'Track 2'), h('th', {}, 'ATR'))),
      el.cardRows)),
    h('h3', {}, 'Edit card'),
    h('div', { class: 'row' }, field('Name', f.name), field('Type', f.kind)),
    field('Track 1', f.t1), field('Track 2', f.t2), field('Track 3', f.t3), chipOnly,
    h('div', { class: 'buttons' },
      h('button', { class: 'primary', onclick: save }, 'Save card'),
      h('button', { class: 'danger', onclick: del }, 'Delete card'),
      h('button', { onclick: () => el.fillCardForm(null) }, 'New card')));
  el.classArea.append(customer, library);
  if (dev.view && dev.view.connected) loadCards(dev, true);
}

function formCard(name, kind, tracks, atrHex, apduText) {
  const card = { name };
  if (kind === 'invalid') {
    card.invalid = {};
    return card;
  }
  const stripe = {};
  ['track1', 'track2', 'track3'].forEach((t, i) => { if (tracks[i]) stripe[t] = tracks[i]; });
  if (kind === 'chip') {
    const chip = { atr: hexToB64(atrHex) };
    const rules = String(apduText || '').split('\n').map((l) => l.trim()).filter(Boolean).map((line) => {
      const [p, r] = line.split('=');
      if (r === undefined) throw new Error(`chip answer "${line}" must be COMMAND_PREFIX=RESPONSE`);
      return { commandPrefix: hexToB64(p), response: hexToB64(r) };
    });
    if (rules.length) chip.apduRules = rules;
    if (Object.keys(stripe).length) chip.stripe = stripe;
    card.chip = chip;
  } else {
    card.magnetic = stripe;
  }
  return card;
}

async function loadCards(dev, quiet) {
  if (!dev.el.cardRows) return;
  const req = { cardReader: { listCards: {} } };
  let reply;
  if (quiet) {
    // Background refresh: no result banner, but a refusal still shows.
    try {
      const r = await fetch(`/api/devices/${encodeURIComponent(dev.name)}/simulator`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req) });
      reply = r.ok ? await r.json() : null;
    } catch (_) { reply = null; }
    if (!reply || !reply.result || reply.result.code !== 'COMPLETION_CODE_SUCCESS') return;
  } else {
    const o = await sim(dev, 'ListCards', req);
    if (!o.ok) return;
    reply = o.reply;
  }
  dev.cards = (reply.cards && reply.cards.cards) || [];
  dev.el.cardRows.replaceChildren(...dev.cards.map((c) => h('tr', { class: 'clickable', title: 'Edit this card', onclick: () => dev.el.fillCardForm(c) },
    h('td', {}, c.name || ''), h('td', {}, cardKind(c)), h('td', { class: 'mono' }, cardTracks(c)[1]),
    h('td', { class: 'mono' }, c.chip ? b64ToHex(c.chip.atr) : ''))));
  if (!dev.cards.length) dev.el.cardRows.append(h('tr', {}, h('td', { colspan: '4', class: 'muted' }, 'The library is empty.')));
  if (insertState.dev === dev) fillInsertSelect();
}

// The InsertCard dialog (seed 001 §12.2), shared by every card reader.
const insertState = { dev: null, card: null };

function insertEls() {
  const d = document.getElementById('insert-dialog');
  return {
    dialog: d, title: document.getElementById('insert-title'), wait: document.getElementById('insert-wait'),
    select: document.getElementById('insert-select'), t1: document.getElementById('insert-t1'),
    t2: document.getElementById('insert-t2'), t3: document.getElementById('insert-t3'),
    atr: document.getElementById('insert-atr'), go: document.getElementById('insert-go'),
    result: document.getElementById('insert-result'), kinds: d.querySelectorAll('input[name=kind]'),
  };
}

function insertKind() {
  for (const r of insertEls().kinds) if (r.checked) return r.value;
  return 'magnetic';
}

function setInsertKind(kind) {
  for (const r of insertEls().kinds) r.checked = r.value === kind;
  syncInsertKind();
}

function syncInsertKind() {
  const e = insertEls();
  const kind = insertKind();
  // An invalid card has no data: only the InsertCard button stays usable (seed 001 §12.2).
  for (const t of [e.t1, e.t2, e.t3, e.select]) t.disabled = kind === 'invalid';
  e.atr.closest('label').hidden = kind !== 'chip';
}

function fillInsertSelect() {
  const e = insertEls();
  const dev = insertState.dev;
  const current = e.select.value;
  e.select.replaceChildren(h('option', { value: '' }, '(ad-hoc card — type the tracks)'),
    ...dev.cards.map((c) => h('option', { value: c.name }, `${c.name} — ${cardKind(c)}`)));
  e.select.value = dev.cards.some((c) => c.name === current) ? current : '';
}

function openInsert(dev) {
  const e = insertEls();
  if (insertState.dev !== dev) {
    insertState.dev = dev;
    insertState.card = null;
    e.t1.value = e.t2.value = e.t3.value = e.atr.value = '';
    setInsertKind('magnetic');
  }
  e.title.textContent = `Insert card — ${dev.name}`;
  e.result.hidden = true;
  fillInsertSelect();
  updateInsertDialog();
  if (!e.dialog.open) e.dialog.showModal();
}

function updateInsertDialog() {
  const e = insertEls();
  const dev = insertState.dev;
  if (!dev || !e.dialog.open) return;
  const waiting = readWaiting(dev);
  e.go.disabled = !waiting;
  e.wait.textContent = waiting ? 'The reader is waiting for a card.' : 'No read is waiting for a card: InsertCard is disabled.';
  e.wait.className = 'note' + (waiting ? ' live' : '');
}

function setupInsertDialog() {
  const e = insertEls();
  for (const r of e.kinds) r.addEventListener('change', syncInsertKind);
  e.select.addEventListener('change', () => {
    const dev = insertState.dev;
    const card = dev.cards.find((c) => c.name === e.select.value) || null;
    insertState.card = card;
    if (card) {
      setInsertKind(cardKind(card));
      [e.t1.value, e.t2.value, e.t3.value] = cardTracks(card);
      e.atr.value = card.chip ? b64ToHex(card.chip.atr) : '';
    }
  });
  e.go.addEventListener('click', async () => {
    const dev = insertState.dev;
    const lib = insertState.card;
    const kind = insertKind();
    const tracks = [e.t1.value, e.t2.value, e.t3.value];
    let insert;
    try {
      const unchanged = lib && kind === cardKind(lib) && tracks.join('\n') === cardTracks(lib).join('\n')
        && (kind !== 'chip' || e.atr.value.replace(/[\s:]/g, '').toUpperCase() === b64ToHex(lib.chip.atr));
      if (unchanged) {
        insert = { libraryName: lib.name };
      } else {
        // An edited or ad-hoc card; an edited chip card keeps the library card's chip answers.
        const card = formCard('', kind, tracks, e.atr.value, '');
        if (card.chip && lib && lib.chip && lib.chip.apduRules) card.chip.apduRules = lib.chip.apduRules;
        insert = { card };
      }
    } catch (err) {
      e.result.hidden = false;
      e.result.className = 'result bad';
      e.result.textContent = err.message;
      return;
    }
    const o = await sim(dev, 'InsertCard', { cardReader: { insertCard: insert } });
    e.result.hidden = false;
    e.result.className = 'result ' + (o.ok ? 'ok' : 'bad');
    e.result.textContent = o.text;
    if (o.ok) e.dialog.close();
  });
  e.dialog.addEventListener('close', () => { e.result.hidden = true; });
  document.getElementById('insert-close').addEventListener('click', () => e.dialog.close());
}

// ---------------------------------------------------------------- PIN pad

function buildPinPad(dev) {
  const el = dev.el;
  el.echo = h('div', { class: 'pin-echo', 'aria-label': 'digits entered (masked)', 'data-testid': 'pin-echo' });
  el.entryNote = h('p', { class: 'note' });
  // The pad applies a key just after answering, so the digit count is read again a moment later.
  const press = (key) => sim(dev, 'PressKeys', { pinPad: { pressKeys: { keys: [key] } } })
    .then((o) => { if (o.ok) setTimeout(() => refreshStatus(dev), 150); });
  const key = (label, cls) => h('button', { class: cls || '', onclick: () => press(label) }, label);
  const pad = h('div', { class: 'keypad', tabindex: '0', title: 'Click or type: digits, Enter, Esc (CANCEL), Backspace, Delete (CLEAR)' },
    key('1'), key('2'), key('3'), key('CANCEL', 'fn cancel'),
    key('4'), key('5'), key('6'), key('CLEAR', 'fn clear'),
    key('7'), key('8'), key('9'), key('BACKSPACE', 'fn'),
    h('span'), key('0'), h('span'), key('ENTER', 'fn enter'));
  pad.addEventListener('keydown', (ev) => {
    const map = { Enter: 'ENTER', Escape: 'CANCEL', Backspace: 'BACKSPACE', Delete: 'CLEAR' };
    const k = /^[0-9]$/.test(ev.key) ? ev.key : map[ev.key];
    if (k) { ev.preventDefault(); press(k); }
  });
  el.classArea.append(h('section', { class: 'card' }, h('h2', {}, 'PIN pad keypad'),
    h('p', { class: 'note' }, 'Keys go to the pad one by one while an entry (GetPin / GetData) is active. Only the number of digits is shown.'),
    h('div', { class: 'keypad-wrap' }, pad, h('div', {}, el.echo, el.entryNote))));
}

// ---------------------------------------------------------------- cash dispenser

function money(minor, currency) {
  const n = num(minor);
  return `${(n / 100).toFixed(2)} ${currency || ''}`.trim();
}

function buildDispenser(dev) {
  const el = dev.el;
  el.unitRows = h('tbody', { 'data-testid': 'cash-units' });
  el.outputNote = h('p', { class: 'note' });
  el.takeMs = h('input', { class: 'num', type: 'number', min: '0', value: '30000' });
  const table = h('section', { class: 'card' }, h('h2', {}, 'Cash units'),
    h('div', { class: 'scroll-x' }, h('table', {},
      h('thead', {}, h('tr', {}, ...['No.', 'ID', 'Type', 'Currency', 'Denomination', 'Count', 'Initial', 'Capacity', 'Low', 'High', 'Status',
        'Dispensed', 'Presented', 'Rejected', 'Retracted'].map((t, i) => h('th', { class: i >= 4 && i !== 10 ? 'num' : '' }, t)))),
      el.unitRows)),
    el.outputNote,
    h('div', { class: 'buttons' },
      h('button', { class: 'primary', onclick: () => sim(dev, 'TakeItems', { cashDispenser: { takeItems: {} } }) }, 'Take notes'),
      field('Take timeout (ms)', el.takeMs),
      h('button', { onclick: () => sim(dev, 'SetTakeTimeout', { cashDispenser: { setTakeTimeout: { timeoutMs: parseInt(el.takeMs.value, 10) || 0 } } }) }, 'Set')));

  el.editRows = h('tbody');
  const cols = ['number', 'id', 'unitType', 'currency', 'denomination', 'count', 'capacity', 'lowThreshold', 'highThreshold'];
  const addRow = (u) => {
    u = u || { unitType: 'CASH_UNIT_TYPE_BILL_CASSETTE', currency: 'CNY' };
    const cells = cols.map((c) => {
      if (c === 'unitType') {
        const s = select(UNIT_TYPES.map((t) => ['CASH_UNIT_TYPE_' + t, t]), u.unitType || 'CASH_UNIT_TYPE_BILL_CASSETTE');
        s.dataset.col = c;
        return h('td', {}, s);
      }
      const input = h('input', { value: u[c] === undefined ? (c === 'id' || c === 'currency' ? '' : '0') : String(u[c]), 'data-col': c });
      return h('td', {}, input);
    });
    const tr = h('tr', {}, ...cells, h('td', {}, h('button', { onclick: () => tr.remove(), title: 'Remove this unit' }, '×')));
    el.editRows.append(tr);
  };
  const load = () => {
    el.editRows.replaceChildren();
    const units = (dev.status && dev.status.cashDispenser && dev.status.cashDispenser.units) || [];
    units.forEach((u) => addRow(u));
    if (!units.length) addRow();
  };
  const apply = () => {
    const ints = ['number', 'count', 'capacity', 'lowThreshold', 'highThreshold'];
    const units = [];
    for (const tr of el.editRows.children) {
      const u = {};
      for (const input of tr.querySelectorAll('[data-col]')) {
        const c = input.dataset.col;
        const v = input.value.trim();
        if (ints.includes(c)) {
          if (!/^\d+$/.test(v)) return showResult(dev, 'SetCashUnits', { ok: false, text: `${c} must be a whole number` });
          u[c] = parseInt(v, 10);
        } else if (c === 'denomination') {
          if (!/^\d+$/.test(v)) return showResult(dev, 'SetCashUnits', { ok: false, text: 'denomination is in minor units (e.g. 10000 for 100.00)' });
          u[c] = v;
        } else {
          u[c] = v;
        }
      }
      units.push(u);
    }
    sim(dev, 'SetCashUnits', { cashDispenser: { setCashUnits: { units } } });
  };
  const editor = h('section', { class: 'card' }, h('h2', {}, 'Replenish (SetCashUnits)'),
    h('p', { class: 'note' }, 'Replaces the whole table; counters restart. Denomination in minor units (10000 = 100.00).'),
    h('div', { class: 'scroll-x' }, h('table', { class: 'edit' },
      h('thead', {}, h('tr', {}, ...['No.', 'ID', 'Type', 'Currency', 'Denomination', 'Count', 'Capacity', 'Low', 'High', ''].map((t) => h('th', {}, t)))),
      el.editRows)),
    h('div', { class: 'buttons' },
      h('button', { onclick: load }, 'Load current table'),
      h('button', { onclick: () => addRow() }, 'Add unit'),
      h('button', { class: 'primary', onclick: apply }, 'Apply')));
  el.classArea.append(table, editor);
  load();
}

// ---------------------------------------------------------------- receipt printer

function buildPrinter(dev) {
  const el = dev.el;
  el.paper = select(PAPER_STATES.map((p) => ['PAPER_STATE_' + p, p]), 'PAPER_STATE_FULL');
  el.receiptLimit = h('input', { class: 'num', type: 'number', min: '1', max: '200', value: '10' });
  el.receipts = h('div', { 'data-testid': 'receipts' });
  el.classArea.append(
    h('section', { class: 'card' }, h('h2', {}, 'Printer'),
      h('div', { class: 'row' }, field('Paper', el.paper),
        h('button', { onclick: () => sim(dev, 'SetPaper', { receiptPrinter: { setPaper: { paper: el.paper.value } } }) }, 'Set paper'),
        h('button', { class: 'primary', onclick: () => sim(dev, 'TakeReceipt', { receiptPrinter: { takeReceipt: {} } }) }, 'Take receipt'))),
    h('section', { class: 'card' }, h('h2', {}, h('span', {}, 'Printed receipts ', h('span', { class: 'muted' }, '(newest first)')),
      h('span', { class: 'row' }, el.receiptLimit, h('button', { onclick: () => loadReceipts(dev) }, 'Refresh'))),
    el.receipts));
  if (dev.view && dev.view.connected) loadReceipts(dev, true);
}

async function loadReceipts(dev, quiet) {
  if (!dev.el.receipts) return;
  const req = { receiptPrinter: { listReceipts: { limit: parseInt(dev.el.receiptLimit.value, 10) || 10 } } };
  let reply = null;
  if (quiet) {
    try {
      const r = await fetch(`/api/devices/${encodeURIComponent(dev.name)}/simulator`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req) });
      reply = r.ok ? await r.json() : null;
    } catch (_) { reply = null; }
    if (!reply || !reply.result || reply.result.code !== 'COMPLETION_CODE_SUCCESS') return;
  } else {
    const o = await sim(dev, 'ListReceipts', req);
    if (!o.ok) return;
    reply = o.reply;
  }
  const list = (reply.receipts && reply.receipts.receipts) || [];
  dev.el.receipts.replaceChildren(...list.map((r) => h('div', { class: 'receipt' },
    h('div', {}, h('b', {}, r.receiptId || '(no id)'), h('span', { class: 'muted' }, ' · ' + (r.printedAtUnixMs ? new Date(num(r.printedAtUnixMs)).toLocaleString() : ''))),
    h('pre', {}, r.text || ''))));
  if (!list.length) dev.el.receipts.append(h('p', { class: 'muted' }, 'No receipts printed yet.'));
}

// ---------------------------------------------------------------- rendering

function kv(list, pairs) {
  list.replaceChildren(...pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function render(dev) {
  const el = dev.el;
  const view = dev.view || { connected: false };
  const s = dev.status || {};
  const state = short(s.device, 'DEVICE_STATE_');
  const connected = !!view.connected;
  el.dot.className = 'dot ' + (!connected ? 'bad' : state === 'ONLINE' ? 'ok' : 'warn');
  el.stateTitle.textContent = connected ? state : 'DISCONNECTED';
  el.stateTitle.className = 'pill ' + (!connected ? 'pill-bad' : state === 'ONLINE' ? 'pill-ok' : 'pill-warn');
  el.banner.hidden = connected;
  el.banner.textContent = connected ? '' : `The device is not connected (${view.error || 'connecting…'}). The panel keeps retrying.`;

  const caps = dev.caps || {};
  const pairs = [['Endpoint', view.endpoint || ''], ['Class', CLASS_LABEL[deviceClass(dev)] || '—'],
    ['Backend', [caps.backend, caps.vendor, caps.model].filter(Boolean).join(' · ') || '—'],
    ['Device', state], ['Queued commands', String(num(s.queuedCommands))]];
  const running = [...dev.running.values()];
  if (running.length) pairs.push(['Running', running.join(', ')]);
  if (s.cardReader) {
    const c = s.cardReader;
    pairs.push(['Media', short(c.media, 'MEDIA_STATUS_')], ['Chip', short(c.chip, 'CHIP_STATE_')],
      ['Retain bin', `${short(c.retainBin, 'RETAIN_BIN_STATE_')} (${num(c.retainCount)}/${num(c.retainCapacity)})`]);
  }
  if (s.pinPad) {
    const p = s.pinPad;
    pairs.push(['Encryption', short(p.encryption, 'ENCRYPTION_STATE_')], ['Keys loaded', String(num(p.keyCount))],
      ['Entry', p.entryActive ? 'active' : 'idle'], ['Digits entered', String(num(p.digitsEntered))]);
  }
  if (s.cashDispenser) pairs.push(['Output', short(s.cashDispenser.output, 'OUTPUT_POSITION_')]);
  if (s.receiptPrinter) {
    const r = s.receiptPrinter;
    pairs.push(['Paper', short(r.paper, 'PAPER_STATE_')], ['Receipt', short(r.media, 'PRINTER_MEDIA_')], ['Printed', String(num(r.receiptsPrinted))]);
  }
  kv(el.statusList, pairs);
  el.openBtn.disabled = el.closeBtn.disabled = !connected;

  if (el.insertBtn) {
    const waiting = readWaiting(dev);
    el.insertBtn.disabled = !connected;
    el.waitNote.textContent = waiting ? 'A read is waiting for a card.' : 'No read is waiting: the dialog opens by itself when the ATM asks for a card.';
    el.waitNote.className = 'note' + (waiting ? ' live' : '');
    const inSlot = s.cardReader && s.cardReader.media === 'MEDIA_STATUS_ENTERING';
    el.takeNote.textContent = inSlot ? 'The card waits in the slot: Take Away Card, or Not Take Card to leave it (the reader retains it after the retain timeout).' : '';
    el.takeNote.className = 'note' + (inSlot ? ' live' : '');
    if (waiting && !dev.waiting) {
      // The ATM asks for a card: open the InsertCard dialog (seed 001 §12.2).
      if (!insertEls().dialog.open || insertState.dev === dev) openInsert(dev);
    }
    dev.waiting = waiting;
    if (insertState.dev === dev) updateInsertDialog();
  }
  if (el.echo) {
    const p = s.pinPad || {};
    el.echo.textContent = '●'.repeat(Math.min(num(p.digitsEntered), 32)) || ' ';
    el.entryNote.textContent = p.entryActive ? 'Entry active: the pad takes keys.' : 'No entry active: key presses are refused.';
    el.entryNote.className = 'note' + (p.entryActive ? ' live' : '');
  }
  if (el.unitRows) {
    const cd = s.cashDispenser || {};
    const units = cd.units || [];
    el.unitRows.replaceChildren(...units.map((u) => h('tr', {},
      h('td', {}, String(num(u.number))), h('td', {}, u.id || ''), h('td', {}, short(u.unitType, 'CASH_UNIT_TYPE_')),
      h('td', {}, u.currency || ''), h('td', { class: 'num' }, money(u.denomination, '')),
      ...['count', 'initialCount', 'capacity', 'lowThreshold', 'highThreshold'].map((k) => h('td', { class: 'num' }, String(num(u[k])))),
      h('td', {}, short(u.status, 'CASH_UNIT_STATUS_')),
      ...['dispensedCount', 'presentedCount', 'rejectedCount', 'retractedCount'].map((k) => h('td', { class: 'num' }, String(num(u[k])))))));
    if (!units.length) el.unitRows.append(h('tr', {}, h('td', { colspan: '15', class: 'muted' }, 'No cash units.')));
    const at = (cd.atOutput || []).map((i) => `${num(i.count)} from unit ${num(i.unitNumber)}`).join(', ');
    el.outputNote.textContent = `Output position: ${short(cd.output, 'OUTPUT_POSITION_')}${at ? ' — ' + at : ''}`;
  }
}

// ---------------------------------------------------------------- start

async function start() {
  setupInsertDialog();
  const panes = document.getElementById('panes');
  const tabs = document.getElementById('tabs');
  let list;
  try {
    const r = await fetch('/api/devices');
    list = (await r.json()).devices || [];
  } catch (e) {
    panes.replaceChildren(h('p', { class: 'pad result bad' }, `Cannot load the device list: ${e.message}`));
    return;
  }
  panes.replaceChildren();
  for (const view of list) {
    const dev = buildDevice(view);
    tabs.append(dev.el.tab);
    panes.append(dev.el.pane);
    onDeviceView(view);
  }
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (list.length) selectTab(devices.has(wanted) ? wanted : list[0].name);
  connectEvents();
}

start();
