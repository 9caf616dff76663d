//! The common runtime options of every connector binary: flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which transport carries the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// Core NATS: what the platform speaks; at-least-once up to the NATS server.
    Nats,
    /// JetStream: durable, at-least-once end to end across connector crashes.
    Jetstream,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The options every connector binary takes (DESIGN.md "Common runtime options").
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "A kps data connector: gRPC contract on --listen, records over NATS"
)]
pub struct RuntimeOptions {
    /// This connector instance's id; every request must carry it.
    #[arg(
        long,
        env = "CONNECTOR_INSTANCE_ID",
        required = false,
        required_unless_present_any = ["print_class", "print_manifests"]
    )]
    pub connector_id: String,
    /// The gRPC listen address.
    #[arg(long, env = "CONNECTOR_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// The NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_BROKER", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The NATS client connection name [default: the connector id].
    #[arg(long, env = "NATS_NAME")]
    pub nats_name: Option<String>,
    /// The metrics, /healthz and /readyz listen address.
    #[arg(long, env = "CONNECTOR_METRICS_LISTEN", default_value = "0.0.0.0:9102")]
    pub metrics_listen: SocketAddr,
    /// The transport: core NATS or JetStream.
    #[arg(long, env = "CONNECTOR_TRANSPORT", value_enum, default_value = "nats")]
    pub transport: TransportKind,
    /// Where sources that must remember their position keep it (core NATS mode).
    #[arg(long, env = "CONNECTOR_STATE_DIR", default_value = "state")]
    pub state_dir: PathBuf,
    /// The log format; levels via RUST_LOG and the dynamic `log_level` config.
    #[arg(long, env = "CONNECTOR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Most records per TransportMessage; 1 publishes one record per message, as the reference.
    #[arg(long, env = "CONNECTOR_MAX_BATCH_RECORDS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_records: u32,
    /// Most encoded bytes per TransportMessage (capped at the NATS server's max payload).
    #[arg(long, env = "CONNECTOR_MAX_BATCH_BYTES", default_value_t = 900 * 1024)]
    pub max_batch_bytes: usize,
    /// How long a stopping stream may drain in-flight records, in seconds.
    #[arg(long, env = "CONNECTOR_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// Async runtime worker threads. One (the default) runs every task on the main thread (a
    /// current-thread runtime), which spends the least CPU per record: the tasks of a record
    /// never wake another thread. Raise it when one process must move more than one core can.
    #[arg(long, env = "CONNECTOR_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "CONNECTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CONNECTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require gRPC clients to present a certificate signed by this PEM CA.
    #[arg(long, env = "CONNECTOR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Connect to NATS over TLS, trusting this PEM CA instead of the system's roots.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Connect to NATS over TLS with this PEM client certificate (needs --nats-tls-key).
    #[arg(long, env = "NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The PEM private key of --nats-tls-cert.
    #[arg(long, env = "NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// The NATS user name (needs --nats-password-file).
    #[arg(long, env = "NATS_USER", requires = "nats_password_file")]
    pub nats_user: Option<String>,
    /// A file holding the NATS password (trailing newline ignored), read at startup.
    #[arg(long, env = "NATS_PASSWORD_FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// Packaging: print a document and exit instead of running (hidden flags).
    #[command(flatten)]
    pub print: PrintOptions,
}

/// The hidden packaging flags: print a document generated from the connector and exit
/// (`cargo xtask deploy` uses them; see [`crate::class`]).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PrintOptions {
    /// Print the connector class JSON and exit.
    #[arg(long, hide = true)]
    pub print_class: bool,
    /// Print plain Kubernetes manifests (YAML) and exit.
    #[arg(long, hide = true, conflicts_with = "print_class")]
    pub print_manifests: bool,
    /// The registry of the image named in the printed documents.
    #[arg(long, hide = true, default_value = crate::class::DEFAULT_REGISTRY)]
    pub image_registry: String,
}

impl Default for PrintOptions {
    fn default() -> Self {
        Self {
            print_class: false,
            print_manifests: false,
            image_registry: crate::class::DEFAULT_REGISTRY.to_owned(),
        }
    }
}

impl PrintOptions {
    /// Whether a document is to be printed instead of running.
    pub fn requested(&self) -> bool {
        self.print_class || self.print_manifests
    }
}

impl RuntimeOptions {
    /// Options for tests and embedding: ephemeral loopback ports, NATS on `nats_url`, state in
    /// `state_dir`.
    pub fn for_tests(connector_id: &str, nats_url: &str, state_dir: PathBuf) -> Self {
        Self {
            connector_id: connector_id.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nats_url: nats_url.to_owned(),
            nats_name: None,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: TransportKind::Nats,
            state_dir,
            log_format: LogFormat::Text,
            max_batch_records: 256,
            max_batch_bytes: 900 * 1024,
            drain_timeout_secs: 10,
            worker_threads: 1,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_user: None,
            nats_password_file: None,
            print: PrintOptions::default(),
        }
    }

    /// The drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    /// Parses `args`, the connector id's environment variable ignored (whatever the test
    /// environment holds).
    fn matches(args: &[&str]) -> Result<clap::ArgMatches, clap::Error> {
        RuntimeOptions::command()
            .mut_arg("connector_id", |arg| arg.env(None::<&str>))
            .try_get_matches_from(std::iter::once("kps-connector-test").chain(args.iter().copied()))
    }

    #[test]
    fn the_connector_id_is_required_unless_a_document_is_printed() {
        let err = matches(&[]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);

        let print = PrintOptions::from_arg_matches(&matches(&["--print-class"]).unwrap()).unwrap();
        assert!(print.requested() && print.print_class);
        assert_eq!(print.image_registry, crate::class::DEFAULT_REGISTRY);
        let print = PrintOptions::from_arg_matches(
            &matches(&["--print-manifests", "--image-registry", "r.example"]).unwrap(),
        )
        .unwrap();
        assert!(print.print_manifests && !print.print_class);
        assert_eq!(print.image_registry, "r.example");

        let options =
            RuntimeOptions::from_arg_matches(&matches(&["--connector-id", "c1"]).unwrap()).unwrap();
        assert_eq!(options.connector_id, "c1");
        assert!(!options.print.requested());
    }

    #[test]
    fn tls_options_come_in_pairs_named_by_their_flags() {
        for (args, missing) in [
            (&["--tls-cert", "c.pem"][..], "--tls-key"),
            (&["--tls-key", "k.pem"][..], "--tls-cert"),
            (&["--tls-client-ca", "ca.pem"][..], "--tls-cert"),
            (&["--nats-tls-cert", "c.pem"][..], "--nats-tls-key"),
            (&["--nats-user", "u"][..], "--nats-password-file"),
        ] {
            let args: Vec<&str> = ["--connector-id", "c1"]
                .iter()
                .chain(args)
                .copied()
                .collect();
            let err = matches(&args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{args:?}"
            );
            assert!(err.to_string().contains(missing), "{args:?}: {err}");
        }
        let options = RuntimeOptions::from_arg_matches(
            &matches(&[
                "--connector-id",
                "c1",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--tls-client-ca",
                "ca.pem",
                "--nats-tls-ca",
                "nca.pem",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(options.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(options.tls_client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(options.nats_tls_ca, Some(PathBuf::from("nca.pem")));
    }

    #[test]
    fn the_packaging_flags_are_hidden() {
        let help = RuntimeOptions::command().render_help().to_string();
        assert!(!help.contains("print-class"), "{help}");
        assert!(help.contains("--connector-id"), "{help}");
    }
}
