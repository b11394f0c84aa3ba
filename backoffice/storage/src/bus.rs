//! The bus: fire-and-forget broadcasts between backoffice processes, for cache invalidation
//! ("role 42 changed: drop what you cached about it").
//!
//! [`Bus`] is in-process by default and Redis pub/sub when several processes run. Every
//! subscriber of a topic receives every message published on it after its
//! [`subscribe`](Bus::subscribe) returned, its own process's messages included; with Redis,
//! across every process that uses the same Redis and prefix.
//!
//! Delivery is at most once: a message published while a subscriber's connection to Redis is
//! down, or one that a subscriber too slow to keep up ([`QUEUE`] messages behind) misses, is
//! lost (and logged). Use TTLs on cached values as the backstop.
//!
//! With Redis, one connection per `Bus` carries every subscription (topics are shared by the
//! subscribers of the process and SUBSCRIBEd once); a task owned by the `Bus` reads it,
//! reconnects with back-off when it drops, subscribes again to every topic still wanted, and
//! checks the connection with a PING every [`PING_EVERY`]. Dropping the last [`Subscription`]
//! of a topic UNSUBSCRIBEs; dropping the last clone of the `Bus` stops the task and ends every
//! subscription ([`Subscription::recv`] returns `None`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::cache::{CacheError, REDIS_TIMEOUT, connect, open_client, redis_err};

/// Messages a subscriber may fall behind before it loses the oldest.
pub const QUEUE: usize = 1024;

/// How often the subscription connection is checked.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// The bus; cheap to clone (clones share subscriptions and connections).
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

struct BusInner {
    hub: Arc<Hub>,
    remote: Option<Remote>,
}

impl Drop for BusInner {
    fn drop(&mut self) {
        if let Some(remote) = &self.remote {
            remote.task.abort();
        }
        self.hub.close();
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner.remote {
            None => f.write_str("Bus::Local"),
            Some(r) => f
                .debug_struct("Bus::Redis")
                .field("prefix", &r.prefix)
                .finish(),
        }
    }
}

impl Bus {
    /// A bus inside this process.
    pub fn local() -> Self {
        Self {
            inner: Arc::new(BusInner {
                hub: Arc::default(),
                remote: None,
            }),
        }
    }

    /// A bus over Redis at `url`, channel names prefixed with `prefix`. Opens two connections
    /// now (one to publish, one for subscriptions) and fails if Redis does not answer.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, CacheError> {
        let client = open_client(url)?;
        let publisher = connect(&client).await?;
        Self::from_redis(client, publisher, prefix).await
    }

    pub(crate) async fn from_redis(
        client: redis::Client,
        publisher: ConnectionManager,
        prefix: &str,
    ) -> Result<Self, CacheError> {
        let (sink, stream) = connect_pubsub(&client).await?;
        let hub = Arc::new(Hub::default());
        let sink = Arc::new(tokio::sync::Mutex::new(Some(sink)));
        let (unsubscribe, unsubscribe_rx) = mpsc::unbounded_channel();
        let prefix: Arc<str> = Arc::from(prefix);
        let listener = Listener {
            client,
            prefix: prefix.clone(),
            hub: hub.clone(),
            sink: sink.clone(),
        };
        let task = tokio::spawn(
            listener
                .run(stream, unsubscribe_rx)
                .instrument(tracing::info_span!("bus-redis-listener", prefix = %prefix)),
        );
        Ok(Self {
            inner: Arc::new(BusInner {
                hub,
                remote: Some(Remote {
                    publisher,
                    prefix,
                    sink,
                    unsubscribe,
                    task,
                }),
            }),
        })
    }

    /// `"local"` or `"redis"`, for logs and health reports.
    pub fn backend_name(&self) -> &'static str {
        match self.inner.remote {
            None => "local",
            Some(_) => "redis",
        }
    }

    /// Sends `payload` to every current subscriber of `topic`. Succeeds with no subscriber.
    pub async fn publish(&self, topic: &str, payload: &str) -> Result<(), CacheError> {
        match &self.inner.remote {
            None => {
                self.inner.hub.dispatch(topic, payload);
                Ok(())
            }
            Some(remote) => {
                // Our own subscribers get it back from Redis, like everyone else's.
                let channel = format!("{}{topic}", remote.prefix);
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut remote.publisher.clone())
                    .await
                    .map(drop)
                    .map_err(redis_err("PUBLISH"))
            }
        }
    }

    /// Subscribes to `topic`: the subscription receives what is published from the moment
    /// this returns. With Redis, fails when the subscription cannot be registered.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, CacheError> {
        let hub = &self.inner.hub;
        let Some(remote) = &self.inner.remote else {
            let (rx, _first) = hub.subscribe(topic);
            return Ok(Subscription::new(topic, rx, hub.clone(), None));
        };
        // Held while (un)subscribing, so that Redis's state follows the hub's in order.
        let mut sink = remote.sink.lock().await;
        let (rx, first) = hub.subscribe(topic);
        let subscription =
            Subscription::new(topic, rx, hub.clone(), Some(remote.unsubscribe.clone()));
        if first {
            // While disconnected, the listener subscribes again to every topic on reconnection.
            if let Some(sink) = sink.as_mut() {
                let channel = format!("{}{topic}", remote.prefix);
                timeout(sink.subscribe(channel))
                    .await
                    .map_err(redis_err("SUBSCRIBE"))?;
            }
        }
        Ok(subscription)
    }

    /// How many subscriptions to `topic` are open on this bus (in this process).
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner.hub.count(topic)
    }
}

