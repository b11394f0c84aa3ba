//! The OpenTeller protobuf contracts and their generated Rust types and gRPC stubs.
//!
//! [`device::v1`] is the device API every driver-proxy serves (see `proto/openteller/device/v1`):
//! XFS4IoT-style commands with request ids, intermediate events and one completion, plus the
//! simulator-control service for virtual devices. The `.proto` files are the source of truth;
//! this crate only compiles them (with `protox`, so no system `protoc` is needed).

/// `openteller.device.*` packages.
pub mod device {
    /// `openteller.device.v1`: the device API, version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("openteller.device.v1");
        include!(concat!(env!("OUT_DIR"), "/openteller.device.v1.serde.rs"));
    }
}

pub mod endpoint;
pub use endpoint::Endpoint;
