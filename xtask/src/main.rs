//! `cargo xtask`: the developer workflows of the workspace, as a Rust program (no shell scripts, no
//! make). Run `cargo xtask help` for the verbs.
//!
//! Architecture invariant: xtask depends on `anyhow` only, so it builds in seconds; arguments are
//! parsed by hand in [`cli`].

mod apt;
mod bench;
mod cli;
mod connectors;
mod demo;
mod deny;
mod deploy;
mod fuzz;
mod host;
mod images;
mod json;
mod oci;
mod paths;
mod probe;
mod procfs;
mod scaffold;
mod schema;
mod services;
mod state;
mod tally;
mod tar;
mod test;

use std::process::ExitCode;

use cli::{Command, ServicesAction};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `args` and runs the verb.
fn run(args: &[String]) -> anyhow::Result<()> {
    let command = cli::parse(args)?;
    if matches!(command, Command::Help) {
        print!("{}", cli::HELP);
        return Ok(());
    }
    let ctx = host::Ctx::detect()?;
    match command {
        Command::Help => Ok(()),
        Command::Services { action, names } => {
            let selected = services::select(&names)?;
            match action {
                ServicesAction::Up => services::up(&ctx, &selected),
                ServicesAction::Down => services::down(&ctx, &selected),
                ServicesAction::Status => services::status(&ctx, &selected),
            }
        }
        Command::Test => test::run(&ctx),
        Command::Bench(options) => bench::run(&ctx, &options),
        Command::Demo { duration } => demo::run(&ctx, duration),
        Command::Deploy { check } => deploy::run(&ctx.paths, check),
        Command::BuildImages(options) => images::run(&ctx, &options),
        Command::Deny => deny::run(&ctx),
        Command::Fuzz(options) => fuzz::run(&ctx, &options),
        Command::NewConnector { name, directions } => {
            scaffold::run(&ctx.paths.root, &name, directions)
        }
    }
}
