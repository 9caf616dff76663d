//! Command-line parsing, by hand (xtask keeps its dependencies to `anyhow`).

use anyhow::{Result, bail};

/// What `cargo xtask help` prints.
pub const HELP: &str = "\
cargo xtask <verb>: the developer workflows of kps-connectors

verbs:
  services up [NAME...]      make the services the tests need answer on loopback: leave running
                             ones alone, install missing ones (apt-get), start stopped ones
  services down [NAME...]    stop the services that `services up` started (never the machine's own)
  services status [NAME...]  a table: service, port, up/down, started by
  test                       cargo fmt --check, clippy -D warnings, services up, the workspace tests
                             (cargo nextest when installed, else cargo test), then the doc tests;
                             stops at the first failing step and names it
  help                       this text

services: nats (4222, with JetStream), mosquitto (1883), rabbitmq (5672, guest/guest),
          mariadb (3306, root with an empty password, database test), postgresql (5432)
";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`, `--help`, `-h` or nothing.
    Help,
    /// `services <action> [NAME...]`.
    Services {
        /// What to do.
        action: ServicesAction,
        /// The services named on the command line (empty: all of them).
        names: Vec<String>,
    },
    /// `test`.
    Test,
}

/// The actions of `cargo xtask services`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicesAction {
    /// Make them answer.
    Up,
    /// Stop what `up` started.
    Down,
    /// Print the table.
    Status,
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command> {
    let mut args = args.iter().map(String::as_str);
    match args.next() {
        None | Some("help" | "--help" | "-h") => Ok(Command::Help),
        Some("services") => {
            let action = match args.next() {
                Some("up") => ServicesAction::Up,
                Some("down") => ServicesAction::Down,
                Some("status") => ServicesAction::Status,
                Some(other) => {
                    bail!("unknown services action `{other}`: expected up, down or status")
                }
                None => bail!("`cargo xtask services` needs an action: up, down or status"),
            };
            let names = args.map(str::to_owned).collect::<Vec<_>>();
            if let Some(flag) = names.iter().find(|name| name.starts_with('-')) {
                bail!("unknown option `{flag}` for `services`: see `cargo xtask help`");
            }
            Ok(Command::Services { action, names })
        }
        Some("test") => match args.next() {
            None => Ok(Command::Test),
            Some(extra) => bail!("`cargo xtask test` takes no arguments (got `{extra}`)"),
        },
        Some(other) => bail!("unknown verb `{other}`: see `cargo xtask help`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    #[test]
    fn no_args_and_help_flags_print_help() {
        for line in ["", "help", "--help", "-h"] {
            assert_eq!(parse_str(line).unwrap(), Command::Help, "{line:?}");
        }
    }

    #[test]
    fn services_actions() {
        assert_eq!(
            parse_str("services up").unwrap(),
            Command::Services {
                action: ServicesAction::Up,
                names: vec![]
            }
        );
        assert_eq!(
            parse_str("services down mosquitto nats").unwrap(),
            Command::Services {
                action: ServicesAction::Down,
                names: vec!["mosquitto".into(), "nats".into()]
            }
        );
        assert_eq!(
            parse_str("services status").unwrap(),
            Command::Services {
                action: ServicesAction::Status,
                names: vec![]
            }
        );
    }

    #[test]
    fn services_errors_name_the_problem() {
        let err = parse_str("services").unwrap_err().to_string();
        assert!(err.contains("needs an action"), "{err}");
        let err = parse_str("services restart").unwrap_err().to_string();
        assert!(err.contains("`restart`"), "{err}");
        let err = parse_str("services up --all").unwrap_err().to_string();
        assert!(err.contains("`--all`"), "{err}");
    }

    #[test]
    fn test_verb_takes_no_arguments() {
        assert_eq!(parse_str("test").unwrap(), Command::Test);
        let err = parse_str("test --release").unwrap_err().to_string();
        assert!(err.contains("`--release`"), "{err}");
    }

    #[test]
    fn unknown_verb_is_refused() {
        let err = parse_str("demo").unwrap_err().to_string();
        assert!(err.contains("unknown verb `demo`"), "{err}");
    }

    #[test]
    fn help_lists_every_verb() {
        for verb in [
            "services up",
            "services down",
            "services status",
            "test",
            "help",
        ] {
            assert!(HELP.contains(verb), "help misses {verb}");
        }
    }
}
