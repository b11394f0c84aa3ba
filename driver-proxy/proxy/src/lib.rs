//! `driver-proxy`: one OS process per device, so a crashing vendor driver takes down only its
//! own device (seed 001 §4.3.1, the driver proxy platform).
//!
//! Layout:
//! - [`backend`] — the contract a device implementation fulfils, and the notice hub;
//! - [`queue`] — the sequential per-device command queue (timeouts, cancel by request id);
//! - [`server`] — the gRPC services (`Device`, `Simulator`, health) and [`server::run`];
//! - [`virtual_device`] — the simulators of seed 001 §12: card reader, PIN pad, dispenser, printer;
//! - [`lfs`] — a service provider loaded from a shared library through the LFS C ABI;
//! - [`codes`] — the CEN/XFS 3.x error numbers; [`store`] — crash-safe persisted state;
//! - [`cli`] — the command line.
//!
//! What it must never do: let a clear PIN or key leave the PIN pad (not in replies, events or
//! logs), or panic on anything a client sends.

#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod codes;
pub mod lfs;
pub mod queue;
pub mod server;
pub mod store;
pub mod virtual_device;
