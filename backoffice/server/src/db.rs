//! The relational store: one `sqlx` Any pool over SQLite (embedded default) or PostgreSQL, its
//! migrations, and a small helper for filtered, paged queries. SQL uses `$n` placeholders, which
//! both databases accept through the Any driver; integers are BIGINT, flags 0/1, times Unix ms.

use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Row};

/// The platform schema is the same SQL on both databases; the audit table differs (partitions).
const PLATFORM: &str = include_str!("../migrations/shared/0001_platform.sql");
const SQLITE_MIGRATIONS: &[&str] = &[
    PLATFORM,
    include_str!("../migrations/sqlite/0002_audit.sql"),
];
const POSTGRES_MIGRATIONS: &[&str] = &[
    PLATFORM,
    include_str!("../migrations/postgres/0002_audit.sql"),
];

/// The database of one backoffice deployment.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    postgres: bool,
}

impl Db {
    /// Connects to `url` (`sqlite://PATH`, created with its directory if missing, or
    /// `postgres://…`) and applies the migrations not applied yet.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            if url.contains("mode=") {
                url.to_owned()
            } else {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
        } else {
            url.to_owned()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { max_connections })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=NORMAL",
                            "PRAGMA busy_timeout=5000",
                            "PRAGMA foreign_keys=ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let db = Db {
            pool,
            postgres: !sqlite,
        };
        db.migrate().await?;
        Ok(db)
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether this is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let scripts = if self.postgres {
            POSTGRES_MIGRATIONS
        } else {
            SQLITE_MIGRATIONS
        };
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS backoffice_schema_version (version BIGINT PRIMARY KEY)",
        )
        .execute(&self.pool)
        .await?;
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            // Two processes starting together must not both migrate.
            sqlx::query("SELECT pg_advisory_xact_lock(4242001)")
                .execute(&mut *tx)
                .await?;
        }
        let current: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM backoffice_schema_version")
                .fetch_one(&mut *tx)
                .await?
                .try_get("v")?;
        for (i, script) in scripts.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= current {
                continue;
            }
            sqlx::raw_sql(script).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO backoffice_schema_version (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// One bound value of a dynamically built query.
#[derive(Debug, Clone)]
pub enum Arg {
    /// An integer.
    I64(i64),
    /// A text.
    Text(String),
}

/// A `WHERE` clause built from optional filters, with its arguments in placeholder order.
#[derive(Debug, Default, Clone)]
pub struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    /// An empty clause (matches everything).
    pub fn new() -> Where {
        Where::default()
    }

    /// Adds `condition`, in which each `?` is replaced by the next placeholder bound to the
    /// matching element of `args`.
    pub fn and(&mut self, condition: &str, args: impl IntoIterator<Item = Arg>) -> &mut Where {
        let mut out = String::with_capacity(condition.len() + 4);
        let mut args = args.into_iter();
        for ch in condition.chars() {
            if ch == '?' {
                let Some(arg) = args.next() else { break };
                self.args.push(arg);
                out.push('$');
                out.push_str(&self.args.len().to_string());
            } else {
                out.push(ch);
            }
        }
        self.clauses.push(out);
        self
    }

    /// `WHERE a AND b …`, or nothing.
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The next placeholder number (for a `LIMIT $n OFFSET $n+1` after the clause).
    pub fn next_placeholder(&self) -> usize {
        self.args.len() + 1
    }

    /// Binds the arguments to `query`.
    pub fn bind<'q>(
        &self,
        mut query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        for arg in &self.args {
            query = match arg {
                Arg::I64(v) => query.bind(*v),
                Arg::Text(v) => query.bind(v.clone()),
            };
        }
        query
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_numbers_placeholders_in_order() {
        let mut w = Where::new();
        w.and("a = ?", [Arg::I64(1)]).and(
            "(b LIKE ? ESCAPE '\\' OR c = ?)",
            [Arg::Text("x%".into()), Arg::Text("y".into())],
        );
        assert_eq!(
            w.sql(),
            " WHERE a = $1 AND (b LIKE $2 ESCAPE '\\' OR c = $3)"
        );
        assert_eq!(w.next_placeholder(), 4);
        assert_eq!(Where::new().sql(), "");
        assert_eq!(like_escape("50%_a\\"), "50\\%\\_a\\\\");
    }
}
