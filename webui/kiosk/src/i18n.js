// The kiosk's texts in zh-CN and en, and the locale switch. The customer's choice lasts one
// session: the attract screen goes back to the configured default.
import { reactive } from 'vue';

const messages = {
  'zh-CN': {
    'lang.name': '中文',
    'attract.title': '欢迎使用自助银行',
    'attract.insert': '请插入您的银行卡',
    'attract.hint': '磁条卡请将磁条向下插入',
    'oos.title': '暂停服务',
    'oos.text': '本机暂停服务，给您带来不便，敬请谅解。',
    'oos.offline': '正在连接终端服务…',
    'reading.title': '正在读卡，请稍候…',
    'pin.title': '请输入密码',
    'pin.retry': '密码错误，请重新输入密码',
    'pin.triesLeft': '您还可以尝试 {n} 次',
    'pin.hint': '请在密码键盘上输入 {min}-{max} 位密码，按“确认”键结束',
    'pin.current': '请输入当前密码',
    'pin.new': '请输入新密码',
    'pin.confirm': '请再次输入新密码',
    'menu.title': '请选择服务',
    'menu.withdrawal': '取款',
    'menu.inquiry': '查询余额',
    'menu.transfer': '转账',
    'menu.pinChange': '修改密码',
    'menu.exit': '退卡',
    'amount.title': '请选择取款金额',
    'amount.other': '其他金额',
    'amount.enter': '请输入取款金额（{multiple} 的整数倍，最多 {max}）',
    'amount.problem.NOT_A_NUMBER': '请输入金额',
    'amount.problem.TOO_SMALL': '金额不能小于 {min}',
    'amount.problem.TOO_LARGE': '金额不能超过 {max}',
    'amount.problem.NOT_MULTIPLE': '金额须为 {multiple} 的整数倍',
    'transfer.account': '请输入收款账号',
    'transfer.amount': '请输入转账金额',
    'transfer.confirm': '请确认转账信息',
    'transfer.to': '收款账号',
    'transfer.badAccount': '账号应为 12-19 位数字',
    'common.amount': '金额',
    'common.ok': '确认',
    'common.cancel': '取消',
    'common.back': '返回',
    'common.clear': '清除',
    'common.correct': '更正',
    'processing.title': '正在处理，请稍候…',
    'cash.dispensing': '正在出钞，请稍候…',
    'cash.take': '请取走您的现金',
    'result.title': '交易成功',
    'result.withdrawal': '取款 {amount} 成功',
    'result.inquiry': '可用余额',
    'result.ledger': '账面余额',
    'result.transfer': '已向 {account} 转账 {amount}',
    'result.pinChange': '密码修改成功',
    'result.print': '打印凭条',
    'result.another': '继续其他服务',
    'result.finish': '结束并退卡',
    'receipt.printing': '正在打印凭条…',
    'receipt.take': '请取走您的凭条',
    'receipt.failed': '凭条打印失败',
    'card.take': '请取走您的银行卡',
    'card.retained': '您的银行卡已被吞没',
    'card.retainedPin': '密码错误次数超限，您的银行卡已被吞没，请持有效证件到柜台办理。',
    'card.retainedTimeout': '您未及时取卡，银行卡已被吞没，请到柜台领取。',
    'card.jammed': '退卡失败，银行卡已被回收，请联系银行工作人员。',
    'card.stuck': '退卡失败，请联系银行工作人员。',
    'card.invalid': '无法识别此卡，请取回您的卡',
    'goodbye': '感谢您的使用，再见',
    'footer.shield': '输入密码时请用手遮挡密码键盘',
    'moreTime.title': '您需要更多时间吗？',
    'moreTime.yes': '需要',
    'moreTime.no': '不需要',
    'error.title': '交易未完成',
    'error.decline': '交易被拒绝（{code}）：{text}',
    'error.hostTimeout': '银行主机未及时响应，交易已取消，您的账户不会被扣款。',
    'error.hostUnavailable': '暂时无法连接银行主机，请稍后再试。',
    'error.cashNotTaken': '您未及时取走现金，现金将被回收，本笔交易将被冲正。',
    'error.dispense': '出钞失败，交易已取消，您的账户不会被扣款。',
    'error.pinMismatch': '两次输入的新密码不一致，请重新输入',
    'error.generic': '交易未能完成，请稍后再试。',
    'error.session': '服务暂时不可用，请取回您的卡。',
    'rc.51': '余额不足',
    'rc.54': '卡片已过期',
    'rc.55': '密码错误',
    'rc.61': '超出取款限额',
    'rc.75': '密码错误次数超限',
    'rc.14': '无效卡号',
    'rc.other': '请联系发卡行',
  },
  en: {
    'lang.name': 'English',
    'attract.title': 'Welcome',
    'attract.insert': 'Please insert your card',
    'attract.hint': 'Magnetic stripe down, chip first',
    'oos.title': 'Out of service',
    'oos.text': 'This machine is temporarily out of service. We apologise for the inconvenience.',
    'oos.offline': 'Connecting to the terminal…',
    'reading.title': 'Reading your card…',
    'pin.title': 'Please enter your PIN',
    'pin.retry': 'Wrong PIN. Please enter your PIN again',
    'pin.triesLeft': '{n} attempt(s) left',
    'pin.hint': 'Enter {min}-{max} digits on the PIN pad, then press ENTER',
    'pin.current': 'Enter your current PIN',
    'pin.new': 'Enter your new PIN',
    'pin.confirm': 'Enter your new PIN again',
    'menu.title': 'Please choose a service',
    'menu.withdrawal': 'Cash withdrawal',
    'menu.inquiry': 'Balance inquiry',
    'menu.transfer': 'Transfer',
    'menu.pinChange': 'Change PIN',
    'menu.exit': 'Return card',
    'amount.title': 'Choose an amount',
    'amount.other': 'Other amount',
    'amount.enter': 'Enter an amount (multiples of {multiple}, at most {max})',
    'amount.problem.NOT_A_NUMBER': 'Please enter an amount',
    'amount.problem.TOO_SMALL': 'The amount must be at least {min}',
    'amount.problem.TOO_LARGE': 'The amount must be at most {max}',
    'amount.problem.NOT_MULTIPLE': 'The amount must be a multiple of {multiple}',
    'transfer.account': 'Enter the beneficiary account number',
    'transfer.amount': 'Enter the amount to transfer',
    'transfer.confirm': 'Please confirm the transfer',
    'transfer.to': 'To account',
    'transfer.badAccount': 'An account number has 12 to 19 digits',
    'common.amount': 'Amount',
    'common.ok': 'OK',
    'common.cancel': 'Cancel',
    'common.back': 'Back',
    'common.clear': 'Clear',
    'common.correct': 'Correct',
    'processing.title': 'Processing, please wait…',
    'cash.dispensing': 'Counting your cash…',
    'cash.take': 'Please take your cash',
    'result.title': 'Done',
    'result.withdrawal': 'You withdrew {amount}',
    'result.inquiry': 'Available balance',
    'result.ledger': 'Ledger balance',
    'result.transfer': '{amount} transferred to {account}',
    'result.pinChange': 'Your PIN has been changed',
    'result.print': 'Print a receipt',
    'result.another': 'Another service',
    'result.finish': 'Finish, return my card',
    'receipt.printing': 'Printing your receipt…',
    'receipt.take': 'Please take your receipt',
    'receipt.failed': 'The receipt could not be printed',
    'card.take': 'Please take your card',
    'card.retained': 'Your card has been retained',
    'card.retainedPin': 'Too many wrong PINs: your card has been retained. Please contact your branch with ID.',
    'card.retainedTimeout': 'Your card was not taken in time and has been retained. Please ask at the counter.',
    'card.jammed': 'Your card could not be returned and has been retained. Please contact bank staff.',
    'card.stuck': 'Your card could not be returned. Please contact bank staff.',
    'card.invalid': 'This card cannot be read. Please take it back',
    'goodbye': 'Thank you. Goodbye',
    'footer.shield': 'Cover the PIN pad with your hand while entering your PIN',
    'moreTime.title': 'Do you need more time?',
    'moreTime.yes': 'Yes',
    'moreTime.no': 'No',
    'error.title': 'Transaction not completed',
    'error.decline': 'Declined ({code}): {text}',
    'error.hostTimeout': 'The bank did not answer in time. The transaction was canceled; your account is not debited.',
    'error.hostUnavailable': 'The bank cannot be reached right now. Please try again later.',
    'error.cashNotTaken': 'The cash was not taken in time: it is retracted and the withdrawal reversed.',
    'error.dispense': 'The cash could not be dispensed. The transaction was canceled; your account is not debited.',
    'error.pinMismatch': 'The two new PINs differ. Please enter them again',
    'error.generic': 'The transaction could not be completed. Please try again later.',
    'error.session': 'The service is not available. Please take your card.',
    'rc.51': 'insufficient funds',
    'rc.54': 'expired card',
    'rc.55': 'wrong PIN',
    'rc.61': 'withdrawal limit exceeded',
    'rc.75': 'too many wrong PINs',
    'rc.14': 'invalid card number',
    'rc.other': 'please contact your bank',
  },
};

