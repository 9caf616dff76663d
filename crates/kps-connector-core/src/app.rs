//! Running a connector: wiring the transport, the supervisor, the gRPC and metrics servers, and
//! graceful shutdown. [`main`] is the whole body of a connector binary; [`start`] runs one
//! in-process (tests, embedding).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::class::{ConnectorClass, kubernetes_manifests};
use crate::config::DynamicConfig;
use crate::connector::Connector;
use crate::events::EventRegistry;
use crate::grpc::{ConnectorGrpc, GrpcServer, LogControl};
use crate::metrics::Metrics;
use crate::options::{LogFormat, PrintOptions, RuntimeOptions, TransportKind};
use crate::params::Secret;
use crate::runtime::erased::Erased;
use crate::runtime::{BatchSettings, StreamDeps, Supervisor};
use crate::state::{FileStateBackend, StateBackend};
use crate::tls::{ClientTls, ServerTls, TlsError};
use crate::transport::Transport;
use crate::transport::jetstream::{JetStreamTransport, LazyStateBackend};
use crate::transport::nats::{NatsOptions, NatsTransport};

/// Why a connector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The transport could not be set up (a malformed URL; an unreachable server is retried).
    #[error("{0}")]
    Transport(#[from] crate::transport::TransportError),
    /// A TLS option is incomplete, or names a file that is missing or malformed.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The NATS password file could not be read.
    #[error("--nats-password-file {path}: cannot read: {source}")]
    PasswordFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `--nats-user` without `--nats-password-file`, or the reverse.
    #[error("{given} needs {missing}")]
    Incomplete {
        /// The option given.
        given: &'static str,
        /// The option missing.
        missing: &'static str,
    },
}

/// A connector running in this process.
pub struct RunningConnector {
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: CancellationToken,
    supervisor: Arc<Supervisor>,
    nats: NatsTransport,
    servers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningConnector")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl RunningConnector {
    /// Where the gRPC contract is served.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Drains every stream (in-flight records confirmed and acknowledged), then stops the servers.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: draining streams");
        self.supervisor.shutdown().await;
        self.shutdown.cancel();
        for server in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        self.nats.close().await;
        tracing::info!("stopped");
    }
}

/// Starts `connector` with `options`: binds the servers, connects the transport (retrying in the
/// background if NATS is down) and returns once it serves.
pub async fn start<C: Connector>(
    connector: C,
    options: RuntimeOptions,
    log_control: Option<LogControl>,
) -> Result<RunningConnector, StartError> {
    let grpc_server = GrpcServer::new(
        ServerTls::from_files(
            options.tls_cert.as_deref(),
            options.tls_key.as_deref(),
            options.tls_client_ca.as_deref(),
        )?
        .as_ref(),
    )?;
    let nats_tls = ClientTls::from_files(
        options.nats_tls_ca.as_deref(),
        options.nats_tls_cert.as_deref(),
        options.nats_tls_key.as_deref(),
    )?;
    let credentials = nats_credentials(&options).await?;
    let events = EventRegistry::new();
    let metrics = Metrics::new();
    let nats = NatsTransport::connect(
        &NatsOptions {
            url: options.nats_url.clone(),
            name: options
                .nats_name
                .clone()
                .unwrap_or_else(|| options.connector_id.clone()),
            confirm_timeout: Duration::from_secs(5),
            tls: nats_tls,
            credentials,
        },
        events.clone(),
    )
    .await?;
    let (transport, state): (Arc<dyn Transport>, Arc<dyn StateBackend>) = match options.transport {
        TransportKind::Nats => (
            Arc::new(nats.clone()),
            Arc::new(FileStateBackend::new(options.state_dir.clone())),
        ),
        TransportKind::Jetstream => {
            let js = Arc::new(JetStreamTransport::new(
                nats.clone(),
                Duration::from_secs(5),
            ));
            let bucket = crate::transport::nats::sanitize_name(&options.connector_id);
            let state = Arc::new(LazyStateBackend::new(js.clone(), bucket));
            (js, state)
        }
    };
    let info = connector.info();
    let deps = Arc::new(StreamDeps {
        connector_id: options.connector_id.as_str().into(),
        connector: Arc::new(Erased(Arc::new(connector))),
        transport: transport.clone(),
        events,
        metrics: metrics.clone(),
        config: DynamicConfig::default(),
        state,
        batch: BatchSettings {
            max_records: options.max_batch_records as usize,
            max_bytes: options.max_batch_bytes,
            ..BatchSettings::default()
        },
        drain_timeout: options.drain_timeout(),
    });
    let supervisor = Arc::new(Supervisor::new(deps));

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let grpc_listener = bind("gRPC", options.listen).await?;
    let metrics_listener = bind("metrics", options.metrics_listen).await?;
    let grpc_addr = grpc_listener.local_addr().unwrap_or(options.listen);
    let metrics_addr = metrics_listener
        .local_addr()
        .unwrap_or(options.metrics_listen);

    let shutdown = CancellationToken::new();
    let service = ConnectorGrpc::new(supervisor.clone(), log_control);
    let grpc_server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = grpc_server.serve(grpc_listener, service, shutdown).await {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }
    });
    let http_server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = crate::http::serve(metrics_listener, metrics, transport, shutdown).await
            {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }
    });
    tracing::info!(
        connector = info.name,
        version = info.version,
        id = %options.connector_id,
        grpc = %grpc_addr,
        metrics = %metrics_addr,
        transport = ?options.transport,
        "connector started"
    );
    Ok(RunningConnector {
        grpc_addr,
        metrics_addr,
        shutdown,
        supervisor,
        nats,
        servers: vec![grpc_server, http_server],
    })
}

