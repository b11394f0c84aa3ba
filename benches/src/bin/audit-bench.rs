//! Load driver for the backoffice's audit-log inquiry (seed 003). Target: 10 million rows, one
//! user's last 30 days, p95 under 100 ms.
//!
//! It creates a fresh PostgreSQL database on `--postgres-url`'s server (dropped at the end
//! unless `--keep`), opens it with `openteller_backoffice::db::Db::open` (the real migrations:
//! `audit_log` range-partitioned by month on `at_ms`, a default partition, the composite
//! indexes), creates the monthly partitions `audit_log_pYYYYMM` of the last `--months` months and
//! two ahead with the bounds the retention task uses (month start UTC to next month start, Unix
//! ms), and loads `--rows` rows server-side (`INSERT … SELECT … FROM generate_series`, in chunks,
//! `--load-jobs` at a time, oldest first as the service writes them):
//!
//! - `at_ms` spread evenly over the last `--months` months (30.44 days each), ids snowflake-like;
//! - `--users` users with Zipf-like activity (user of rank k writes ∝ 1/k: the busiest about 9 %
//!   of all rows, the median one about 0.013 %), plus 2 % `system` rows without a user;
//! - a session per user and 8 hours, a trace id per row, 30 % of rows in transaction groups of 4,
//!   an address per user, twelve actions (`user.update`, `dict.create`, …) with skewed
//!   frequencies, before/after JSON of about 220 bytes each (no before on create, no after on
//!   delete).
//!
//! Then `VACUUM (ANALYZE)` (`--no-vacuum`: `ANALYZE` only; autovacuum would otherwise set the
//! visibility map later, in the middle of the measurement). It prints the load time and the
//! size of the partitions, then measures the inquiry "one user, last `--days` days, first page
//! of `--page-size`", newest first, for two user choices: a user drawn uniformly from all users,
//! and one of the 10 busiest users:
//!
//! 1. **SQL**: the two statements exactly as `audit.rs` builds and runs them (the same `Where`
//!    helper, `COUNT(*)` then `SELECT * … ORDER BY at_ms DESC, id DESC LIMIT $3 OFFSET $4`,
//!    prepared statements through the same `sqlx` Any pool), `--iterations` inquiries from
//!    `--clients` concurrent clients;
//! 2. **HTTP**: the real `backoffice` binary (next to this one, or `--backoffice`) serving that
//!    database, signed in as `sysadmin`, `GET /api/v2/audit/logs?userId=…&from=…&pageSize=…`
//!    with the bearer token, `--http-iterations` requests from `--clients` concurrent clients.
//!
//! Each line reports count, rate, p50, p95, p99 and max in ms (after `--warmup` unmeasured
//! inquiries per scenario). `--reuse NAME` measures an existing, loaded database again (nothing
//! created, loaded or dropped), e.g. after trying an index by hand with `psql`.
//!
//! ```sh
//! cargo build --release -p openteller-backoffice --no-default-features -p openteller-benches
//! target/release/audit-bench                               # 10 M rows, fresh database, dropped
//! target/release/audit-bench --rows 1000000 --keep         # smaller, keep the database
//! target/release/audit-bench --reuse ot_audit_bench_1234   # measure a kept database again
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{Datelike, NaiveDate};
use clap::Parser;
use openteller_backoffice::db::{Arg, Db, Where};
use openteller_benches::Latencies;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::{AnyPool, Row};

/// User of rank k (1 = busiest) has id `USER_BASE + k * USER_STEP` (snowflake-sized ids).
const USER_BASE: i64 = 7_000_000_000_000_000;
const USER_STEP: i64 = 4_194_304;
const DAY_MS: i64 = 86_400_000;
/// 30.4375 days: the average month.
const MONTH_MS: f64 = 30.4375 * 86_400_000.0;
const ADMIN: &str = "sysadmin";
const ADMIN_PASSWORD: &str = "Init#Admin2026";
/// The busiest users, the second user choice.
const HEAVY_USERS: u32 = 10;

