//! Configuration: built-in defaults, then a TOML file, then `OPENTELLER_`-prefixed environment
//! variables (`__` between levels). Unknown keys and invalid values are refused before anything
//! starts; the binary exits 64 on them.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use openteller_backoffice_storage::{CacheConfig, ObjectsConfig};
use serde::Deserialize;

/// Top-level keys that environment variables may set; other `OPENTELLER_*` variables belong to
/// other programs (or to secrets such as `OPENTELLER_INIT_ADMIN_PASSWORD`) and are ignored.
const ENV_SECTIONS: [&str; 8] = [
    "node_id", "http", "database", "objects", "cache", "security", "audit", "files",
];

/// The whole configuration of a backoffice process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Snowflake node id, 0–1023; unique per process of one deployment.
    pub node_id: u16,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// The relational database.
    pub database: DatabaseConfig,
    /// Where objects (uploads, packages) live.
    pub objects: ObjectsConfig,
    /// Cache and bus: in-process, or Redis.
    pub cache: CacheConfig,
    /// Sessions, lockouts.
    pub security: SecurityConfig,
    /// Audit-log retention.
    pub audit: AuditConfig,
    /// Upload limits.
    pub files: FilesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            objects: ObjectsConfig::default(),
            cache: CacheConfig::default(),
            security: SecurityConfig::default(),
            audit: AuditConfig::default(),
            files: FilesConfig::default(),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of the API, console, health and metrics.
    pub listen: SocketAddr,
    /// Largest JSON request body in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 256 * 1024,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    pub url: String,
    /// Pool size (PostgreSQL; SQLite uses a small fixed pool).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://.state/backoffice/backoffice.db".to_owned(),
            max_connections: 16,
        }
    }
}

/// `[security]`: seed 001 §6.6.6.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// A session unused for this many minutes ends (fractions allowed, e.g. 0.1 in tests).
    pub session_idle_minutes: f64,
    /// Consecutive failed logins that lock the account.
    pub lockout_failures: u32,
    /// How long a lockout lasts.
    pub lockout_minutes: u32,
    /// Lockouts within 24 hours that freeze the account until an administrator unfreezes it.
    pub freeze_after_lockouts: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            session_idle_minutes: 30.0,
            lockout_failures: 5,
            lockout_minutes: 15,
            freeze_after_lockouts: 3,
        }
    }
}

/// `[audit]`: seed 003 retention of the partitioned audit table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Months after which a monthly partition is detached (kept as its own table).
    pub detach_after_months: u32,
    /// Months after which it is dropped (SQLite: rows deleted).
    pub drop_after_months: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            detach_after_months: 14,
            drop_after_months: 18,
        }
    }
}

/// `[files]`: seed 001 §6.8.2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest upload in bytes.
    pub max_upload_bytes: usize,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_upload_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults, then `file` (when given; it must exist), then the environment, and
    /// validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "{} is not a readable file",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("OPENTELLER_")
            .filter(|key| {
                let first = key.as_str().split("__").next().unwrap_or_default();
                let first = first.split('.').next().unwrap_or_default();
                ENV_SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
            })
            .split("__");
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_owned()));
        if self.node_id > crate::ids::MAX_NODE {
            return bad("node_id must be 0..=1023");
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return bad("database.url must be sqlite://PATH or postgres://...");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections must be at least 1");
        }
        let s = &self.security;
        if !(0.05..=1440.0).contains(&s.session_idle_minutes) {
            return bad("security.session_idle_minutes must be 0.05..=1440");
        }
        if s.lockout_failures == 0 || s.lockout_minutes == 0 || s.freeze_after_lockouts == 0 {
            return bad("security lockout settings must be at least 1");
        }
        if self.audit.detach_after_months == 0
            || self.audit.drop_after_months <= self.audit.detach_after_months
        {
            return bad("audit: 0 < detach_after_months < drop_after_months");
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes must be at least 1024");
        }
        if self.files.max_upload_bytes == 0 {
            return bad("files.max_upload_bytes must be at least 1");
        }
        Ok(())
    }
}