/// One topic's messages, from [`Bus::subscribe`]; dropping it unsubscribes.
pub struct Subscription {
    topic: String,
    rx: broadcast::Receiver<String>,
    hub: Arc<Hub>,
    unsubscribe: Option<mpsc::UnboundedSender<String>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Subscription {
    fn new(
        topic: &str,
        rx: broadcast::Receiver<String>,
        hub: Arc<Hub>,
        unsubscribe: Option<mpsc::UnboundedSender<String>>,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            rx,
            hub,
            unsubscribe,
        }
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message; `None` once the bus is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            match self.rx.recv().await {
                Ok(message) => return Some(message),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(topic = %self.topic, missed, "bus subscriber too slow: messages lost");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // This receiver is still alive here, hence "at most one".
        if self.hub.release(&self.topic)
            && let Some(unsubscribe) = &self.unsubscribe
        {
            // The listener checks again before UNSUBSCRIBE: a new subscriber may have come.
            let _ = unsubscribe.send(std::mem::take(&mut self.topic));
        }
    }
}

/// The in-process fan-out: one broadcast channel per topic with subscribers.
#[derive(Default)]
struct Hub {
    topics: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<String>>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver for `topic`, and whether it is the topic's first.
    fn subscribe(&self, topic: &str) -> (broadcast::Receiver<String>, bool) {
        let mut topics = self.lock();
        if let Some(tx) = topics.get(topic) {
            return (tx.subscribe(), false);
        }
        let (tx, rx) = broadcast::channel(QUEUE);
        topics.insert(topic.to_owned(), tx);
        (rx, true)
    }

    /// Called as a subscription goes; forgets the topic when it was the last one and says so.
    fn release(&self, topic: &str) -> bool {
        let mut topics = self.lock();
        match topics.get(topic) {
            Some(tx) if tx.receiver_count() <= 1 => {
                topics.remove(topic);
                true
            }
            _ => false,
        }
    }

    fn dispatch(&self, topic: &str, payload: &str) {
        if let Some(tx) = self.lock().get(topic) {
            // No receiver left is not an error: the topic is being released.
            let _ = tx.send(payload.to_owned());
        }
    }

    fn count(&self, topic: &str) -> usize {
        self.lock().get(topic).map_or(0, |tx| tx.receiver_count())
    }

    fn wanted(&self, topic: &str) -> bool {
        self.lock().contains_key(topic)
    }