#[derive(Parser)]
#[command(about = "Loads the backoffice audit log with realistic rows and measures the inquiry")]
struct Args {
    /// Rows to load.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Users writing them (Zipf-like activity).
    #[arg(long, default_value_t = 2000)]
    users: u32,
    /// Months the rows span, ending now; partitions cover them and two months ahead.
    #[arg(long, default_value_t = 18)]
    months: u32,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 250_000)]
    chunk_rows: u64,
    /// INSERT statements running at once.
    #[arg(long, default_value_t = 2)]
    load_jobs: usize,
    /// ANALYZE only after the load (no VACUUM: visibility map unset).
    #[arg(long)]
    no_vacuum: bool,
    /// The inquiry's window: the last DAYS days.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Rows per page.
    #[arg(long, default_value_t = 20)]
    page_size: i64,
    /// Measured SQL inquiries per user choice.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Measured HTTP requests per user choice.
    #[arg(long, default_value_t = 2000)]
    http_iterations: usize,
    /// Unmeasured inquiries before each measured run.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Concurrent clients (each one inquiry outstanding, no think time).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seed of the user choices.
    #[arg(long, default_value_t = 3)]
    seed: u64,
    /// Administrative URL of the PostgreSQL server.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Keep the bench database (its name is printed).
    #[arg(long)]
    keep: bool,
    /// Measure this existing, already loaded database; create, load and drop nothing.
    #[arg(long, value_name = "NAME")]
    reuse: Option<String>,
    /// The `backoffice` binary (default: next to this one).
    #[arg(long, value_name = "PATH")]
    backoffice: Option<PathBuf>,
    /// Skip the SQL measurement.
    #[arg(long)]
    skip_sql: bool,
    /// Skip the HTTP measurement.
    #[arg(long)]
    skip_http: bool,
    /// RUST_LOG of the backoffice (its log goes to a file in the temporary directory).
    #[arg(long, default_value = "info,sqlx=warn")]
    log: String,
    /// Print EXPLAIN (ANALYZE, BUFFERS) of both statements for the busiest and a median user.
    #[arg(long)]
    explain: bool,
    /// Runtime worker threads of this load driver.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.users == 0 || args.rows == 0 || args.months == 0 || args.clients == 0 {
        eprintln!("audit-bench: --users, --rows, --months and --clients must be at least 1");
        return ExitCode::from(64);
    }
    if args.chunk_rows == 0 || args.load_jobs == 0 || args.days <= 0 {
        eprintln!("audit-bench: --chunk-rows, --load-jobs and --days must be at least 1");
        return ExitCode::from(64);
    }
    if !(1..=200).contains(&args.page_size) {
        eprintln!("audit-bench: --page-size must be 1..=200 (the API's limit)");
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("audit-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let db = match &args.reuse {
            Some(name) => BenchDb::existing(&args.postgres_url, name)?,
            None => BenchDb::create(&args.postgres_url).await?,
        };
        let result = tokio::select! {
            r = run(&args, &db) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        if args.keep || args.reuse.is_some() {
            println!("kept database {} ({})", db.name, db.url);
        } else if let Err(e) = db.drop_db().await {
            eprintln!(
                "audit-bench: could not drop the bench database {}: {e:#}",
                db.name
            );
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audit-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The database

/// The bench database on the server of `admin`.
struct BenchDb {
    admin: String,
    name: String,
    url: String,
}

impl BenchDb {
    fn at(admin: &str, name: &str) -> BenchDb {
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        BenchDb {
            admin: admin.to_owned(),
            name: name.to_owned(),
            url: format!("{base}/{name}"),
        }
    }

    fn existing(admin: &str, name: &str) -> anyhow::Result<BenchDb> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("--reuse: {name:?} is not a plain database name");
        }
        Ok(BenchDb::at(admin, name))
    }

    async fn create(admin: &str) -> anyhow::Result<BenchDb> {
        sqlx::any::install_default_drivers();
        let db = BenchDb::at(admin, &format!("ot_audit_bench_{}", std::process::id()));
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin)
            .await
            .with_context(|| format!("PostgreSQL at {admin}"))?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {}", db.name))
            .execute(&mut conn)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {}", db.name))
            .execute(&mut conn)
            .await?;
        Ok(db)
    }

    async fn drop_db(&self) -> anyhow::Result<()> {
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

/// The first day of the month `offset` months from (`year`, `month`) (as `audit.rs`).
fn month_start(year: i32, month: u32, offset: i32) -> NaiveDate {
    let index = year * 12 + month as i32 - 1 + offset;
    NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
        .unwrap_or_default()
}

fn date_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Creates the monthly partitions from `months` months back to two ahead, named and bounded
/// as the retention task does; returns how many.
async fn create_partitions(pool: &AnyPool, now: i64, months: u32) -> anyhow::Result<usize> {
    let today = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .date_naive();
    let (y, m) = (today.year(), today.month());
    let mut n = 0;
    for offset in -(months as i32)..=2 {
        let start = month_start(y, m, offset);
        let name = format!("audit_log_p{:04}{:02}", start.year(), start.month());
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF audit_log FOR VALUES FROM ({}) TO ({})",
            date_ms(start),
            date_ms(month_start(start.year(), start.month(), 1))
        );
        sqlx::raw_sql(&sql).execute(pool).await?;
        n += 1;
    }
    Ok(n)
}

/// Rows `$3..=$4` of the data set: row i at `$1 + (i + random()) * $2` ms, `$5` users.
const LOAD_SQL: &str = r#"
INSERT INTO audit_log (id, at_ms, user_id, username, session_id, trace_id, txn_group_id,
    address, action, target_type, target_id, before_json, after_json)
SELECT
    (GREATEST(g.at_ms - 1704067200000, 0) << 22) | (7 << 12) | (g.i % 4096),
    g.at_ms,
    CASE WHEN g.u = 0 THEN NULL ELSE 7000000000000000 + g.u * 4194304 END,
    CASE WHEN g.u = 0 THEN 'system' ELSE 'teller' || lpad(g.u::text, 4, '0') END,
    CASE WHEN g.u = 0 THEN NULL ELSE left(md5(g.u || ':' || (g.at_ms / 28800000)), 24) END,
    md5(g.i::text),
    CASE WHEN g.grp THEN md5('g' || (g.i / 4)) ELSE md5(g.i::text) END,
    CASE WHEN g.u = 0 THEN '127.0.0.1'
         ELSE '10.' || (g.u % 7) || '.' || (g.u / 250) || '.' || (g.u % 250 + 1) END,
    a.action,
    split_part(a.action, '.', 1),
    (7100000000000000 + g.t * 4096)::text,
    CASE WHEN a.kind = 'create' THEN NULL ELSE json_build_object(
        'id', (7100000000000000 + g.t * 4096)::text, 'code', 'OBJ' || g.t,
        'name', 'Branch object ' || g.t, 'orgId', (6900000000000000 + g.u % 40)::text,
        'status', 1, 'email', 'teller' || g.u || '@branch' || (g.u % 40) || '.example.com',
        'remark', 'updated by the console', 'version', g.t % 17)::text END,
    CASE WHEN a.kind = 'delete' THEN NULL ELSE json_build_object(
        'id', (7100000000000000 + g.t * 4096)::text, 'code', 'OBJ' || g.t,
        'name', 'Branch object ' || g.t, 'orgId', (6900000000000000 + g.u % 40)::text,
        'status', g.i % 2, 'email', 'teller' || g.u || '@branch' || (g.u % 40) || '.example.com',
        'remark', 'updated by the console', 'version', g.t % 17 + 1)::text END
FROM (
    SELECT i,
        ($1::bigint + (i + random()) * $2::float8)::bigint AS at_ms,
        CASE WHEN random() < 0.02 THEN 0
             ELSE LEAST($5::bigint, floor(exp(random() * ln($5::bigint + 1))))::bigint END AS u,
        floor(random() ^ 2 * 12)::int + 1 AS ai,
        floor(random() * 200000)::bigint AS t,
        random() < 0.3 AS grp
    FROM generate_series($3::bigint, $4::bigint) AS i
) g
CROSS JOIN LATERAL (
    SELECT x.action,
        CASE WHEN x.action ~ '\.(create|upload)$' THEN 'create'
             WHEN x.action ~ '\.delete$' THEN 'delete' ELSE 'update' END AS kind
    FROM (SELECT (ARRAY['user.update', 'dict.update', 'dict.create', 'role.update',
        'user.create', 'org.update', 'menu.update', 'task.update', 'blacklist.create',
        'user.password.reset', 'file.upload', 'dict.delete'])[g.ai] AS action) x
) a
"#;

/// Loads the rows in chunks, `jobs` statements at a time, oldest chunks first.
async fn load(pool: &AnyPool, args: &Args, end_ms: i64) -> anyhow::Result<()> {
    let span = MONTH_MS * f64::from(args.months);
    let start_ms = end_ms - span as i64;
    let step = span / args.rows as f64;
    let chunks = args.rows.div_ceil(args.chunk_rows);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.load_jobs {
        let (pool, next, done) = (pool.clone(), next.clone(), done.clone());
        let (rows, chunk_rows, users) = (args.rows, args.chunk_rows, i64::from(args.users));
        tasks.push(tokio::spawn(async move {
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks {
                    return anyhow::Ok(());
                }
                let lo = c * chunk_rows;
                let hi = (lo + chunk_rows).min(rows) - 1;
                sqlx::query(LOAD_SQL)
                    .bind(start_ms)
                    .bind(step)
                    .bind(lo as i64)
                    .bind(hi as i64)
                    .bind(users)
                    .execute(&pool)
                    .await
                    .with_context(|| format!("loading rows {lo}..={hi}"))?;
                let total = done.fetch_add(hi - lo + 1, Ordering::Relaxed) + hi - lo + 1;
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "  loaded {total:>11} / {rows} rows  {secs:7.1} s  {:8.0} rows/s",
                    total as f64 / secs.max(1e-9)
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Prints the partitions' sizes and the data set's shape; returns the number of rows.
async fn describe(pool: &AnyPool, from: i64, users: u32) -> anyhow::Result<i64> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS parts, SUM(pg_relation_size(inhrelid))::bigint AS heap, \
         SUM(pg_table_size(inhrelid))::bigint AS tbl, SUM(pg_indexes_size(inhrelid))::bigint AS idx, \
         SUM(pg_total_relation_size(inhrelid))::bigint AS total \
         FROM pg_inherits WHERE inhparent = 'audit_log'::regclass",
    )
    .fetch_one(pool)
    .await?;
    let gib = |name: &str| -> anyhow::Result<f64> {
        Ok(r.try_get::<i64, _>(name)? as f64 / (1u64 << 30) as f64)
    };
    println!(
        "table size: {:.2} GiB total over {} partitions (heap + TOAST {:.2} GiB, of which main fork {:.2} GiB; indexes {:.2} GiB)",
        gib("total")?,
        r.try_get::<i64, _>("parts")?,
        gib("tbl")?,
        gib("heap")?,
        gib("idx")?
    );
    let count = |sql: &'static str, bind: Option<i64>| async move {
        let q = sqlx::query(sql).bind(from);
        let q = match bind {
            Some(u) => q.bind(u),
            None => q,
        };
        anyhow::Ok(q.fetch_one(pool).await?.try_get::<i64, _>("n")?)
    };
    let all: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_log")
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    let window = count(
        "SELECT COUNT(*) AS n FROM audit_log WHERE at_ms >= $1",
        None,
    )
    .await?;
    let q = "SELECT COUNT(*) AS n FROM audit_log WHERE at_ms >= $1 AND user_id = $2";
    let busiest = count(q, Some(user_id(1))).await?;
    let tenth = count(q, Some(user_id(HEAVY_USERS))).await?;
    let median = count(q, Some(user_id(users.div_ceil(2)))).await?;
    let last = count(q, Some(user_id(users))).await?;
    println!(
        "rows: {all} in all, {window} in the window; one user's rows in the window: busiest {busiest}, 10th {tenth}, median {median}, least active {last}"
    );
    Ok(all)
}

fn user_id(rank: u32) -> i64 {
    USER_BASE + i64::from(rank) * USER_STEP
}

/// Prints the PostgreSQL server's version and the settings that matter here.
async fn server_settings(pool: &AnyPool) -> anyhow::Result<()> {
    let mut parts = Vec::new();
    for name in [
        "server_version",
        "shared_buffers",
        "work_mem",
        "effective_cache_size",
        "random_page_cost",
        "jit",
    ] {
        let v: String = sqlx::query(&format!("SELECT current_setting('{name}') AS v"))
            .fetch_one(pool)
            .await?
            .try_get("v")?;
        parts.push(format!("{name}={v}"));
    }
    println!("postgres: {}", parts.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// Which users the inquiries are about.
#[derive(Clone, Copy)]
enum Choice {
    /// Drawn uniformly from all users.
    Uniform,
    /// Drawn from the 10 busiest.
    Heavy,
}

impl Choice {
    fn label(self) -> &'static str {
        match self {
            Choice::Uniform => "random user",
            Choice::Heavy => "one of the 10 busiest users",
        }
    }

    fn draw(self, rng: &mut StdRng, users: u32) -> i64 {
        let top = match self {
            Choice::Uniform => users,
            Choice::Heavy => HEAVY_USERS.min(users),
        };
        user_id(rng.random_range(1..=top))
    }
}

/// One run's samples.
#[derive(Default)]
struct Run {
    /// The whole inquiry.
    total: Latencies,
    /// The COUNT statement (SQL runs only).
    count: Latencies,
    /// The page statement (SQL runs only).
    page: Latencies,
    /// Sum of the matched row counts.
    matched: u64,
    /// Rows returned.
    returned: u64,
}

impl Run {
    fn merge(&mut self, o: &Run) {
        self.total.merge(&o.total);
        self.count.merge(&o.count);
        self.page.merge(&o.page);
        self.matched += o.matched;
        self.returned += o.returned;
    }
}

/// The user lists of `clients` workers: `warmup` + `iterations` inquiries in all.
fn plan(args: &Args, choice: Choice, iterations: usize, salt: u64) -> Vec<(usize, Vec<i64>)> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ salt);
    (0..args.clients)
        .map(|c| {
            let share = |n: usize| n / args.clients + usize::from(c < n % args.clients);
            let warm = share(args.warmup);
            let users = (0..warm + share(iterations))
                .map(|_| choice.draw(&mut rng, args.users))
                .collect();
            (warm, users)
        })
        .collect()
}

/// One inquiry's two statements, built and run exactly as `audit.rs` does.
async fn inquiry(
    pool: &AnyPool,
    user: i64,
    from: i64,
    page_size: i64,
) -> anyhow::Result<(Duration, Duration, i64, usize)> {
    let mut w = Where::new();
    w.and("user_id = ?", [Arg::I64(user)]);
    w.and("at_ms >= ?", [Arg::I64(from)]);
    let started = Instant::now();
    let total: i64 = w
        .bind(sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM audit_log{}",
            w.sql()
        )))
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    let counted = started.elapsed();
    let n = w.next_placeholder();
    let sql = format!(
        "SELECT * FROM audit_log{} ORDER BY at_ms {o}, id {o} LIMIT ${n} OFFSET ${}",
        w.sql(),
        n + 1,
        o = "DESC"
    );
    let started = Instant::now();
    let rows = w
        .bind(sqlx::query(&sql))
        .bind(page_size)
        .bind(0i64)
        .fetch_all(pool)
        .await?;
    Ok((counted, started.elapsed(), total, rows.len()))
}

