//! `kpsctl`: the platform's side of the connector contract, for people and scripts.
//!
//! It talks to any connector over the gRPC contract (streams, apply, delete, config, events,
//! conformance) and to NATS (tail, publish). Every verb is a function of this library, so other
//! tools (the demo, tests) drive connectors the same way.

pub mod cli;
pub mod commands;
pub mod connection;
pub mod document;
pub mod output;

pub use cli::Cli;
pub use connection::Connection;
pub use document::StreamDocument;

/// What went wrong, for people: which endpoint, which field, which code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The connector could not be reached.
    #[error("cannot reach the connector at {endpoint}: {reason}")]
    Unreachable {
        /// The gRPC endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The connector answered with an error code.
    #[error("the connector refused {call}: {code:?}: {message}")]
    Refused {
        /// The method.
        call: &'static str,
        /// The gRPC code (the contract's ResponseCode shifted by one).
        code: tonic::Code,
        /// Its message (it names the field or stream).
        message: String,
    },
    /// NATS could not be reached.
    #[error("cannot reach NATS at {url}: {reason}")]
    Nats {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A stream document or argument is wrong.
    #[error("{0}")]
    Input(String),
    /// Reading or writing a file or a stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A check did not hold (conformance).
    #[error("{0}")]
    Failed(String),
}

/// The result of a verb.
pub type CliResult<T> = Result<T, CliError>;
