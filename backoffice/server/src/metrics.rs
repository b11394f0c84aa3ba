//! Prometheus metrics at `/metrics`: requests by status, request latency, logins by outcome.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

struct Metrics {
    registry: Registry,
    requests: Family<Vec<(String, String)>, Counter>,
    latency: Histogram,
    logins: Family<Vec<(String, String)>, Counter>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("openteller_backoffice");
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("http_requests", "HTTP requests by status", requests.clone());
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "http_request_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        let logins = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("logins", "Login attempts by outcome", logins.clone());
        Metrics {
            registry,
            requests,
            latency,
            logins,
        }
    })
}

/// Counts one answered request.
pub fn record_request(status: u16, elapsed: Duration) {
    let m = metrics();
    m.requests
        .get_or_create(&vec![("status".to_owned(), status.to_string())])
        .inc();
    m.latency.observe(elapsed.as_secs_f64());
}

/// Counts one login attempt.
pub fn record_login(outcome: &str) {
    metrics()
        .logins
        .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
        .inc();
}

/// The text exposition.
pub fn render() -> String {
    let mut out = String::new();
    if encode(&mut out, &metrics().registry).is_err() {
        out.clear();
    }
    out
}
