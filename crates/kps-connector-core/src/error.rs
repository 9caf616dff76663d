//! The one error type connectors return, classified so the runtime knows what to do with it.

/// An error from a connector's source, sink or discovery, classified by what the runtime should do.
///
/// Messages are lowercase without a trailing period and never contain secrets or record payloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The outside system is unreachable or the connection broke: back off and reopen.
    #[error("{0}")]
    Retryable(String),
    /// A stream parameter is wrong: refuse the stream (INVALID_ARGUMENT) or fail it.
    #[error("invalid parameter `{field}`: {message}")]
    InvalidParameter {
        /// The parameter's name as it appears in the stream metadata.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Something that will not get better by retrying: the stream is marked FAILED.
    #[error("{0}")]
    Fatal(String),
}

impl ConnectorError {
    /// A retryable error, e.g. `ConnectorError::retryable(format!("connect to {url}: {e}"))`.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    /// A fatal error: retrying will not help.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(message.into())
    }

    /// A stream parameter that is wrong, naming the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParameter {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether the runtime should back off and reopen the source or sink.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// The result type of connector operations.
pub type ConnectorResult<T> = Result<T, ConnectorError>;
