// SJSL errors: every failure a page sees is an SjslError with a stable `code`.
//
// Codes from terminal-native's bridge are passed through unchanged (docs/terminal-native.md,
// "Error codes"); SJSL adds a few of its own for what happens on the page side:
//   DISCONNECTED  the bridge connection was lost before the answer came
//   TIMEOUT       no answer within the caller's `timeoutMs` (plus the grace for device commands)
//   ABORTED       the caller's AbortSignal fired before the request was sent
//   PROTOCOL      the host sent something SJSL cannot understand

/** Codes SJSL itself produces (the bridge's own codes come on top). */
export const LOCAL_CODES = Object.freeze(['DISCONNECTED', 'TIMEOUT', 'ABORTED', 'PROTOCOL']);

/**
 * A typed failure of a bridge call.
 *
 * @property {string} code           stable code (`COMMAND_FAILED`, `DISPENSE_REFUSED`, `TIMEOUT` ...)
 * @property {string|undefined} completion  for COMMAND_FAILED: `CANCELED`, `TIME_OUT`, `COMMAND_ERROR` ...
 * @property {number|undefined} xfsCode     for COMMAND_FAILED: the CEN/XFS 3.x number (e.g. -335)
 * @property {any} data              for COMMAND_FAILED: the full completion from the device
 */
export class SjslError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{completion?: string, xfsCode?: number, data?: any, method?: string}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'SjslError';
    this.code = code;
    this.completion = extra.completion;
    this.xfsCode = extra.xfsCode;
    this.data = extra.data;
    this.method = extra.method;
  }

  /** The command was canceled (by the page, or because the page went away). */
  get canceled() {
    return this.code === 'ABORTED' || (this.code === 'COMMAND_FAILED' && this.completion === 'CANCELED');
  }

  /** The device or the page-side timer gave up waiting. */
  get timedOut() {
    return this.code === 'TIMEOUT' || (this.code === 'COMMAND_FAILED' && this.completion === 'TIME_OUT');
  }

  /**
   * Builds an SjslError from a bridge `error` object.
   * @param {any} error
   * @param {string} [method]
   */
  static fromBridge(error, method) {
    if (!error || typeof error !== 'object' || typeof error.code !== 'string') {
      return new SjslError('PROTOCOL', `malformed error from the host: ${JSON.stringify(error)}`, { method });
    }
    let completion = error.completion;
    // The bridge sends the proto enum name; pages compare short names.
    if (typeof completion === 'string') completion = completion.replace(/^COMPLETION_CODE_/, '');
    return new SjslError(error.code, String(error.message ?? error.code), {
      completion,
      xfsCode: typeof error.xfsCode === 'number' ? error.xfsCode : undefined,
      data: error.data,
      method,
    });
  }
}
