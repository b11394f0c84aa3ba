//! One cache/bus suite, run in-process and against the real Redis.

use std::collections::BTreeSet;
use std::time::Duration;

use openteller_backoffice_storage::{Bus, Cache, CacheConfig, CacheError, Subscription};
use tokio::time::{sleep, timeout};

use crate::helpers::{redis_unavailable, redis_url, spawn_redis_server, unique_prefix};

const WAIT: Duration = Duration::from_secs(5);

async fn next(subscription: &mut Subscription) -> String {
    timeout(WAIT, subscription.recv())
        .await
        .unwrap_or_else(|_| panic!("no message on {} within {WAIT:?}", subscription.topic()))
        .expect("the bus is alive")
}

async fn nothing_more(subscription: &mut Subscription) {
    if let Ok(message) = timeout(Duration::from_millis(200), subscription.recv()).await {
        panic!(
            "unexpected message on {}: {message:?}",
            subscription.topic()
        );
    }
}

async fn cache_suite(cache: &Cache) {
    cache.ping().await.expect("ping");

    // get / set / overwrite.
    assert_eq!(cache.get("k").await.expect("get"), None);
    cache.set("k", "v1", None).await.expect("set");
    assert_eq!(cache.get("k").await.expect("get").as_deref(), Some("v1"));
    cache.set("k", "v2 ünïcode", None).await.expect("overwrite");
    assert_eq!(
        cache.get("k").await.expect("get").as_deref(),
        Some("v2 ünïcode")
    );

    // Expiry, with margins wide enough for a loaded machine; the waits are shared.
    let ttl = Some(Duration::from_millis(500));
    cache.set("short", "x", ttl).await.expect("set ttl");
    assert_eq!(cache.get("short").await.expect("get").as_deref(), Some("x"));
    // Setting without a TTL removes an earlier one.
    cache.set("sticky", "x", ttl).await.expect("set");
    cache.set("sticky", "y", None).await.expect("set");
    // expire() on a key without one.
    cache.set("expiring", "x", None).await.expect("set");
    assert!(
        cache
            .expire("expiring", Duration::from_millis(500))
            .await
            .expect("expire")
    );
    assert!(
        !cache
            .expire("missing", Duration::from_secs(1))
            .await
            .expect("expire missing")
    );
    // incr: a fixed window from the first increment.
    let window = Some(Duration::from_millis(1500));
    assert_eq!(cache.incr("fails", window).await.expect("incr"), 1);
    assert_eq!(cache.incr("fails", window).await.expect("incr"), 2);
    // A counter set without expiry gets one on its next increment.
    cache.set("plain", "41", None).await.expect("set");
    assert_eq!(cache.incr("plain", ttl).await.expect("incr"), 42);

    sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        cache.get("short").await.expect("get"),
        None,
        "did not expire"
    );
    assert_eq!(
        cache.get("sticky").await.expect("get").as_deref(),
        Some("y")
    );
    assert_eq!(
        cache.get("expiring").await.expect("get"),
        None,
        "expire had no effect"
    );
    assert_eq!(
        cache.get("plain").await.expect("get"),
        None,
        "no expiry added by incr"
    );
    assert_eq!(
        cache.incr("fails", window).await.expect("incr"),
        3,
        "the window ended early"
    );
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        cache.get("fails").await.expect("get"),
        None,
        "the window was extended"
    );
    assert_eq!(
        cache.incr("fails", window).await.expect("incr"),
        1,
        "a new window"
    );

    // del.
    assert!(cache.del("sticky").await.expect("del"));
    assert_eq!(cache.get("sticky").await.expect("get"), None);
    assert!(!cache.del("sticky").await.expect("del again"));

    // No TTL: lives on.
    assert_eq!(cache.incr("forever", None).await.expect("incr"), 1);
    assert_eq!(
        cache.get("forever").await.expect("get").as_deref(),
        Some("1")
    );
    // Not an integer.
    cache.set("text", "abc", None).await.expect("set");
    match cache.incr("text", None).await {
        Err(CacheError::NotAnInteger { key }) => assert_eq!(key, "text"),
        other => panic!("incr of text: {other:?}"),
    }
    assert_eq!(
        cache.get("text").await.expect("get").as_deref(),
        Some("abc")
    );

    // incr is atomic: 50 concurrent increments give 1..=50 once each.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.incr("race", Some(Duration::from_secs(60))).await })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for task in tasks {
        let n = task.await.expect("task").expect("incr");
        assert!(seen.insert(n), "{n} returned twice");
    }
    assert_eq!(seen, (1..=50).collect::<BTreeSet<i64>>());
    assert_eq!(cache.get("race").await.expect("get").as_deref(), Some("50"));

    for key in ["k", "forever", "text", "race", "fails"] {
        cache.del(key).await.expect("cleanup");
    }
}

