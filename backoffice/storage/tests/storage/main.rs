//! The storage suites against real servers: one object-store suite (local directory and
//! s3s-fs), one cache/bus suite (in-process and Redis). One test binary, linked once.

mod cache_bus;
mod helpers;
mod objects;