/** The locales the kiosk has texts for. */
export const LOCALES = Object.keys(messages);

export const i18n = reactive({ locale: 'zh-CN' });

/**
 * The text of `key` in the current locale, `{name}` placeholders filled from `params`.
 * @param {string} key
 * @param {Record<string, any>} [params]
 */
export function t(key, params) {
  const table = /** @type {Record<string, string>} */ (messages[/** @type {keyof messages} */ (i18n.locale)] || messages.en);
  let s = table[key] ?? /** @type {Record<string, string>} */ (messages.en)[key] ?? key;
  if (params) s = s.replace(/\{(\w+)\}/g, (m, k) => (params[k] === undefined ? m : String(params[k])));
  return s;
}

/** @param {string} locale */
export function setLocale(locale) {
  if (LOCALES.includes(locale)) {
    i18n.locale = locale;
    document.documentElement.lang = locale;
  }
}

/**
 * An amount in minor units as money in the current locale (`¥300.00`, `CN¥300.00`).
 * @param {number|string} minor
 * @param {string} currency
 */
export function money(minor, currency) {
  const n = Number(minor) / 100;
  try {
    return new Intl.NumberFormat(i18n.locale, { style: 'currency', currency }).format(n);
  } catch {
    return `${n.toFixed(2)} ${currency}`;
  }
}

/**
 * The text of a host response code.
 * @param {string} code
 */
export function rcText(code) {
  const k = `rc.${code}`;
  const s = t(k);
  return s === k ? t('rc.other') : s;
}