/// `--nats-user` and the password of `--nats-password-file`, read now.
async fn nats_credentials(
    options: &RuntimeOptions,
) -> Result<Option<(String, Secret)>, StartError> {
    match (&options.nats_user, &options.nats_password_file) {
        (None, None) => Ok(None),
        (Some(user), Some(path)) => {
            let text = tokio::fs::read_to_string(path).await.map_err(|source| {
                StartError::PasswordFile {
                    path: path.clone(),
                    source,
                }
            })?;
            let password = Secret::new(text.trim_end_matches(['\r', '\n']));
            Ok(Some((user.clone(), password)))
        }
        (Some(_), None) => Err(StartError::Incomplete {
            given: "--nats-user",
            missing: "--nats-password-file",
        }),
        (None, Some(_)) => Err(StartError::Incomplete {
            given: "--nats-password-file",
            missing: "--nats-user",
        }),
    }
}

/// The whole `main` of a connector binary: parses the common options (flags and environment),
/// sets up logging, runs until SIGTERM or SIGINT, then drains and exits.
///
/// ```no_run
/// # struct MyConnector;
/// # #[kps_connector_core::async_trait]
/// # impl kps_connector_core::Connector for MyConnector {
/// #   type Params = serde_json::Value;
/// #   fn info(&self) -> kps_connector_core::ConnectorInfo { unimplemented!() }
/// # }
/// fn main() -> std::process::ExitCode {
///     kps_connector_core::main(MyConnector)
/// }
/// ```
pub fn main<C: Connector>(connector: C) -> ExitCode {
    let info = connector.info();
    let command = RuntimeOptions::command()
        .name(format!("kps-connector-{}", info.name))
        .about(info.description)
        .version(info.version);
    let matches = command.get_matches();
    match PrintOptions::from_arg_matches(&matches) {
        Ok(print) if print.requested() => return print_document(connector, &print),
        Ok(_) => {}
        Err(e) => e.exit(),
    }
    let options = match RuntimeOptions::from_arg_matches(&matches) {
        Ok(options) => options,
        Err(e) => e.exit(),
    };
    let log_control = init_tracing(options.log_format);
    let runtime = match runtime_builder(options.worker_threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let running = match start(connector, options, Some(log_control)).await {
            Ok(running) => running,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        running.shutdown().await;
        ExitCode::SUCCESS
    });
    // A client library's blocking call that hangs (a close with its broker down) must not keep
    // the process from exiting once the streams drained.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

/// The async runtime of `--worker-threads`: with one, a current-thread runtime on the main
/// thread, where a task woken by an I/O event is queued locally; a multi-thread runtime with a
/// single worker routes every such wake-up through its injection queue and an eventfd write.
fn runtime_builder(worker_threads: u16) -> tokio::runtime::Builder {
    if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(worker_threads));
        builder
    }
}

/// `--print-class` / `--print-manifests`: prints the document on stdout.
fn print_document<C: Connector>(connector: C, print: &PrintOptions) -> ExitCode {
    let text = if print.print_manifests {
        Ok(kubernetes_manifests(
            &connector.info(),
            &print.image_registry,
        ))
    } else {
        ConnectorClass::of(connector, &print.image_registry).and_then(|class| class.to_json())
    };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Installs the global tracing subscriber (RUST_LOG, default `info`) and returns the control
/// that the `log_level` config uses to change the filter at runtime.
pub fn init_tracing(format: LogFormat) -> LogControl {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, reload};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("logging already set up: {e}");
    }
    Arc::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())?;
        tracing::info!(level, "log filter changed");
        Ok(())
    })
}
