//! Integration tests: real `driver-proxy` processes on Unix sockets, driven over gRPC.

mod support;

mod card_reader;
mod cash_dispenser;
mod lifecycle;
mod pin_pad;
mod receipt_printer;
