//! One module per verb; [`run`] dispatches.

mod config;
mod conformance;
mod events;
mod nats;
mod streams;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::CliResult;
use crate::cli::{Cli, Command, ConfigCommand};
use crate::connection::Connection;

pub use conformance::conformance;
pub use nats::{publish, tail};

/// Runs the verb of `cli`.
pub async fn run(cli: Cli) -> CliResult<ExitCode> {
    let global = cli.global;
    let tls = global.tls();
    let connect =
        || Connection::connect_with(&global.connector, global.connector_id.as_deref(), &tls);
    match cli.command {
        Command::Streams => streams::list(&mut connect().await?, global.json).await?,
        Command::Apply { files } => {
            streams::apply(&mut connect().await?, &files, global.json).await?
        }
        Command::Delete { stream } => {
            streams::delete(&mut connect().await?, &stream, global.json).await?
        }
        Command::Config(ConfigCommand::Get) => {
            config::get(&mut connect().await?, global.json).await?
        }
        Command::Config(ConfigCommand::Set { pairs }) => {
            config::set(&mut connect().await?, &pairs, global.json).await?
        }
        Command::Events { watch, interval_ms } => {
            events::show(&mut connect().await?, watch, interval_ms, global.json).await?
        }
        Command::Tail {
            subject,
            format,
            count,
            seconds,
        } => tail(&global.nats_url, &subject, format, count, seconds).await?,
        Command::Publish(args) => publish(&global.nats_url, &args, global.json).await?,
        Command::Conformance(args) => {
            if tls.enabled() {
                return Err(crate::CliError::Input(
                    "conformance runs the contract suite over plaintext gRPC only; drop --tls-ca"
                        .to_owned(),
                ));
            }
            return conformance(&mut connect().await?, &args, global.json).await;
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kpsctl", &mut std::io::stdout());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as pretty JSON.
fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("cannot print JSON: {e}"),
    }
}