async fn measure_sql(
    pool: &AnyPool,
    args: &Args,
    choice: Choice,
    from: i64,
) -> anyhow::Result<Run> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    for (warm, users) in plan(args, choice, args.iterations, 1) {
        let (pool, page_size) = (pool.clone(), args.page_size);
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            for (k, user) in users.into_iter().enumerate() {
                let (count, page, total, rows) = inquiry(&pool, user, from, page_size).await?;
                if k >= warm {
                    run.count.record(count);
                    run.page.record(page);
                    run.total.record(count + page);
                    run.matched += total as u64;
                    run.returned += rows as u64;
                }
            }
            anyhow::Ok(run)
        }));
    }
    let mut run = Run::default();
    for t in tasks {
        run.merge(&t.await??);
    }
    run.total.finish(started.elapsed());
    Ok(run)
}

/// The `backoffice` binary, serving; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &Args, db_url: &str, dir: &std::path::Path) -> anyhow::Result<Server> {
        let bin = match &args.backoffice {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory of the executable")?
                .join("backoffice"),
        };
        if !bin.exists() {
            bail!(
                "{} is missing: cargo build --release -p openteller-backoffice --no-default-features (or --backoffice PATH)",
                bin.display()
            );
        }
        let config = dir.join("backoffice.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n\n[database]\nurl = {}\n\n[objects]\ndir = {}\n",
                toml_string(db_url),
                toml_string(&dir.join("objects").to_string_lossy())
            ),
        )?;
        let log = dir.join("backoffice.log");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("OPENTELLER_INIT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", &args.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut file = std::fs::File::create(&log)?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Copies the server's stderr to its log file; reports the listening address once.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => server.base = format!("http://{addr}"),
            Err(_) => bail!(
                "backoffice did not start: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            ),
        }
        Ok(server)
    }
}

