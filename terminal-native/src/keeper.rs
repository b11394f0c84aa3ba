//! Heartbeats to the keeper and its service flag: every interval, `POST
//! /api/v1/processes/{name}/heartbeat {"idle"}` (idle = no customer session and no command
//! running, so the keeper knows when host commands may run), then `GET /api/v1/service` to
//! follow pause / resume (the out-of-service flag of `terminal.status`).
//!
//! A keeper that cannot be reached changes nothing: the last known service flag stays.

use std::sync::Arc;

use openteller_keeper::client;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Terminal;
use crate::config::KeeperSpec;

/// Runs until `stop`.
pub(crate) async fn run(terminal: Arc<Terminal>, spec: KeeperSpec, stop: CancellationToken) {
    let heartbeat = format!("/api/v1/processes/{}/heartbeat", spec.process);
    let mut reachable = true;
    let mut ticker = tokio::time::interval(spec.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let idle = terminal.gate().idle();
        let beat = client::request(
            &spec.control,
            "POST",
            &heartbeat,
            Some(&json!({"idle": idle})),
        )
        .await;
        let service = client::request(&spec.control, "GET", "/api/v1/service", None).await;
        match (beat, service) {
            (Ok(b), Ok(s)) => {
                if !reachable {
                    tracing::info!(keeper = %spec.control, "keeper reachable again");
                    reachable = true;
                }
                if b.status != 200 {
                    tracing::warn!(status = b.status, body = %b.body, "keeper refused the heartbeat");
                }
                let data = s.data();
                if let Some(paused) = data["paused"].as_bool() {
                    let reason = data["reason"].as_str().map(str::to_owned);
                    terminal.set_service_paused(paused, reason).await;
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                if reachable {
                    tracing::warn!(error = %e, "keeper unreachable");
                    reachable = false;
                }
            }
        }
    }
}
