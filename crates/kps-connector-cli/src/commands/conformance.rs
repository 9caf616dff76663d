//! `conformance`: the core's contract suite over gRPC against a running connector.

use std::process::ExitCode;

use kps_connector_core::Direction;
use kps_connector_core::testkit::contract::ContractSuite;

use super::print_json;
use crate::cli::ConformanceArgs;
use crate::connection::Connection;
use crate::document::{declarations, read_documents};
use crate::{CliError, CliResult};

/// `kpsctl conformance -f streams...`: prints the report; exit 1 unless every check holds.
pub async fn conformance(
    connection: &mut Connection,
    args: &ConformanceArgs,
    json: bool,
) -> CliResult<ExitCode> {
    let streams = declarations(&read_documents(&args.files)?)?;
    let mut suite = ContractSuite::new(connection.endpoint(), connection.connector_id(), streams);
    for refusal in &args.refuse {
        let (field, metadata) = refusal
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("--refuse `{refusal}` is not FIELD=JSON")))?;
        let metadata: serde_json::Value = serde_json::from_str(metadata)
            .map_err(|e| CliError::Input(format!("--refuse `{refusal}`: not JSON: {e}")))?;
        suite = suite.refuses(metadata, field);
    }
    match args.unsupported.as_deref() {
        Some("ingress") => suite = suite.unsupported(Direction::Ingress),
        Some("egress") => suite = suite.unsupported(Direction::Egress),
        _ => {}
    }
    let report = suite.run().await;
    if json {
        let checks: Vec<_> = report
            .checks
            .iter()
            .map(|c| serde_json::json!({"rule": c.rule, "passed": c.passed, "detail": c.detail}))
            .collect();
        print_json(&serde_json::json!({"passed": report.passed(), "checks": checks}));
    } else {
        print!("{}", report.render());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
