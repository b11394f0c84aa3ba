//! The application state every service shares: configuration, database, cache, bus, object
//! store and the id generator.

use std::collections::BTreeSet;
use std::sync::Arc;

use openteller_backoffice_storage::{Bus, Cache, ObjectStore};

use crate::config::Config;
use crate::db::Db;
use crate::ids::Snowflake;

/// The services one process can run (`--service NAME`).
pub const SERVICES: [&str; 4] = ["platform", "audit", "files", "console"];

/// Shared state.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The relational store.
    pub db: Db,
    /// Sessions, permission cache, counters.
    pub cache: Cache,
    /// Notifications between processes.
    pub bus: Bus,
    /// Uploads and packages.
    pub objects: ObjectStore,
    /// Ids.
    pub ids: Snowflake,
    /// The services this process runs.
    pub services: BTreeSet<String>,
}

/// What handlers get.
pub type AppState = Arc<App>;

impl App {
    /// Opens every store named in `config` (migrating the database) and bootstraps the
    /// built-in data.
    pub async fn build(config: Config, services: BTreeSet<String>) -> anyhow::Result<AppState> {
        let db = Db::open(&config.database.url, config.database.max_connections)
            .await
            .map_err(|e| anyhow::anyhow!("database {}: {e}", redact_url(&config.database.url)))?;
        let (cache, bus) = config
            .cache
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("cache: {e}"))?;
        let objects = ObjectStore::open(&config.objects)
            .await
            .map_err(|e| anyhow::anyhow!("object store: {e}"))?;
        let ids = Snowflake::new(config.node_id);
        let app = Arc::new(App {
            config,
            db,
            cache,
            bus,
            objects,
            ids,
            services,
        });
        crate::platform::bootstrap::run(&app).await?;
        Ok(app)
    }

    /// Whether this process runs `service`.
    pub fn runs(&self, service: &str) -> bool {
        self.services.contains(service)
    }
}

/// Hides a password in a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