/// `a` and `b` are two buses of one deployment (for Redis: separate connections).
async fn bus_suite(a: &Bus, b: &Bus) {
    // Published on a, received by b's subscribers, and a's own.
    let mut on_b = b.subscribe("roles").await.expect("subscribe");
    let mut on_b_too = b.subscribe("roles").await.expect("subscribe");
    let mut on_a = a.subscribe("roles").await.expect("subscribe");
    let mut other = b.subscribe("users").await.expect("subscribe");
    assert_eq!(
        b.subscriber_count("roles"),
        if same_bus(a, b) { 3 } else { 2 }
    );

    a.publish("roles", "role 42 changed")
        .await
        .expect("publish");
    assert_eq!(next(&mut on_b).await, "role 42 changed");
    assert_eq!(next(&mut on_b_too).await, "role 42 changed");
    assert_eq!(next(&mut on_a).await, "role 42 changed");
    nothing_more(&mut other).await;

    // Order is kept; big and non-ASCII payloads pass.
    let big = "ü".repeat(32 * 1024);
    for payload in ["1", "2", "3", big.as_str()] {
        b.publish("roles", payload).await.expect("publish");
    }
    for payload in ["1", "2", "3", big.as_str()] {
        assert_eq!(next(&mut on_b).await, payload);
    }
    a.publish("users", "user 7").await.expect("publish");
    assert_eq!(next(&mut other).await, "user 7");

    // Publishing to nobody is fine.
    a.publish("nobody-listens", "x")
        .await
        .expect("publish to nobody");

    // Dropping unsubscribes: the last subscription of a topic ends it.
    drop(on_b);
    assert_eq!(
        b.subscriber_count("roles"),
        if same_bus(a, b) { 2 } else { 1 }
    );
    drop(on_b_too);
    drop(on_a);
    assert_eq!(b.subscriber_count("roles"), 0);
    assert_eq!(a.subscriber_count("roles"), 0);
    // And subscribing again works.
    let mut again = b.subscribe("roles").await.expect("subscribe again");
    a.publish("roles", "after").await.expect("publish");
    assert_eq!(next(&mut again).await, "after");
    drop(again);
    drop(other);
}

fn same_bus(a: &Bus, _b: &Bus) -> bool {
    a.backend_name() == "local"
}

#[tokio::test]
async fn cache_local() {
    let (cache, _) = CacheConfig::default().build().await.expect("build");
    assert_eq!(cache.backend_name(), "local");
    cache_suite(&cache).await;
}

#[tokio::test]
async fn bus_local() {
    let bus = Bus::local();
    bus_suite(&bus, &bus.clone()).await;
    // The bus gone, subscriptions end.
    let mut subscription = bus.subscribe("t").await.expect("subscribe");
    drop(bus);
    assert_eq!(
        timeout(WAIT, subscription.recv()).await.expect("ends"),
        None
    );
}

fn redis_config() -> CacheConfig {
    CacheConfig {
        redis: Some(redis_url()),
        prefix: unique_prefix(),
    }
}

async fn redis_client(config: &CacheConfig) -> redis::aio::MultiplexedConnection {
    let url = config.redis.clone().unwrap_or_default();
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| redis_unavailable(&url, &e));
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| redis_unavailable(&url, &e))
}

/// Removes every key of this run.
async fn clean_keys(config: &CacheConfig) {
    let mut conn = redis_client(config).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", config.prefix))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
}

