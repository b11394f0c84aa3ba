//! The gRPC face of one device: the `Device` and `Simulator` services and the standard health
//! service on one socket, and `run`, which owns every task until shutdown.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openteller_proto::Endpoint;
use openteller_proto::device::v1::{
    CancelReply, CancelRequest, Capabilities, Command, CommandReply, DeviceStatus,
    GetCapabilitiesRequest, GetStatusRequest, Notice, SimulatorReply, SimulatorRequest,
    SubscribeRequest, device_event, device_server, notice, simulator_request, simulator_server,
};
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, Hub, success};
use crate::queue::Dispatcher;

/// Everything a proxy needs to start.
pub struct ProxyConfig {
    /// The device implementation.
    pub backend: Arc<dyn Backend>,
    /// The notice hub the backend publishes to.
    pub hub: Arc<Hub>,
    /// Where to serve.
    pub listen: Endpoint,
    /// Time limit of commands sent with `timeout_ms = 0`.
    pub default_timeout: Duration,
}

/// Why the proxy could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another live process already serves this socket.
    #[error("another process is already listening on {0}")]
    SocketInUse(String),
    /// Binding failed.
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the device until `shutdown` is canceled, then cancels queued and running commands,
/// stops accepting, and removes its Unix socket.
pub async fn run(config: ProxyConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let ProxyConfig {
        backend,
        hub,
        listen,
        default_timeout,
    } = config;
    let (dispatcher, worker) =
        Dispatcher::new(backend, Arc::clone(&hub), default_timeout, shutdown.clone());
    // The command-queue worker: owned here and joined below.
    let worker = tokio::spawn(worker);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<device_server::DeviceServer<DeviceService>>()
        .await;
    health_reporter
        .set_serving::<simulator_server::SimulatorServer<SimulatorService>>()
        .await;

    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(device_server::DeviceServer::new(DeviceService {
            dispatcher: Arc::clone(&dispatcher),
            shutdown: shutdown.clone(),
        }))
        .add_service(simulator_server::SimulatorServer::new(SimulatorService {
            dispatcher,
        }));

    let stop = shutdown.clone();
    let result = match &listen {
        Endpoint::Unix(path) => {
            let listener = bind_unix(path).await?;
            tracing::info!(endpoint = %listen, "serving");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let r = bounded(
                router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()),
                &shutdown,
            )
            .await;
            let _ = std::fs::remove_file(path);
            r
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    endpoint: listen.to_string(),
                    source,
                })?;
            tracing::info!(endpoint = %listen, "serving");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            bounded(
                router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()),
                &shutdown,
            )
            .await
        }
    };
    shutdown.cancel();
    let _ = worker.await;
    result.map_err(ServeError::from)
}

/// How long open connections may take to finish after shutdown is requested.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the server; once shutdown is requested, connections get [`DRAIN`] to finish (clients
/// that keep an idle connection open would otherwise hold the process forever).
async fn bounded(
    serve: impl Future<Output = Result<(), tonic::transport::Error>>,
    shutdown: &CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tokio::select! {
        r = serve => r,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("connections still open after the drain period; closing them");
            Ok(())
        }
    }
}

async fn bind_unix(path: &PathBuf) -> Result<tokio::net::UnixListener, ServeError> {
    let endpoint = format!("unix:{}", path.display());
    if path.exists() {
        // A socket file left by a killed proxy is removed; a live one is an error.
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::SocketInUse(endpoint));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Bind {
            endpoint: endpoint.clone(),
            source,
        })?;
    }
    tokio::net::UnixListener::bind(path).map_err(|source| ServeError::Bind { endpoint, source })
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<CommandReply, Status>> + Send + 'static>>;
type NoticeStream = Pin<Box<dyn Stream<Item = Result<Notice, Status>> + Send + 'static>>;

/// The `openteller.device.v1.Device` service.
pub struct DeviceService {
    dispatcher: Arc<Dispatcher>,
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl device_server::Device for DeviceService {
    type ExecuteStream = ReplyStream;
    type SubscribeStream = NoticeStream;

    async fn execute(
        &self,
        request: Request<Command>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let rx = self.dispatcher.submit(request.into_inner());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<DeviceStatus>, Status> {
        Ok(Response::new(self.dispatcher.status()))
    }

    async fn get_capabilities(
        &self,
        _: Request<GetCapabilitiesRequest>,
    ) -> Result<Response<Capabilities>, Status> {
        Ok(Response::new(self.dispatcher.backend().capabilities()))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelReply>, Status> {
        let canceled = self.dispatcher.cancel(&request.into_inner().request_ids);
        Ok(Response::new(CancelReply { canceled }))
    }

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let receiver = self.dispatcher.hub().subscribe();
        let shutdown = self.shutdown.clone();
        // Every subscription starts with the current status, so a subscriber needs no extra call.
        let first = Notice {
            sequence: 0,
            at_unix_ms: 0,
            notice: Some(notice::Notice::Event(
                openteller_proto::device::v1::DeviceEvent {
                    event: Some(device_event::Event::StatusChanged(self.dispatcher.status())),
                },
            )),
        };
        // A lagging subscriber skips what it missed; the sequence numbers show the gap.
        let rest = BroadcastStream::new(receiver).filter_map(|n| n.ok().map(Ok));
        let stream = futures::StreamExt::take_until(
            tokio_stream::once(Ok(first)).chain(rest),
            shutdown.cancelled_owned(),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The `openteller.device.v1.Simulator` service.
pub struct SimulatorService {
    dispatcher: Arc<Dispatcher>,
}

#[tonic::async_trait]
impl simulator_server::Simulator for SimulatorService {
    async fn control(
        &self,
        request: Request<SimulatorRequest>,
    ) -> Result<Response<SimulatorReply>, Status> {
        let Some(action) = request.into_inner().action else {
            return Err(Status::invalid_argument("the simulator action is empty"));
        };
        let label = action_label(&action);
        let backend = self.dispatcher.backend();
        let (result, data) = match backend.simulate(action).await {
            Ok(data) => (success(), data),
            Err(failure) => {
                tracing::info!(action = label, reason = %failure.description, "simulator action refused");
                (failure.to_completion(), None)
            }
        };
        tracing::info!(action = label, "simulator action");
        self.dispatcher.hub().status(backend.status());
        Ok(Response::new(SimulatorReply {
            result: Some(result),
            status: Some(self.dispatcher.status()),
            data,
        }))
    }
}

/// A name for logs that never includes the action's data (key presses are PIN digits).
fn action_label(action: &simulator_request::Action) -> &'static str {
    use simulator_request::Action;
    match action {
        Action::SetError(_) => "SetError",
        Action::ClearErrors(_) => "ClearErrors",
        Action::SetDeviceState(_) => "SetDeviceState",
        Action::OpenDevice(_) => "OpenDevice",
        Action::CloseDevice(_) => "CloseDevice",
        Action::CardReader(_) => "CardReader",
        Action::PinPad(_) => "PinPad",
        Action::CashDispenser(_) => "CashDispenser",
        Action::ReceiptPrinter(_) => "ReceiptPrinter",
    }
}
