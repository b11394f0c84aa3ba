//! `online-txn`: the online transaction engine between terminals and the bank host (seed 001
//! §4.6.2, §7.3, §13).
//!
//! - [`front`] — the terminal channel (TCP, length-prefix framing, pipelined requests);
//! - [`engine`] — sign-on, financial requests, terminal reversals; MAC and PIN translation;
//! - [`host`] — multiplexed long connections to the host, with echo and reconnect;
//! - [`journal`] — the durable journal (journal-before-send) and reversal queue;
//! - [`reversal`] — the store-and-forward worker delivering reversals;
//! - [`repair`], [`admin`] — in-doubt repair plans (seed 002) and their admin HTTP API;
//! - [`channels`], [`router`], [`backends`], [`breaker`] — fronts for internal bank systems
//!   (HTTP JSON/XML, TCP fixed/delimited/8583), routing to back ends, circuit breakers;
//! - [`security`] — the key store and cryptographic operations behind a trait;
//! - [`config`], [`server`] — the configuration file and `run`.
//!
//! It must never lose or double money: a request is journaled before it is sent, an
//! unanswered one is reversed through a durable queue, and a retry gets the first answer.

pub mod admin;
pub mod backends;
pub mod breaker;
pub mod channels;
pub mod config;
pub mod engine;
pub mod front;
pub mod host;
pub mod journal;
mod journal_repair;
pub mod repair;
pub mod reversal;
pub mod router;
pub mod security;
pub mod server;