#[tokio::test]
async fn cache_redis() {
    let config = redis_config();
    let mut raw = redis_client(&config).await;
    let cache = config.cache().await.expect("connect");
    assert_eq!(cache.backend_name(), "redis");
    cache_suite(&cache).await;

    // Keys carry the prefix in Redis.
    cache
        .set("seen", "1", Some(Duration::from_secs(30)))
        .await
        .expect("set");
    let raw_value: Option<String> = redis::cmd("GET")
        .arg(format!("{}seen", config.prefix))
        .query_async(&mut raw)
        .await
        .expect("GET");
    assert_eq!(raw_value.as_deref(), Some("1"));
    // Two caches on one Redis share values and counters.
    let other = config.cache().await.expect("connect");
    assert_eq!(other.get("seen").await.expect("get").as_deref(), Some("1"));
    assert_eq!(
        cache
            .incr("shared", Some(Duration::from_secs(30)))
            .await
            .expect("incr"),
        1
    );
    assert_eq!(
        other
            .incr("shared", Some(Duration::from_secs(30)))
            .await
            .expect("incr"),
        2
    );
    clean_keys(&config).await;
}

/// Redis's own count of subscribers to a channel.
async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    reply.1
}

async fn wait_numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str, want: i64) {
    for _ in 0..50 {
        if numsub(conn, channel).await == want {
            return;
        }
        sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{channel}: {} subscribers in Redis, want {want}",
        numsub(conn, channel).await
    );
}

#[tokio::test]
async fn bus_redis() {
    let config = redis_config();
    let mut raw = redis_client(&config).await;
    let (cache, a) = config.build().await.expect("connect a");
    let b = config.bus().await.expect("connect b");
    assert_eq!(a.backend_name(), "redis");
    cache.ping().await.expect("shared connection works");

    bus_suite(&a, &b).await;

    // Unsubscribed in Redis too, once per process however many subscriptions it had.
    let channel = format!("{}t", config.prefix);
    let s1 = b.subscribe("t").await.expect("subscribe");
    let s2 = b.subscribe("t").await.expect("subscribe");
    let s3 = a.subscribe("t").await.expect("subscribe");
    wait_numsub(&mut raw, &channel, 2).await;
    drop(s1);
    wait_numsub(&mut raw, &channel, 2).await;
    drop(s2);
    wait_numsub(&mut raw, &channel, 1).await;
    drop(s3);
    wait_numsub(&mut raw, &channel, 0).await;
    assert_eq!(
        numsub(&mut raw, &format!("{}roles", config.prefix)).await,
        0
    );

    // Another prefix is another deployment: it hears nothing.
    let stranger = CacheConfig {
        prefix: unique_prefix(),
        ..config.clone()
    }
    .bus()
    .await
    .expect("connect");
    let mut deaf = stranger.subscribe("roles").await.expect("subscribe");
    a.publish("roles", "not for you").await.expect("publish");
    nothing_more(&mut deaf).await;

    // The bus gone, its subscriptions end and Redis forgets them.
    let mut ending = b.subscribe("end").await.expect("subscribe");
    wait_numsub(&mut raw, &format!("{}end", config.prefix), 1).await;
    drop(b);
    assert_eq!(timeout(WAIT, ending.recv()).await.expect("ends"), None);
    wait_numsub(&mut raw, &format!("{}end", config.prefix), 0).await;
    clean_keys(&config).await;
}

/// The subscription connection comes back after Redis restarts, subscribed again.
#[tokio::test]
async fn bus_redis_reconnects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::helpers::free_port();
    let server = spawn_redis_server(port, dir.path().join("redis-1.log"));
    let config = CacheConfig {
        redis: Some(format!("redis://127.0.0.1:{port}/")),
        prefix: unique_prefix(),
    };
    let (cache, bus) = config.build().await.expect("connect");
    let mut subscription = bus.subscribe("roles").await.expect("subscribe");
    bus.publish("roles", "before").await.expect("publish");
    assert_eq!(next(&mut subscription).await, "before");

    drop(server);
    let _server = spawn_redis_server(port, dir.path().join("redis-2.log"));

    // Messages published before the listener is back are lost; keep publishing until one
    // arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let received = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message after Redis restarted"
        );
        // The command connection reconnects by itself too; a failure here is a retry.
        let _ = bus.publish("roles", "after").await;
        if let Ok(Some(message)) = timeout(Duration::from_millis(200), subscription.recv()).await {
            break message;
        }
    };
    assert_eq!(received, "after");
    cache
        .set("k", "v", None)
        .await
        .expect("the cache reconnected");
}
