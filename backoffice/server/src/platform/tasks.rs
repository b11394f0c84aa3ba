//! Scheduled tasks (seed 001 §7.1): named cron schedules running one of the built-in actions,
//! enabled or disabled, runnable at once, with a run history. The scheduler runs in every
//! process that serves `platform`; a run is claimed by a conditional update of the task's next
//! run time, so with several processes each scheduled run happens once.

use std::str::FromStr;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;

use super::rows::{by_id, paged};
use super::text;
use crate::app::AppState;
use crate::audit::{self, Change};
use crate::auth::Ctx;
use crate::db::{Arg, Where};
use crate::error::{ApiError, ApiResult};
use crate::http::{Body, QueryMap, ok, path_id};
use crate::ids::{now_ms, rfc3339};

/// Bus topic announcing that tasks changed (the scheduler re-reads them).
const TOPIC: &str = "platform.tasks.changed";

/// An action a task can run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Action {
    /// Its name.
    pub action: &'static str,
    /// What it does.
    pub description: &'static str,
}

/// The built-in actions.
pub const ACTIONS: [Action; 2] = [
    Action {
        action: "audit.maintain",
        description: "Audit-log retention: create monthly partitions ahead, detach and drop old ones",
    },
    Action {
        action: "platform.purge-logs",
        description: "Delete login-log and access-log entries older than 180 days",
    },
];

/// Login and access logs are kept at least six months (seed 001 §6.7.2).
const LOG_KEEP_MS: i64 = 180 * 24 * 3600 * 1000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/tasks", get(list).post(create))
        .route("/api/v2/platform/tasks/{id}", put(update).delete(remove))
        .route("/api/v2/platform/tasks/{id}/run", post(run_now))
        .route("/api/v2/platform/tasks/{id}/runs", get(runs))
        .route("/api/v2/platform/task-actions", get(actions))
}

/// Parses a cron expression: 5 fields (minute first) or 6–7 (second first).
fn schedule(expr: &str) -> ApiResult<cron::Schedule> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_owned(),
        _ => return Err(ApiError::invalid("cron must have 5, 6 or 7 fields")),
    };
    cron::Schedule::from_str(&full).map_err(|e| ApiError::invalid(format!("cron: {e}")))
}

fn next_after(expr: &str, after_ms: i64) -> Option<i64> {
    let s = schedule(expr).ok()?;
    let after = chrono::DateTime::from_timestamp_millis(after_ms)?;
    s.after(&after).next().map(|t| t.timestamp_millis())
}

/// A task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    id: String,
    name: String,
    cron: String,
    action: String,
    enabled: bool,
    last_run_at: Option<String>,
    next_run_at: Option<String>,
}

fn task(r: &AnyRow) -> Result<Task, sqlx::Error> {
    Ok(Task {
        id: r.try_get::<i64, _>("id")?.to_string(),
        name: r.try_get("name")?,
        cron: r.try_get("cron")?,
        action: r.try_get("action")?,
        enabled: r.try_get::<i64, _>("enabled")? == 1,
        last_run_at: r.try_get::<Option<i64>, _>("last_run_ms")?.map(rfc3339),
        next_run_at: r.try_get::<Option<i64>, _>("next_run_ms")?.map(rfc3339),
    })
}

/// One run of a task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    id: String,
    task_id: String,
    started_at: String,
    finished_at: Option<String>,
    outcome: String,
    message: String,
    trigger: String,
}

fn task_run(r: &AnyRow) -> Result<TaskRun, sqlx::Error> {
    Ok(TaskRun {
        id: r.try_get::<i64, _>("id")?.to_string(),
        task_id: r.try_get::<i64, _>("task_id")?.to_string(),
        started_at: rfc3339(r.try_get("started_ms")?),
        finished_at: r.try_get::<Option<i64>, _>("finished_ms")?.map(rfc3339),
        outcome: r.try_get("outcome")?,
        message: r.try_get("message")?,
        trigger: r.try_get("trigger_kind")?,
    })
}

