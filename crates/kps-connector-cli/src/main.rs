//! `kpsctl`: drive a kps connector over its gRPC contract and its NATS channels.

use std::process::ExitCode;

use clap::Parser;
use kps_connector_cli::{Cli, commands};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kpsctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kpsctl: {e}");
            ExitCode::FAILURE
        }
    }
}
