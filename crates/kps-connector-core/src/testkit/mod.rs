//! The conformance kit (feature `testkit`): what every connector crate runs in its own tests, in
//! a few lines, against its real outside system.
//!
//! - [`TestConnector`]: a connector running in-process on loopback ports, with a gRPC client.
//! - [`NatsProbe`]: publishes records to and collects records from NATS subjects.
//! - [`contract`]: the contract suite (every rule of the gRPC contract), over gRPC, against any
//!   running connector in any language (`kpsctl conformance` runs it too).
//! - [`data`]: the data suite: N records in, the same N out, in order; stop and start without loss.
//! - [`FaultProxy`]: a loopback TCP proxy a test cuts and restores between a connector and its
//!   broker; it can terminate TLS with [`TestCertificates`] (a test CA, server and client
//!   certificates).
//! - [`ConnectorProcess`]: a built connector binary run as a child process, to kill, restart and
//!   measure; [`DeliveryReport`] counts what a fault lost, duplicated or delivered late.

mod certificates;
pub mod contract;
pub mod data;
mod delivery;
mod fault_proxy;
mod harness;
mod probe;
mod process;

pub use certificates::TestCertificates;
pub use delivery::{DeliveryReport, collect_until_complete};
pub use fault_proxy::FaultProxy;
pub use harness::{EventView, StreamDecl, TestConnector, grpc_client, grpc_tls_client, http_get};
pub use probe::{NatsProbe, RecordStream, server_round_trip};
pub use process::{
    ConnectorProcess, ContextSwitches, ProcessBuilder, ProcessMemory, proc_context_switches,
    proc_stat_cpu_seconds, proc_status_memory,
};

/// The NATS server tests use: `KPS_TEST_NATS_URL`, or the local one.
pub fn nats_url() -> String {
    std::env::var("KPS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A name unique to this test run and call (`prefix-<pid>-<random>`), for topics, queues,
/// tables and subjects, so tests run in parallel. Only `[a-z0-9_]` after the prefix.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}_{:08x}", std::process::id(), fastrand::u32(..))
}

/// Panics with a message naming the command that starts the test services.
pub fn service_unavailable(what: &str, detail: impl std::fmt::Display) -> ! {
    panic!(
        "{what} is not reachable ({detail}); start the test services with `cargo xtask services up`"
    )
}
