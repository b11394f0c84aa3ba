// SJSBL — the standard JavaScript business components (seed 001 §4.3.1), built on SJSL: the
// steps every self-service flow is made of (key exchange, read the card, PIN entry, amount,
// dispense, receipt, return the card), each with its timeouts and cancellation, so a business
// flow is a short sequence of awaits. No UI: components call back (`onKey`, `onPresented` ...)
// and the page draws. See docs/sjsl.md.

import { SjslError } from '../sjsl/errors.js';

/** XFS 3.x numbers the components react to. */
export const XFS = Object.freeze({
  MEDIAJAM: -200,
  NOMEDIA: -201,
  MEDIARETAINED: -202,
  INVALIDMEDIA: -205,
  ITEMSNOTTAKEN: -335,
  NOITEMS: -316,
});

/**
 * @typedef {object} SjsblConfig
 * @property {{idc: string, pin: string, cdm: string, ptr?: string}} devices  device names
 * @property {string} currency                 ISO 4217 code, e.g. CNY
 * @property {number} [cardReadTimeoutMs]      default 0: wait for a card as long as it takes
 * @property {number} [pinTimeoutMs]           default 30000
 * @property {number} [cashTakeTimeoutMs]      default 30000
 * @property {number} [cardTakeTimeoutMs]      default 30000
 * @property {boolean} [retainCardOnTimeout]   default true: a card not taken is retained
 * @property {number} [minPinLength]           default 4
 * @property {number} [maxPinLength]           default 6
 */

/**
 * Checks an amount against the terminal's rules.
 * @param {number} amount  minor units
 * @param {{multipleOf?: number, min?: number, max?: number}} rules
 * @returns {null | 'NOT_A_NUMBER' | 'TOO_SMALL' | 'TOO_LARGE' | 'NOT_MULTIPLE'} null when fine
 */
export function validateAmount(amount, rules) {
  if (!Number.isSafeInteger(amount) || amount <= 0) return 'NOT_A_NUMBER';
  if (rules.min && amount < rules.min) return 'TOO_SMALL';
  if (rules.max && amount > rules.max) return 'TOO_LARGE';
  if (rules.multipleOf && amount % rules.multipleOf !== 0) return 'NOT_MULTIPLE';
  return null;
}

/**
 * The business components over one SJSL connection.
 * @param {import('../sjsl/index.js').Sjsl} sjsl
 * @param {SjsblConfig} config
 */
