//! The per-device command queue: one command runs at a time, in arrival order, with a timeout,
//! cancel by request id, and the XFS4IoT reply shape (events, then exactly one completion).

use std::collections::HashMap;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, Ordering},
};
use std::time::Duration;

use openteller_proto::device::v1::{
    Command, CommandCompletion, CommandFinished, CommandReply, CommandStarted, CompletionCode,
    DeviceStatus, command, command_reply, notice,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::backend::{Backend, CommandContext, Failure, Hub, Outcome, command_class, command_name};

/// The stream half an `Execute` call returns.
pub type ReplyReceiver = mpsc::Receiver<Result<CommandReply, Status>>;
type ReplySender = mpsc::Sender<Result<CommandReply, Status>>;

/// Longest request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 64;

struct Job {
    request_id: String,
    command: command::Command,
    timeout: Duration,
    cancel: CancellationToken,
    replies: ReplySender,
}

/// Accepts commands and feeds them to the device one by one.
pub struct Dispatcher {
    backend: Arc<dyn Backend>,
    hub: Arc<Hub>,
    jobs: mpsc::UnboundedSender<Job>,
    inflight: Mutex<HashMap<String, CancellationToken>>,
    queued: AtomicU32,
    default_timeout: Duration,
}

impl Dispatcher {
    /// A dispatcher and the worker future that must be driven (spawned) for commands to run.
    /// The worker returns when `shutdown` is canceled, after canceling what is queued.
    pub fn new(
        backend: Arc<dyn Backend>,
        hub: Arc<Hub>,
        default_timeout: Duration,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let this = Arc::new(Dispatcher {
            backend,
            hub,
            jobs,
            inflight: Mutex::new(HashMap::new()),
            queued: AtomicU32::new(0),
            default_timeout,
        });
        let worker = Arc::clone(&this).work(rx, shutdown);
        (this, worker)
    }

    /// The backend behind this queue.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The notice hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Current status, with the queue length.
    pub fn status(&self) -> DeviceStatus {
        let mut s = self.backend.status();
        s.queued_commands = self.queued.load(Ordering::Relaxed);
        s
    }

    /// Queues a command; the receiver yields its events and then its completion. Invalid
    /// commands complete at once without reaching the device.
    pub fn submit(&self, cmd: Command) -> ReplyReceiver {
        let (tx, rx) = mpsc::channel(64);
        let request_id = cmd.request_id.clone();
        let refuse = |failure: Failure| {
            let reply = completion_reply(&request_id, Outcome::from(failure));
            // The channel is fresh and has room for one message.
            let _ = tx.try_send(Ok(reply));
        };
        if request_id.is_empty()
            || request_id.len() > MAX_REQUEST_ID_LEN
            || !request_id.chars().all(|c| c.is_ascii_graphic())
        {
            refuse(Failure::new(
                CompletionCode::InvalidRequestId,
                format!("request id must be 1..={MAX_REQUEST_ID_LEN} printable ASCII characters"),
            ));
            return rx;
        }
        let Some(command) = cmd.command else {
            refuse(Failure::new(
                CompletionCode::InvalidCommand,
                "the command is empty",
            ));
            return rx;
        };
        let class = self.backend.device_class();
        if command_class(&command) != class {
            refuse(Failure::unsupported(format!(
                "{} is not a command of this device, which is a {}",
                command_name(&command),
                class.as_str_name()
            )));
            return rx;
        }
        if command_name(&command).ends_with('?') {
            refuse(Failure::new(
                CompletionCode::InvalidCommand,
                "the command is empty",
            ));
            return rx;
        }
        let cancel = CancellationToken::new();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if inflight.contains_key(&request_id) {
                drop(inflight);
                refuse(Failure::new(
                    CompletionCode::InvalidRequestId,
                    format!("request id {request_id} is already queued or running"),
                ));
                return rx;
            }
            inflight.insert(request_id.clone(), cancel.clone());
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let timeout = match cmd.timeout_ms {
            0 => self.default_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let job = Job {
            request_id,
            command,
            timeout,
            cancel,
            replies: tx,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            self.forget(&job.request_id);
            let _ = job.replies.try_send(Ok(completion_reply(
                &job.request_id,
                Failure::not_ready("the device is shutting down").into(),
            )));
        }
        rx
    }

    /// Cancels queued or running commands; an empty list cancels all. Returns the ids found.
    pub fn cancel(&self, request_ids: &[String]) -> Vec<String> {
        let inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = Vec::new();
        for (id, token) in inflight.iter() {
            if request_ids.is_empty() || request_ids.contains(id) {
                token.cancel();
                found.push(id.clone());
            }
        }
        found.sort();
        found
    }

    fn forget(&self, request_id: &str) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id);
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    async fn work(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Job>,
        shutdown: CancellationToken,
    ) {
        loop {
            let job = tokio::select! {
                job = rx.recv() => match job { Some(j) => j, None => break },
                () = shutdown.cancelled() => break,
            };
            self.run_one(job, &shutdown).await;
        }
        // Whatever is still queued ends as canceled, so no requester waits forever.
        rx.close();
        while let Some(job) = rx.recv().await {
            let outcome = Failure::new(
                CompletionCode::Canceled,
                "the device proxy is shutting down",
            )
            .into();
            let _ = job
                .replies
                .send(Ok(completion_reply(&job.request_id, outcome)))
                .await;
            self.forget(&job.request_id);
        }
    }

    async fn run_one(&self, job: Job, shutdown: &CancellationToken) {
        let name = command_name(&job.command);
        let request_id = job.request_id.clone();
        let outcome = if job.cancel.is_cancelled() {
            Failure::new(CompletionCode::Canceled, "canceled before it started").into()
        } else {
            self.hub
                .publish(notice::Notice::CommandStarted(CommandStarted {
                    request_id: request_id.clone(),
                    command: name.to_owned(),
                }));
            tracing::debug!(request_id, command = name, "command started");
            let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
            let ctx = CommandContext::new(ev_tx);
            let outcome = {
                let run = self.backend.execute(job.command, &ctx);
                tokio::pin!(run);
                let deadline = tokio::time::sleep(job.timeout);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        biased;
                        out = &mut run => break out,
                        Some(event) = ev_rx.recv() => {
                            let reply = CommandReply {
                                request_id: request_id.clone(),
                                reply: Some(command_reply::Reply::Event(event)),
                            };
                            let _ = job.replies.send(Ok(reply)).await;
                        }
                        () = job.cancel.cancelled() => {
                            break Failure::new(CompletionCode::Canceled, "canceled by request").into();
                        }
                        () = shutdown.cancelled() => {
                            break Failure::new(CompletionCode::Canceled, "the device proxy is shutting down").into();
                        }
                        () = &mut deadline => {
                            break Failure::new(
                                CompletionCode::TimeOut,
                                format!("no completion within {} ms", job.timeout.as_millis()),
                            ).into();
                        }
                        () = job.replies.closed() => {
                            break Failure::new(CompletionCode::Canceled, "the requester went away").into();
                        }
                    }
                }
            };
            drop(ctx);
            while let Ok(event) = ev_rx.try_recv() {
                let reply = CommandReply {
                    request_id: request_id.clone(),
                    reply: Some(command_reply::Reply::Event(event)),
                };
                let _ = job.replies.send(Ok(reply)).await;
            }
            outcome
        };
        let completion = outcome.completion.clone();
        tracing::info!(
            request_id,
            command = name,
            code = CompletionCode::try_from(completion.code).map_or("?", |c| c.as_str_name()),
            error = completion.error_code,
            "command finished"
        );
        let _ = job
            .replies
            .send(Ok(completion_reply(&request_id, outcome)))
            .await;
        self.forget(&request_id);
        self.hub
            .publish(notice::Notice::CommandFinished(CommandFinished {
                request_id,
                command: name.to_owned(),
                completion: Some(completion),
            }));
        // Status-changed events describe the device, not the queue length.
        self.hub.status(self.backend.status());
    }
}

fn completion_reply(request_id: &str, outcome: Outcome) -> CommandReply {
    CommandReply {
        request_id: request_id.to_owned(),
        reply: Some(command_reply::Reply::Completion(CommandCompletion {
            completion: Some(outcome.completion),
            result: outcome.result,
        })),
    }
}
