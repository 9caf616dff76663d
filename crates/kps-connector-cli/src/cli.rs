//! The command line: global connection flags (with environment fallbacks) and the verbs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Drive a kps connector over its gRPC contract, and its NATS channels.
#[derive(Debug, Parser)]
#[command(name = "kpsctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Connection and output flags.
    #[command(flatten)]
    pub global: Global,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every verb takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The connector's gRPC address (`host:port` or `http://host:port`).
    #[arg(
        long,
        global = true,
        env = "KPS_CONNECTOR",
        default_value = "127.0.0.1:8000"
    )]
    pub connector: String,
    /// The connector instance id (every request carries it).
    #[arg(long, global = true, env = "CONNECTOR_INSTANCE_ID")]
    pub connector_id: Option<String>,
    /// The NATS server (tail, publish).
    #[arg(
        long,
        global = true,
        env = "NATS_BROKER",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Talk TLS to the connector, trusting this PEM CA (a bare `host:port` then means
    /// `https://host:port`).
    #[arg(long, global = true, env = "KPS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Present this PEM client certificate to a connector that requires one (mutual TLS);
    /// needs --tls-key and --tls-ca.
    #[arg(long, global = true, env = "KPS_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, global = true, env = "KPS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    /// The TLS files of the connection flags.
    pub fn tls(&self) -> crate::connection::TlsFiles {
        crate::connection::TlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the streams the connector knows (subscribed and discovered) with their health.
    Streams,
    /// Declare the whole stream set from stream documents (files or directories of *.json).
    Apply {
        /// Stream documents: files, or directories whose *.json files are read.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Remove one stream (the rest of the set is declared again, unchanged).
    Delete {
        /// The stream id.
        stream: String,
    },
    /// Read or change the dynamic config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the current events, newest first.
    Events {
        /// Keep watching, printing events as they change.
        #[arg(long)]
        watch: bool,
        /// How often to poll with --watch, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Print the records arriving on a NATS subject.
    Tail {
        /// The subject (wildcards allowed).
        subject: String,
        /// How to print each record.
        #[arg(long, value_enum, default_value = "text")]
        format: RecordFormat,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Publish records on a NATS subject as TransportMessages.
    Publish(PublishArgs),
    /// Run the contract suite against a running connector (any language); exit 0 only if every
    /// check holds.
    Conformance(ConformanceArgs),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `config` verbs.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config in force.
    Get,
    /// Merge KEY=VALUE pairs into the config (VALUE is JSON when it parses, else a string;
    /// `KEY=null` removes the key).
    Set {
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
}

/// How `tail` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordFormat {
    /// As UTF-8 text (invalid bytes replaced).
    Text,
    /// One JSON object per record: timestamp, size, and the record as text or base64.
    Json,
    /// Hexadecimal.
    Hex,
}

/// `publish` arguments.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The subject.
    pub subject: String,
    /// Records are the lines of this file (default: standard input, unless --count).
    #[arg(long, conflicts_with = "count")]
    pub file: Option<PathBuf>,
    /// Generate this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// The size of each generated record, in bytes.
    #[arg(long, default_value_t = 100, requires = "count")]
    pub size: usize,
    /// Records per TransportMessage.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
}

/// `conformance` arguments.
#[derive(Debug, Clone, Args)]
pub struct ConformanceArgs {
    /// Valid stream documents, one per direction the connector supports (files or directories).
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// Metadata the connector must refuse, as FIELD=JSON (the error must name FIELD);
    /// applied with the first stream's direction. Repeatable.
    #[arg(long = "refuse")]
    pub refuse: Vec<String>,
    /// A direction the connector does not support (it must be refused).
    #[arg(long, value_parser = ["ingress", "egress"])]
    pub unsupported: Option<String>,
}