fn toml_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Checks the envelope `{code: "OK", data}` and returns `data`.
fn data_of(body: &[u8]) -> anyhow::Result<Value> {
    let mut v: Value = serde_json::from_slice(body).context("answer is not JSON")?;
    if v["code"] != "OK" {
        bail!("answer {v}");
    }
    Ok(v["data"].take())
}

async fn login(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{base}/api/v2/auth/login"))
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await?;
    let body = resp.bytes().await?;
    data_of(&body)?["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no token in the login answer"))
}

async fn measure_http(
    server: &Server,
    token: &str,
    args: &Args,
    choice: Choice,
    from: i64,
) -> anyhow::Result<Run> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let url = format!("{}/api/v2/audit/logs", server.base);
    let from = rfc3339(from);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for (warm, users) in plan(args, choice, args.http_iterations, 2) {
        let (http, url, from, token) = (http.clone(), url.clone(), from.clone(), token.to_owned());
        let page_size = args.page_size.to_string();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            for (k, user) in users.into_iter().enumerate() {
                let t = Instant::now();
                let resp = http
                    .get(&url)
                    .bearer_auth(&token)
                    .query(&[
                        ("userId", user.to_string().as_str()),
                        ("from", from.as_str()),
                        ("pageSize", page_size.as_str()),
                    ])
                    .send()
                    .await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                let elapsed = t.elapsed();
                if !status.is_success() {
                    bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
                }
                let data = data_of(&body)?;
                if k >= warm {
                    run.total.record(elapsed);
                    run.matched += data["totalCount"].as_u64().unwrap_or(0);
                    run.returned += data["rows"].as_array().map_or(0, |r| r.len() as u64);
                }
            }
            anyhow::Ok(run)
        }));
    }
    let mut run = Run::default();
    for t in tasks {
        run.merge(&t.await??);
    }
    run.total.finish(started.elapsed());
    Ok(run)
}

