//! CEN/XFS 3.x error numbers, kept as the device API's class-specific error codes.
//!
//! The numbers are those of the XFS 3.x headers (`XFSIDC.H`, `XFSPIN.H`, `XFSCDM.H`,
//! `XFSPTR.H`, `XFSAPI.H`), so logs and tools that know XFS read them directly.

use openteller_proto::device::v1::{CompletionCode, DeviceClass};

/// One XFS error: its number and symbolic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XfsError {
    /// The negative XFS 3.x number.
    pub code: i32,
    /// The name without the `WFS_ERR_<CLASS>_` prefix, e.g. `MEDIAJAM`.
    pub name: &'static str,
}

macro_rules! table {
    ($(#[$doc:meta])* $module:ident, $all:ident { $($name:ident = $code:expr),* $(,)? }) => {
        $(#[$doc])*
        pub mod $module {
            use super::XfsError;
            $(
                #[doc = concat!("`", stringify!($name), "` (", stringify!($code), ").")]
                pub const $name: XfsError = XfsError { code: $code, name: stringify!($name) };
            )*
            /// Every error of the table.
            pub const $all: &[XfsError] = &[$($name),*];
        }
    };
}

table!(
    /// Errors every class may return (`XFSAPI.H`).
    generic, ALL {
        CANCELED = -4,
        DEV_NOT_READY = -13,
        HARDWARE_ERROR = -14,
        INTERNAL_ERROR = -15,
        INVALID_COMMAND = -20,
        INVALID_REQ_ID = -27,
        TIMEOUT = -48,
        UNSUPP_COMMAND = -50,
        INVALID_DATA = -52,
        USER_ERROR = -55,
        UNSUPP_DATA = -56,
    }
);

table!(
    /// CardReader (`XFSIDC.H`, offset 200).
    idc, ALL {
        MEDIAJAM = -200,
        NOMEDIA = -201,
        MEDIARETAINED = -202,
        RETAINBINFULL = -203,
        INVALIDDATA = -204,
        INVALIDMEDIA = -205,
        SHUTTERFAIL = -209,
        SECURITYFAIL = -210,
        PROTOCOLNOTSUPP = -211,
        ATRNOTOBTAINED = -212,
        INVALIDKEY = -213,
        CHIPPOWERNOTSUPP = -215,
        CARDTOOSHORT = -216,
        CARDTOOLONG = -217,
    }
);

table!(
    /// PinPad (`XFSPIN.H`, offset 400).
    pin, ALL {
        KEYNOTFOUND = -400,
        MODENOTSUPPORTED = -401,
        ACCESSDENIED = -402,
        INVALIDID = -403,
        DUPLICATEKEY = -404,
        KEYNOVALUE = -406,
        USEVIOLATION = -407,
        NOPIN = -408,
        INVALIDKEYLENGTH = -409,
        KEYINVALID = -410,
        KEYNOTSUPPORTED = -411,
        NOACTIVEKEYS = -412,
        MINIMUMLENGTH = -415,
        INVALIDDATA = -417,
        ALGORITHMNOTSUPP = -421,
        FORMATNOTSUPP = -422,
    }
);

table!(
    /// CashDispenser (`XFSCDM.H`, offset 300).
    cdm, ALL {
        INVALIDCURRENCY = -300,
        CASHUNITERROR = -302,
        INVALIDDENOMINATION = -303,
        INVALIDMIXNUMBER = -304,
        NOCURRENCYMIX = -305,
        NOTDISPENSABLE = -306,
        TOOMANYITEMS = -307,
        SAFEDOOROPEN = -310,
        SHUTTERNOTOPEN = -312,
        SHUTTEROPEN = -313,
        SHUTTERCLOSED = -314,
        INVALIDCASHUNIT = -315,
        NOITEMS = -316,
        ITEMSTAKEN = -323,
        ITEMSNOTTAKEN = -335,
    }
);

table!(
    /// ReceiptPrinter (`XFSPTR.H`, offset 100).
    ptr, ALL {
        FORMNOTFOUND = -100,
        FIELDNOTFOUND = -101,
        NOMEDIAPRESENT = -102,
        FLUSHFAIL = -104,
        MEDIAOVERFLOW = -105,
        FIELDERROR = -107,
        MEDIAJAMMED = -119,
        CHARSETDATA = -121,
        PAPERJAMMED = -122,
        PAPEROUT = -123,
    }
);

/// The class-specific table of a device class.
pub fn class_table(class: DeviceClass) -> &'static [XfsError] {
    match class {
        DeviceClass::CardReader => idc::ALL,
        DeviceClass::PinPad => pin::ALL,
        DeviceClass::CashDispenser => cdm::ALL,
        DeviceClass::ReceiptPrinter => ptr::ALL,
        DeviceClass::Unspecified => &[],
    }
}

/// Looks up an error number among the generic errors and those of `class`.
pub fn lookup(class: DeviceClass, code: i32) -> Option<XfsError> {
    generic::ALL
        .iter()
        .chain(class_table(class))
        .copied()
        .find(|e| e.code == code)
}

/// The completion code an XFS error number is reported with: class-specific numbers are
/// `COMMAND_ERROR`; generic ones have their own completion codes.
pub fn completion_code_for(error: XfsError) -> CompletionCode {
    match error.code {
        -4 => CompletionCode::Canceled,
        -13 => CompletionCode::DeviceNotReady,
        -14 => CompletionCode::HardwareError,
        -15 => CompletionCode::InternalError,
        -20 => CompletionCode::InvalidCommand,
        -27 => CompletionCode::InvalidRequestId,
        -48 => CompletionCode::TimeOut,
        -50 => CompletionCode::UnsupportedCommand,
        -52 => CompletionCode::InvalidData,
        -55 => CompletionCode::UserError,
        -56 => CompletionCode::UnsupportedData,
        _ => CompletionCode::CommandError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_xfs_headers() {
        assert_eq!(idc::MEDIAJAM.code, -200);
        assert_eq!(idc::NOMEDIA.code, -201);
        assert_eq!(idc::MEDIARETAINED.code, -202);
        assert_eq!(idc::INVALIDMEDIA.code, -205);
        assert_eq!(cdm::NOTDISPENSABLE.code, -306);
        assert_eq!(cdm::ITEMSNOTTAKEN.code, -335);
        assert_eq!(pin::KEYNOTFOUND.code, -400);
        assert_eq!(ptr::PAPEROUT.code, -123);
    }

    #[test]
    fn class_ranges_do_not_overlap_and_names_are_unique() {
        for (class, lo, hi) in [
            (DeviceClass::ReceiptPrinter, -199, -100),
            (DeviceClass::CardReader, -299, -200),
            (DeviceClass::CashDispenser, -399, -300),
            (DeviceClass::PinPad, -499, -400),
        ] {
            let t = class_table(class);
            assert!(t.iter().all(|e| (lo..=hi).contains(&e.code)), "{class:?}");
            let mut names: Vec<_> = t.iter().map(|e| e.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.len());
        }
    }

    #[test]
    fn lookup_is_per_class() {
        assert_eq!(lookup(DeviceClass::CardReader, -200), Some(idc::MEDIAJAM));
        assert_eq!(lookup(DeviceClass::PinPad, -200), None);
        assert_eq!(
            lookup(DeviceClass::PinPad, -14),
            Some(generic::HARDWARE_ERROR)
        );
        assert_eq!(
            completion_code_for(idc::MEDIAJAM),
            CompletionCode::CommandError
        );
        assert_eq!(
            completion_code_for(generic::HARDWARE_ERROR),
            CompletionCode::HardwareError
        );
        assert_eq!(
            completion_code_for(generic::TIMEOUT),
            CompletionCode::TimeOut
        );
    }
}
