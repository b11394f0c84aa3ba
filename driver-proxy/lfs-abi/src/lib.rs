//! The OpenTeller LFS ABI: how a vendor's service provider (SP) library talks to driver-proxy.
//!
//! The C side is `include/openteller_lfs.h` (see `docs/lfs.md`): a CEN/XFS 3.x / LFS shaped SPI
//! (StartUp, Open, Register, asynchronous Execute and GetInfo with completion and event
//! callbacks, Cancel, Close, FreeResult, CleanUp) with the XFS 3.x IDC numbering.
//!
//! The Rust side:
//! - [`ffi`] — `#[repr(C)]` mirrors of the header (used by SPs written in Rust, such as the
//!   workspace's test SP, and by this crate);
//! - [`Provider`] / [`Session`] / [`Request`] / [`Events`] — a safe host: load a library with
//!   typed errors, open a session, run commands and information requests as async requests
//!   that yield owned events and an owned completion, cancel them (also by dropping them), and
//!   receive unsolicited events as owned values;
//! - [`IdcCommand`], [`IdcInfo`], [`Completion`], [`Event`], [`Data`] — the owned values.
//!
//! Every `unsafe` block of the workspace's LFS support lives in this crate (or in the test SP)
//! and states why it is sound; `driver-proxy` itself forbids unsafe code.

// This crate is the FFI boundary: it must call into C and be called back from C. Unsafe code is
// allowed here (the workspace denies it elsewhere) and each block carries a SAFETY argument.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod ffi;
mod host;
mod types;

pub use host::{
    CallError, Canceller, Error, Events, Provider, Request, RequestMessage, Session, SpVersion,
};
pub use types::{
    CardAction, CardData, ChipIo, Completion, Data, Event, EventKind, IdcCaps, IdcCommand, IdcInfo,
    IdcStatus, MAX_CARD_DATA_ITEMS, MAX_DATA_LEN, RetainCard, describe, error_name,
};

/// The path of the published C header inside this crate's source tree.
pub const HEADER_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/openteller_lfs.h");