/// The 1, 5 and 15 minute load averages (Linux), to show how busy the shared machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn row(what: &str, choice: Choice, l: &Latencies, run: &Run) -> String {
    let n = l.count();
    format!(
        "| {what}, {} | {n} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} |",
        choice.label(),
        n as f64 / run.total.elapsed().as_secs_f64().max(1e-9),
        l.quantile_ms(0.50),
        l.quantile_ms(0.95),
        l.quantile_ms(0.99),
        l.max_ms(),
        run.matched as f64 / n.max(1) as f64,
        run.returned as f64 / n.max(1) as f64,
    )
}

const HEADER: &str = "| inquiry | count | per s | p50 ms | p95 ms | p99 ms | max ms | mean rows matched | mean rows returned |\n|---|---|---|---|---|---|---|---|---|";

async fn explain(pool: &AnyPool, args: &Args, from: i64) -> anyhow::Result<()> {
    for rank in [1, args.users.div_ceil(2)] {
        let user = user_id(rank);
        for sql in [
            format!(
                "SELECT COUNT(*) AS n FROM audit_log WHERE user_id = {user} AND at_ms >= {from}"
            ),
            format!(
                "SELECT * FROM audit_log WHERE user_id = {user} AND at_ms >= {from} \
                 ORDER BY at_ms DESC, id DESC LIMIT {} OFFSET 0",
                args.page_size
            ),
        ] {
            println!("\nEXPLAIN (ANALYZE, BUFFERS) {sql}");
            let rows = sqlx::raw_sql(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"))
                .fetch_all(pool)
                .await?;
            for r in rows {
                println!("  {}", r.try_get::<String, _>(0)?);
            }
        }
    }
    println!();
    Ok(())
}

async fn run(args: &Args, bench: &BenchDb) -> anyhow::Result<()> {
    println!("database {} ({})", bench.name, bench.url);
    let db = Db::open(&bench.url, 16)
        .await
        .with_context(|| format!("opening {}", bench.url))?;
    let pool = db.pool();
    server_settings(pool).await?;
    if args.reuse.is_none() {
        let end = now_ms();
        let parts = create_partitions(pool, end, args.months).await?;
        println!(
            "{parts} monthly partitions; loading {} rows ({} users, {} months, {} rows per statement, {} at a time)",
            args.rows, args.users, args.months, args.chunk_rows, args.load_jobs
        );
        let started = Instant::now();
        load(pool, args, end).await?;
        let loaded = started.elapsed();
        let started = Instant::now();
        let what = if args.no_vacuum {
            "ANALYZE"
        } else {
            "VACUUM (ANALYZE)"
        };
        sqlx::raw_sql(&format!("{what} audit_log"))
            .execute(pool)
            .await?;
        let analysed = started.elapsed();
        println!(
            "load time: {:.1} s ({:.0} rows/s), then {what} {:.1} s",
            loaded.as_secs_f64(),
            args.rows as f64 / loaded.as_secs_f64().max(1e-9),
            analysed.as_secs_f64()
        );
    }
    let from = now_ms() - args.days * DAY_MS;
    let rows = describe(pool, from, args.users).await?;
    if args.explain {
        explain(pool, args, from).await?;
    }
    let choices = [Choice::Uniform, Choice::Heavy];
    let mut lines = Vec::new();
    if !args.skip_sql {
        for choice in choices {
            println!(
                "SQL, {}: {} inquiries from {} clients… (load average {})",
                choice.label(),
                args.iterations,
                args.clients,
                loadavg()
            );
            let run = measure_sql(pool, args, choice, from).await?;
            lines.push(row("SQL count + page", choice, &run.total, &run));
            lines.push(row("SQL COUNT(*) alone", choice, &run.count, &run));
            lines.push(row("SQL page alone", choice, &run.page, &run));
        }
    }
    if !args.skip_http {
        let dir = tempfile::Builder::new().prefix("audit-bench-").tempdir()?;
        let (dir_path, _dir) = if args.keep {
            (dir.keep(), None)
        } else {
            (dir.path().to_owned(), Some(dir))
        };
        let server = Server::start(args, &bench.url, &dir_path)?;
        println!(
            "backoffice at {} (log {})",
            server.base,
            server.log.display()
        );
        let token = login(&reqwest::Client::new(), &server.base).await?;
        for choice in choices {
            println!(
                "HTTP, {}: {} requests from {} clients… (load average {})",
                choice.label(),
                args.http_iterations,
                args.clients,
                loadavg()
            );
            let run = measure_http(&server, &token, args, choice, from).await?;
            lines.push(row("HTTP GET /api/v2/audit/logs", choice, &run.total, &run));
        }
    }
    println!(
        "\n{rows} rows, last {} days, pageSize {}, {} clients, {} warm-up inquiries per run \
         (load average at the end {}):\n{HEADER}",
        args.days,
        args.page_size,
        args.clients,
        args.warmup,
        loadavg()
    );
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