export function createSjsbl(sjsl, config) {
  const idc = () => sjsl.device(config.devices.idc);
  const pin = () => sjsl.device(config.devices.pin);
  const cdm = () => sjsl.device(config.devices.cdm);
  const journal = (/** @type {string} */ text) =>
    sjsl.journal.write(text).catch(() => {
      // The host journals every device step itself; a page note that cannot be written must not
      // stop the customer's transaction.
    });

  /**
   * @param {string} reason
   * @returns {Promise<boolean>}
   */
  const retainCard = async (reason) => {
    try {
      await idc().retain({}, { timeoutMs: 20_000 });
      await journal(`CARD RETAINED: ${reason}`);
      return true;
    } catch (e) {
      await journal(`CARD RETAIN FAILED (${reason}): ${/** @type {Error} */ (e).message}`);
      return false;
    }
  };

  return {
    /** Key exchange (交换密钥): sign-on, the host's working keys into the EPP. */
    async signOn() {
      const r = await sjsl.txn.signOn();
      if (!r.approved) throw new SjslError('HOST_DECLINED', `sign-on declined: ${r.responseCode}`, { data: r });
      return r;
    },

    /**
     * Waits for a card and reads it. Resolves with the masked PAN (card data never reaches a page).
     * @param {{timeoutMs?: number, signal?: AbortSignal, onInserted?: () => void}} [opts]
     * @returns {Promise<{maskedPan: string, requestId: string}>}
     */
    async readCard(opts = {}) {
      const r = await idc().readRawData(
        { track2: true },
        {
          timeoutMs: opts.timeoutMs ?? config.cardReadTimeoutMs ?? 0,
          signal: opts.signal,
          onEvent: (_payload, name) => {
            if (name === 'mediaInserted') opts.onInserted?.();
          },
        },
      );
      const t2 = r.result?.track2;
      if (!t2 || !t2.data) {
        throw new SjslError('INVALID_CARD', 'the card has no readable track 2', { data: r.raw });
      }
      return { maskedPan: String(t2.data), requestId: r.requestId };
    },

    /**
     * PIN entry on the EPP. The PIN stays in the EPP; `onKey(digitsEntered, key)` gets each
     * key (digits arrive as `*`) for the masked echo. Rejects CUSTOMER_CANCEL when the customer
     * pressed CANCEL, COMMAND_FAILED/TIME_OUT when nobody typed in time.
     * @param {{minLength?: number, maxLength?: number, timeoutMs?: number, signal?: AbortSignal, onKey?: (digits: number, key: string) => void}} [opts]
     * @returns {Promise<{digits: number}>}
     */
    async enterPin(opts = {}) {
      const r = await pin().getPin(
        {
          minLength: opts.minLength ?? config.minPinLength ?? 4,
          maxLength: opts.maxLength ?? config.maxPinLength ?? 6,
          autoEnd: false,
        },
        {
          timeoutMs: opts.timeoutMs ?? config.pinTimeoutMs ?? 30_000,
          signal: opts.signal,
          onEvent: (payload, name) => {
            if (name === 'keyPressed') opts.onKey?.(Number(payload?.digitsEntered ?? 0), String(payload?.key ?? ''));
          },
        },
      );
      const res = r.result || {};
      if (res.completion === 'ENTRY_COMPLETION_CANCEL') {
        throw new SjslError('CUSTOMER_CANCEL', 'the customer canceled the PIN entry');
      }
      return { digits: Number(res.digits ?? 0) };
    },

    /**
     * Asks the page for an amount until it is acceptable (or the customer cancels: null).
     * `ask(problem)` shows the amount screen (with the previous problem, if any) and resolves
     * with an amount in minor units, or null.
     * @param {{ask: (problem: string|null) => Promise<number|null>, multipleOf?: number, min?: number, max?: number, signal?: AbortSignal}} opts
     * @returns {Promise<number|null>}
     */
    async chooseAmount(opts) {
      /** @type {string|null} */
      let problem = null;
      for (;;) {
        if (opts.signal?.aborted) throw new SjslError('ABORTED', 'amount selection aborted');
        const amount = await opts.ask(problem);
        if (amount === null || amount === undefined) return null;
        problem = validateAmount(amount, opts);
        if (!problem) return amount;
      }
    },

    /**
     * Dispenses an approved withdrawal: Dispense (stack) and Present with the host's
     * authorisation, then waits for the customer to take the notes. Notes not taken in time
     * (ITEMSNOTTAKEN) are left to terminal-native's settler, which retracts them, works out what
     * the customer got from the dispenser's counters and reverses the rest: a page retract would
     * race it. Once the dispense is sent it runs to its end (a `signal` only stops it before).
     * @param {{amount: number, currency?: string, authorization: string, takeTimeoutMs?: number, signal?: AbortSignal, onPresented?: () => void}} opts
     * @returns {Promise<{taken: boolean, notes: number}>}
     */
    async dispenseCash(opts) {
      if (opts.signal?.aborted) throw new SjslError('ABORTED', 'dispense aborted before it was sent');
      const currency = opts.currency ?? config.currency;
      const d = await cdm().dispense(
        { currency, amount: opts.amount, mix: 'MIX_ALGORITHM_MINIMUM_NOTES', present: false },
        { authorization: opts.authorization, timeoutMs: 60_000 },
      );
      const items = d.result?.dispensed?.items ?? [];
      const notes = items.reduce((n, /** @type {any} */ i) => n + Number(i.count ?? 0), 0);
      const takeTimeoutMs = opts.takeTimeoutMs ?? config.cashTakeTimeoutMs ?? 30_000;
      try {
        await cdm().present(
          { takeTimeoutMs },
          {
            authorization: opts.authorization,
            timeoutMs: takeTimeoutMs + 30_000,
            onEvent: (_p, name) => {
              if (name === 'itemsPresented') opts.onPresented?.();
            },
          },
        );
        return { taken: true, notes };
      } catch (e) {
        if (!(e instanceof SjslError) || e.xfsCode !== XFS.ITEMSNOTTAKEN) throw e;
        await journal(`NOTES NOT TAKEN ref=${opts.authorization} amount=${opts.amount} ${currency}: left to the settler`);
        return { taken: false, notes };
      }
    },

    /**
     * Prints a receipt. A printer problem is not fatal to the transaction: it resolves with
     * `{printed: false, error}`.
     * @param {{lines: string[], timeoutMs?: number}} opts
     * @returns {Promise<{printed: boolean, receiptId?: string, error?: SjslError}>}
     */
    async printReceipt(opts) {
      if (!config.devices.ptr) return { printed: false, error: new SjslError('NOT_CONFIGURED', 'no receipt printer') };
      try {
        const r = await sjsl.device(config.devices.ptr).printText({ text: opts.lines.join('\n') }, { timeoutMs: opts.timeoutMs ?? 30_000 });
        return { printed: true, receiptId: r.result?.receiptId };
      } catch (e) {
        return { printed: false, error: /** @type {SjslError} */ (e) };
      }
    },

    /**
     * Keeps the card (PIN limit, or a card that cannot be returned).
     * @param {string} reason  for the journal
     * @returns {Promise<boolean>} true when the reader retained it
     */
    retainCard,

    /**
     * Ejects the card and waits for the customer to take it. Not taken in time: retained when
     * `retainOnTimeout` (config `retainCardOnTimeout`, default true). An eject that fails (a
     * jam) is followed by a retain attempt.
     * @param {{takeTimeoutMs?: number, retainOnTimeout?: boolean, signal?: AbortSignal, onEjected?: () => void}} [opts]
     * @returns {Promise<{returned: boolean, retained: boolean, jammed: boolean, error?: SjslError}>}
     */
    async returnCard(opts = {}) {
      const reader = idc();
      const takeTimeoutMs = opts.takeTimeoutMs ?? config.cardTakeTimeoutMs ?? 30_000;
      const retainOnTimeout = opts.retainOnTimeout ?? config.retainCardOnTimeout ?? true;
      const controller = new AbortController();
      const onAbort = () => controller.abort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      // Subscribe before the eject so a quick take is not missed.
      const taken = reader.waitFor(['mediaRemoved', 'cardAction'], { signal: controller.signal });
      taken.catch(() => {});
      try {
        try {
          await reader.eject({}, { timeoutMs: 20_000 });
        } catch (e) {
          const err = /** @type {SjslError} */ (e);
          if (err.xfsCode === XFS.NOMEDIA) return { returned: true, retained: false, jammed: false };
          await journal(`CARD EJECT FAILED: ${err.message}`);
          const retained = await retainCard('eject failed');
          return { returned: false, retained, jammed: err.xfsCode === XFS.MEDIAJAM, error: err };
        }
        opts.onEjected?.();
        const timer = setTimeout(() => controller.abort(), takeTimeoutMs);
        try {
          const ev = await taken;
          if (ev.name === 'cardAction' && String(ev.payload?.action).endsWith('RETAINED')) {
            await journal('CARD NOT TAKEN: retained by the reader');
            return { returned: false, retained: true, jammed: false };
          }
          return { returned: true, retained: false, jammed: false };
        } catch (e) {
          if (opts.signal?.aborted) throw e;
          if (!retainOnTimeout) return { returned: false, retained: false, jammed: false };
          const retained = await retainCard(`not taken within ${takeTimeoutMs} ms`);
          return { returned: false, retained, jammed: false };
        } finally {
          clearTimeout(timer);
        }
      } finally {
        controller.abort();
        opts.signal?.removeEventListener('abort', onAbort);
      }
    },
  };
}