    fn topics(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Ends every subscription.
    fn close(&self) {
        self.lock().clear();
    }
}

struct Remote {
    publisher: ConnectionManager,
    prefix: Arc<str>,
    /// `None` while the listener reconnects.
    sink: Arc<tokio::sync::Mutex<Option<PubSubSink>>>,
    unsubscribe: mpsc::UnboundedSender<String>,
    task: JoinHandle<()>,
}

/// The task reading the subscription connection. Owned by the `Bus` (aborted with it).
struct Listener {
    client: redis::Client,
    prefix: Arc<str>,
    hub: Arc<Hub>,
    sink: Arc<tokio::sync::Mutex<Option<PubSubSink>>>,
}

impl Listener {
    async fn run(self, stream: PubSubStream, mut unsubscribe: mpsc::UnboundedReceiver<String>) {
        let mut stream = Some(stream);
        loop {
            let mut current = match stream.take() {
                Some(stream) => stream,
                None => self.reconnect().await,
            };
            let mut ping = tokio::time::interval(PING_EVERY);
            ping.tick().await;
            loop {
                tokio::select! {
                    message = current.next() => match message {
                        Some(message) => self.deliver(&message),
                        None => {
                            tracing::warn!("bus: Redis subscription connection lost; reconnecting");
                            break;
                        }
                    },
                    Some(topic) = unsubscribe.recv() => {
                        if let Err(e) = self.unsubscribe(&topic).await {
                            tracing::warn!(error = %e, "bus: UNSUBSCRIBE failed; reconnecting");
                            break;
                        }
                    }
                    _ = ping.tick() => {
                        if let Err(e) = self.ping().await {
                            tracing::warn!(error = %e, "bus: Redis subscription connection unresponsive; reconnecting");
                            break;
                        }
                    }
                }
            }
            *self.sink.lock().await = None;
        }
    }

    fn deliver(&self, message: &redis::Msg) {
        let Some(topic) = message.get_channel_name().strip_prefix(&*self.prefix) else {
            return;
        };
        match message.get_payload::<String>() {
            Ok(payload) => self.hub.dispatch(topic, &payload),
            Err(e) => {
                tracing::warn!(topic, error = %e, "bus: message dropped: payload is not UTF-8")
            }
        }
    }

    async fn unsubscribe(&self, topic: &str) -> redis::RedisResult<()> {
        let mut sink = self.sink.lock().await;
        if self.hub.wanted(topic) {
            return Ok(()); // subscribed again meanwhile
        }
        match sink.as_mut() {
            Some(sink) => timeout(sink.unsubscribe(format!("{}{topic}", self.prefix))).await,
            None => Ok(()),
        }
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let mut sink = self.sink.lock().await;
        match sink.as_mut() {
            Some(sink) => timeout(sink.ping::<redis::Value>()).await.map(drop),
            None => Ok(()),
        }
    }

    /// Connects again (retrying with back-off up to 5 s apart) and subscribes to every topic
    /// that still has subscribers.
    async fn reconnect(&self) -> PubSubStream {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            let (mut sink, stream) = match connect_pubsub(&self.client).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "bus: Redis reconnection failed");
                    continue;
                }
            };
            let mut shared = self.sink.lock().await;
            let channels: Vec<String> = self
                .hub
                .topics()
                .into_iter()
                .map(|t| format!("{}{t}", self.prefix))
                .collect();
            if !channels.is_empty()
                && let Err(e) = timeout(sink.subscribe(&channels)).await
            {
                tracing::warn!(error = %e, "bus: resubscribing failed");
                continue;
            }
            *shared = Some(sink);
            tracing::info!(
                topics = channels.len(),
                "bus: Redis subscription connection restored"
            );
            return stream;
        }
    }
}

async fn connect_pubsub(client: &redis::Client) -> Result<(PubSubSink, PubSubStream), CacheError> {
    timeout(client.get_async_pubsub())
        .await
        .map(redis::aio::PubSub::split)
        .map_err(redis_err("connect for SUBSCRIBE"))
}

/// Bounds a Redis call by [`REDIS_TIMEOUT`].
async fn timeout<T>(call: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis did not answer in time",
        ))),
    }
}
