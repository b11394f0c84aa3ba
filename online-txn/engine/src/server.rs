//! Wires the engine together from a [`Config`] and runs it until shutdown.

use std::sync::Arc;
use std::time::Duration;

use openteller_codec::Spec;
use openteller_codec::framing::Framer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::host::HostLink;
use crate::journal::Journal;
use crate::reversal::ReversalWorker;
use crate::security::{MASTER_KEY_VAR, SoftHsm, parse_master_key};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration (exit 78).
    #[error("{0}")]
    Config(String),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The key store could not be opened.
    #[error(transparent)]
    Keys(#[from] crate::security::SecurityError),
    /// The listen address is taken.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Opens the key store named by the configuration.
pub fn open_keys(config: &Config) -> Result<SoftHsm, StartError> {
    let master = match &config.keys.master_key_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| StartError::Config(format!("master key file {}: {e}", path.display())))?,
        None => std::env::var(MASTER_KEY_VAR).map_err(|_| {
            StartError::Config(format!("set {MASTER_KEY_VAR} or keys.master_key_file"))
        })?,
    };
    Ok(SoftHsm::open(
        &config.keys.file,
        parse_master_key(&master)?,
    )?)
}

/// A started engine: where it listens.
pub struct Running {
    /// The terminal front's address.
    pub terminal_addr: std::net::SocketAddr,
    /// The admin API's address, when `[admin]` is configured.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// `(name, address)` of every `[[channels]]` front.
    pub channel_addrs: Vec<(String, std::net::SocketAddr)>,
}

/// Starts everything; returns once listening. The tasks stop when `shutdown` is canceled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    if let Some(admin) = &config.admin {
        admin.validate().map_err(StartError::Config)?;
    }
    let spec = |name: &str| {
        Spec::by_name_or_path(name)
            .map(Arc::new)
            .map_err(|e| StartError::Config(e.to_string()))
    };
    let terminal_spec = spec(&config.terminals.profile)?;
    let host_spec = spec(&config.host.profile)?;
    if let Some(dir) = config
        .journal
        .url
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p.split('?').next().unwrap_or(p)).parent())
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StartError::Config(format!("journal directory {}: {e}", dir.display())))?;
    }
    let journal = Journal::open(&config.journal.url).await?;
    let hsm: Arc<dyn crate::security::SecurityModule> = Arc::new(open_keys(&config)?);
    let reversal_ttl = Duration::from_secs(config.reversal.ttl_s);
    // Channel transactions on back ends other than `host` are reversed by their own worker:
    // take their unanswered rows before the recovery below queues them to `host`.
    crate::channels::before_recovery(&config, &journal)
        .await
        .map_err(StartError::Config)?;
    let (declined, in_doubt) = journal.recover(reversal_ttl).await?;
    if declined + in_doubt > 0 {
        tracing::warn!(
            declined,
            in_doubt,
            "recovered unfinished transactions from the journal"
        );
    }
    let listener = TcpListener::bind(config.terminals.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.terminals.listen.to_string(),
            source,
        })?;
    let terminal_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.terminals.listen.to_string(),
        source,
    })?;
    let host = HostLink::start(
        config.host.address.clone(),
        host_spec,
        config.host_framing(),
        config.host.connections,
        Duration::from_secs(config.host.echo_interval_s),
        shutdown.clone(),
    );
    let timeout = Duration::from_millis(config.host.timeout_ms);
    let wake = Arc::new(tokio::sync::Notify::new());
    let backend_names: Vec<String> = config.backends.iter().map(|b| b.name.clone()).collect();
    let repair = crate::repair::Repair::with_backends(
        journal.clone(),
        reversal_ttl,
        Some(Arc::clone(&wake)),
        &backend_names,
    );
    let admin_addr = match &config.admin {
        Some(admin) => Some(
            crate::admin::start(admin, Arc::clone(&repair), shutdown.clone())
                .await
                .map_err(|source| StartError::Bind {
                    addr: admin.listen.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    tokio::spawn(repair.run_scheduler(shutdown.clone()));
    let engine = Arc::new(Engine {
        terminal_spec: Arc::clone(&terminal_spec),
        journal: journal.clone(),
        hsm: Arc::clone(&hsm),
        host: Arc::clone(&host),
        host_timeout: timeout,
        zpk: config.host.zpk.clone(),
        zak: config.host.zak.clone(),
        reversal_ttl,
        reversals: Arc::clone(&wake),
    });
    let worker = ReversalWorker {
        journal,
        host,
        hsm,
        zak: config.host.zak.clone(),
        policy: config.reversal.clone(),
        timeout,
        wake,
    };
    tokio::spawn(worker.run(shutdown.clone()));
    let channels = crate::channels::start_all(&config, Arc::clone(&engine), &shutdown).await?;
    let framer = Framer::new(config.terminal_framing(), terminal_spec.max_message_len());
    tokio::spawn(crate::front::serve(
        listener,
        engine,
        framer,
        config.terminals.max_connections,
        config.terminals.max_in_flight,
        shutdown,
    ));
    tracing::info!(%terminal_addr, host = %config.host.address, "online-txn started");
    Ok(Running {
        terminal_addr,
        admin_addr,
        channel_addrs: channels.channels,
    })
}
