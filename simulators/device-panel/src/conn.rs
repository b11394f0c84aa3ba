//! A connection to one driver-proxy: the `Device` and `Simulator` clients on one lazily
//! connecting channel, with calls bounded by a time limit and failures sorted into "cannot
//! reach the proxy" and "the proxy answered with an error".

use std::time::Duration;

use openteller_proto::Endpoint;
use openteller_proto::device::v1::{
    Capabilities, Command, CommandReply, DeviceStatus, GetCapabilitiesRequest, GetStatusRequest,
    Notice, SimulatorReply, SimulatorRequest, SubscribeRequest, device_client::DeviceClient,
    simulator_client::SimulatorClient,
};
use tonic::transport::Channel;

/// Why a call to a proxy failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The proxy cannot be reached (no socket, connection refused, no answer in time).
    #[error("cannot reach the device at {endpoint}: {reason}")]
    Unreachable {
        /// The proxy's endpoint.
        endpoint: String,
        /// What the transport said.
        reason: String,
    },
    /// The proxy answered with a gRPC error (for example an empty simulator action).
    #[error("the device at {endpoint} answered {code:?}: {message}")]
    Rpc {
        /// The proxy's endpoint.
        endpoint: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The gRPC status message.
        message: String,
    },
}

impl CallError {
    /// True when the proxy could not be reached at all.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, CallError::Unreachable { .. })
    }
}

/// Clients of one proxy.
#[derive(Clone)]
pub(crate) struct DeviceConn {
    endpoint: Endpoint,
    channel: Channel,
    timeout: Duration,
}

impl DeviceConn {
    /// A connection that dials on first use; calls give up after `timeout`.
    pub(crate) fn new(
        endpoint: Endpoint,
        timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = endpoint.channel()?;
        Ok(DeviceConn {
            endpoint,
            channel,
            timeout,
        })
    }

    /// The proxy's endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn classify(&self, status: &tonic::Status) -> CallError {
        let endpoint = self.endpoint.to_string();
        match status.code() {
            // Transport failures (no socket, refused, reset) surface as UNAVAILABLE; a proxy that
            // is shutting down may also end a call with CANCELLED or UNKNOWN "transport error".
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => CallError::Unreachable {
                endpoint,
                reason: status.message().to_owned(),
            },
            tonic::Code::Unknown if status.message().contains("transport") => {
                CallError::Unreachable {
                    endpoint,
                    reason: status.message().to_owned(),
                }
            }
            code => CallError::Rpc {
                endpoint,
                code,
                message: status.message().to_owned(),
            },
        }
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(self.classify(&status)),
            Err(_) => Err(CallError::Unreachable {
                endpoint: self.endpoint.to_string(),
                reason: format!("no answer within {} ms", self.timeout.as_millis()),
            }),
        }
    }

    /// `Device.GetStatus`.
    pub(crate) async fn status(&self) -> Result<DeviceStatus, CallError> {
        let mut client = DeviceClient::new(self.channel.clone());
        self.bounded(client.get_status(GetStatusRequest {})).await
    }

    /// `Device.GetCapabilities`.
    pub(crate) async fn capabilities(&self) -> Result<Capabilities, CallError> {
        let mut client = DeviceClient::new(self.channel.clone());
        self.bounded(client.get_capabilities(GetCapabilitiesRequest {}))
            .await
    }

    /// `Simulator.Control`.
    pub(crate) async fn simulate(
        &self,
        request: SimulatorRequest,
    ) -> Result<SimulatorReply, CallError> {
        let mut client = SimulatorClient::new(self.channel.clone());
        self.bounded(client.control(request)).await
    }

    /// `Device.Subscribe`; the time limit applies to opening the stream only.
    pub(crate) async fn subscribe(&self) -> Result<tonic::Streaming<Notice>, CallError> {
        let mut client = DeviceClient::new(self.channel.clone());
        self.bounded(client.subscribe(SubscribeRequest {})).await
    }

    /// `Device.Execute`; the time limit applies to opening the stream only.
    pub(crate) async fn execute(
        &self,
        command: Command,
    ) -> Result<tonic::Streaming<CommandReply>, CallError> {
        let mut client = DeviceClient::new(self.channel.clone());
        self.bounded(client.execute(command)).await
    }

    /// Sorts an error met while reading a stream.
    pub(crate) fn stream_error(&self, status: &tonic::Status) -> CallError {
        self.classify(status)
    }
}