/// Inserts the built-in tasks at first start.
pub(crate) async fn seed_builtin(
    conn: &mut AnyConnection,
    app: &AppState,
    now: i64,
) -> anyhow::Result<()> {
    if super::settings::get(conn, "tasks_seeded")
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?
        .is_some()
    {
        return Ok(());
    }
    for (name, cron, action) in [
        ("Audit-log retention", "0 30 2 * * *", "audit.maintain"),
        (
            "Purge old login and access logs",
            "0 45 2 * * *",
            "platform.purge-logs",
        ),
    ] {
        sqlx::query(
            "INSERT INTO tasks (id, name, cron, action, enabled, next_run_ms, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $6)",
        )
        .bind(app.ids.next())
        .bind(name)
        .bind(cron)
        .bind(action)
        .bind(next_after(cron, now))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    super::settings::set(conn, "tasks_seeded", "1")
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(())
}

async fn actions(ctx: Ctx) -> ApiResult<Response> {
    ctx.require("platform:task:query").await?;
    ok(ACTIONS)
}

async fn list(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:task:query").await?;
    let page = q.page()?;
    q.finish()?;
    paged(&ctx, page, "tasks", Where::new(), "name", task).await
}

async fn runs(ctx: Ctx, Path(id): Path<String>, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:task:query").await?;
    let id = path_id(&id)?;
    let page = q.page()?;
    q.finish()?;
    let mut w = Where::new();
    w.and("task_id = ?", [Arg::I64(id)]);
    paged(&ctx, page, "task_runs", w, "started_ms", task_run).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    name: String,
    cron: String,
    action: String,
    enabled: bool,
}

fn check(b: Input) -> ApiResult<Input> {
    let name = text("name", &b.name, 1, 64)?;
    let cron = text("cron", &b.cron, 1, 100)?;
    schedule(&cron)?;
    if !ACTIONS.iter().any(|a| a.action == b.action) {
        return Err(ApiError::invalid(format!("unknown action {}", b.action)));
    }
    Ok(Input {
        name,
        cron,
        action: b.action,
        enabled: b.enabled,
    })
}

async fn load(conn: &mut AnyConnection, id: i64) -> ApiResult<Task> {
    by_id(conn, "tasks", id, "task", task).await
}

async fn announce(app: &AppState) {
    if let Err(e) = app.bus.publish(TOPIC, "changed").await {
        tracing::warn!(error = %e, "cannot announce a task change");
    }
}

async fn create(ctx: Ctx, Body(b): Body<Input>) -> ApiResult<Response> {
    ctx.require("platform:task:edit").await?;
    let b = check(b)?;
    let id = ctx.app.ids.next();
    let now = now_ms();
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO tasks (id, name, cron, action, enabled, next_run_ms, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(id)
    .bind(b.name)
    .bind(b.cron.clone())
    .bind(b.action)
    .bind(i64::from(b.enabled))
    .bind(next_after(&b.cron, now))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let after = load(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("task.create", "task", &after.id).after(&after),
    )
    .await?;
    announce(&ctx.app).await;
    ok(after)
}

async fn update(ctx: Ctx, Path(id): Path<String>, Body(b): Body<Input>) -> ApiResult<Response> {
    ctx.require("platform:task:edit").await?;
    let id = path_id(&id)?;
    let b = check(b)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load(&mut tx, id).await?;
    sqlx::query(
        "UPDATE tasks SET name = $1, cron = $2, action = $3, enabled = $4, next_run_ms = $5, \
         updated_ms = $6 WHERE id = $7",
    )
    .bind(b.name)
    .bind(b.cron.clone())
    .bind(b.action)
    .bind(i64::from(b.enabled))
    .bind(next_after(&b.cron, now_ms()))
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let after = load(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("task.update", "task", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    announce(&ctx.app).await;
    ok(after)
}

async fn remove(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:task:delete").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load(&mut tx, id).await?;
    for sql in [
        "DELETE FROM task_runs WHERE task_id = $1",
        "DELETE FROM tasks WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    audit::commit(
        &ctx,
        tx,
        Change::new("task.delete", "task", &before.id).before(&before),
    )
    .await?;
    announce(&ctx.app).await;
    ok(())
}

async fn run_now(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:task:run").await?;
    let id = path_id(&id)?;
    let mut conn = ctx.app.db.pool().acquire().await?;
    let t = load(&mut conn, id).await?;
    drop(conn);
    let run = execute(&ctx.app, id, &t.action, "manual").await?;
    let tx = ctx.app.db.pool().begin().await?;
    audit::commit(&ctx, tx, Change::new("task.run", "task", &t.id).after(&run)).await?;
    ok(run)
}

/// Runs `action` for task `task_id` and records the run.
async fn execute(app: &AppState, task_id: i64, action: &str, trigger: &str) -> ApiResult<TaskRun> {
    let id = app.ids.next();
    let started = now_ms();
    sqlx::query(
        "INSERT INTO task_runs (id, task_id, started_ms, outcome, message, trigger_kind) \
         VALUES ($1, $2, $3, 'running', '', $4)",
    )
    .bind(id)
    .bind(task_id)
    .bind(started)
    .bind(trigger.to_owned())
    .execute(app.db.pool())
    .await?;
    let result: Result<String, String> = match action {
        "audit.maintain" => audit::maintain(app, now_ms())
            .await
            .map(|m| json!(m).to_string())
            .map_err(|e| e.to_string()),
        "platform.purge-logs" => purge_logs(app).await.map_err(|e| e.to_string()),
        other => Err(format!("unknown action {other}")),
    };
    let (outcome, message) = match result {
        Ok(m) => ("ok", m),
        Err(e) => {
            tracing::warn!(task_id, action, error = %e, "task failed");
            ("failed", e)
        }
    };
    sqlx::query("UPDATE task_runs SET finished_ms = $1, outcome = $2, message = $3 WHERE id = $4")
        .bind(now_ms())
        .bind(outcome)
        .bind(message.chars().take(2000).collect::<String>())
        .bind(id)
        .execute(app.db.pool())
        .await?;
    sqlx::query("UPDATE tasks SET last_run_ms = $1 WHERE id = $2")
        .bind(started)
        .bind(task_id)
        .execute(app.db.pool())
        .await?;
    let mut conn = app.db.pool().acquire().await?;
    by_id(&mut conn, "task_runs", id, "task run", task_run).await
}

async fn purge_logs(app: &AppState) -> Result<String, sqlx::Error> {
    let cutoff = now_ms() - LOG_KEEP_MS;
    let mut deleted = 0;
    for sql in [
        "DELETE FROM login_log WHERE at_ms < $1",
        "DELETE FROM access_log WHERE at_ms < $1",
    ] {
        deleted += sqlx::query(sql)
            .bind(cutoff)
            .execute(app.db.pool())
            .await?
            .rows_affected();
    }
    Ok(format!("{deleted} entries deleted"))
}

/// The scheduler loop; ends when `shutdown` is cancelled.
pub async fn scheduler(app: AppState, shutdown: CancellationToken) {
    let mut changes = match app.bus.subscribe(TOPIC).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "task scheduler: no change notifications; polling only");
            None
        }
    };
    loop {
        let wait = match run_due(&app).await {
            Ok(next) => next
                .map(|n| Duration::from_millis((n - now_ms()).clamp(50, 30_000) as u64))
                .unwrap_or(Duration::from_secs(30)),
            Err(e) => {
                tracing::warn!(error = %e.message, "task scheduler");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = async {
                match changes.as_mut() {
                    Some(s) => { s.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

/// Runs the due tasks; returns the earliest next run time.
async fn run_due(app: &AppState) -> ApiResult<Option<i64>> {
    let now = now_ms();
    let due = sqlx::query(
        "SELECT id, cron, action, next_run_ms FROM tasks \
         WHERE enabled = 1 AND next_run_ms IS NOT NULL AND next_run_ms <= $1",
    )
    .bind(now)
    .fetch_all(app.db.pool())
    .await?;
    for r in due {
        let id: i64 = r.try_get("id")?;
        let cron: String = r.try_get("cron")?;
        let action: String = r.try_get("action")?;
        let old: i64 = r.try_get("next_run_ms")?;
        let claimed =
            sqlx::query("UPDATE tasks SET next_run_ms = $1 WHERE id = $2 AND next_run_ms = $3")
                .bind(next_after(&cron, now))
                .bind(id)
                .bind(old)
                .execute(app.db.pool())
                .await?
                .rows_affected()
                == 1;
        if claimed {
            execute(app, id, &action, "schedule").await?;
        }
    }
    let next: Option<i64> = sqlx::query(
        "SELECT MIN(next_run_ms) AS n FROM tasks WHERE enabled = 1 AND next_run_ms IS NOT NULL",
    )
    .fetch_one(app.db.pool())
    .await?
    .try_get("n")?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_with_five_or_six_fields() {
        let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(next_after("*/5 * * * *", base), Some(base + 5 * 60_000));
        assert_eq!(next_after("30 * * * * *", base), Some(base + 30_000));
        assert!(schedule("* *").is_err());
        assert!(schedule("61 * * * *").is_err());
    }
}
