//! The OpenTeller backoffice: the platform service (organisations, users, RBAC, menus,
//! dictionary, i18n, scheduled tasks, blacklist, login and access logs), the audit-log service,
//! the file service and the console, behind one binary (`backoffice serve`). See
//! `docs/backoffice.md`.
//!
//! Layout: [`config`] loads and validates configuration; [`app`] opens the stores
//! ([`db`] — SQLite or PostgreSQL — and the cache, bus and object store of
//! `openteller-backoffice-storage`); [`server`] assembles the routers of the services a process
//! runs; [`http`] and [`error`] hold the API conventions; [`auth`] the sessions and permission
//! checks every protected handler goes through; [`audit`] writes the audit record of each
//! mutation in the mutation's own transaction.

pub mod app;
pub mod audit;
pub mod auth;
pub mod catalogue;
pub mod cli;
pub mod config;
#[cfg(feature = "console")]
pub mod console;
pub mod db;
pub mod error;
pub mod files;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod openapi;
pub mod platform;
pub mod server;
pub mod session;
