//! # openteller-backoffice-storage
//!
//! The storage adapters of the backoffice, each with an embedded default for one machine and
//! a real engine for production (see `DESIGN.md`, "Embedded by default, real engines when it
//! grows"):
//!
//! | module | embedded default | production |
//! |---|---|---|
//! | [`objects`] — packages, journals, uploads | a local directory | any S3 API (MinIO, AWS, …) |
//! | [`cache`] — shared values, counters for lockouts and rate limits | in-process map | Redis |
//! | [`bus`] — cache-invalidation broadcasts between backoffice processes | in-process channels | Redis pub/sub |
//!
//! Each adapter is one concrete type over a private backend enum, built from a serde
//! configuration section that refuses unknown keys: [`ObjectsConfig`] (`[objects]`) and
//! [`CacheConfig`] (`[cache]`, which builds both the cache and the bus). Callers never see
//! which backend runs; the same test suites run against both.
//!
//! Errors are `thiserror` enums ([`ObjectError`], [`KeyError`], [`CacheError`]); the client
//! libraries underneath (`rust-s3`, `redis`) stay private, so their types never appear in
//! this crate's API. Nothing here panics on input.
#![forbid(unsafe_code)]

pub mod bus;
pub mod cache;
pub mod objects;

pub use bus::{Bus, Subscription};
pub use cache::{Cache, CacheConfig, CacheError};
pub use objects::{KeyError, ObjectError, ObjectMeta, ObjectStore, ObjectsConfig, S3Config};

#[cfg(test)]
mod tests {
    /// The adapters live in shared application state and cross tasks.
    #[test]
    fn adapters_are_send_and_sync() {
        fn shared<T: Send + Sync + Clone + 'static>() {}
        fn sendable<T: Send + 'static>() {}
        shared::<super::ObjectStore>();
        shared::<super::Cache>();
        shared::<super::Bus>();
        sendable::<super::Subscription>();
        sendable::<super::ObjectError>();
        sendable::<super::CacheError>();
    }
}
