//! Command-line parsing, by hand (xtask keeps its dependencies to `anyhow`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::bench;
use crate::fuzz;
use crate::images;
use crate::scaffold::{self, Directions};

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
  deploy [--check]           write deploy/<name>/ for the connectors of xtask/src/connectors.rs:
                             connector_class.json and kubernetes.yaml (printed by the connector
                             binary), sample streams/*.json and config.json (checked against the
                             class's schemas); --check writes nothing and fails on any difference
  build-images [--connector NAME]... [--tag TAG] [--out DIR] [--load] [--push REGISTRY]
                             release binaries, then one OCI image archive per connector (default:
                             every one) at <out>/<crate>-<tag>.oci.tar (default out:
                             target/images, tag: the workspace version), without a container
                             engine; --load hands them to docker or podman; --push is designed only
  new-connector NAME --direction ingress|egress|bidirectional
                             add crates/kps-connector-NAME (a crate that builds and passes the
                             contract suite; the source and sink bodies are left to write)
  bench [--quick] [--only NAME,...]
                             the throughput harness: the connectors (mqtt, amqp, mysql, kafka,
                             rtsp) and the harness built in release, their services up, then
                             records/s, MB/s, latency at 1,000 records/s, CPU and memory of each
                             connector beside its raw client library and async-nats, written to
                             target/bench/throughput.{md,json}; --quick moves ten times fewer
                             records (a smoke run); --only picks connectors
  demo [--duration SECONDS]  NATS and Mosquitto up, the MQTT connector started, two streams
                             declared, sensor readings flowing MQTT -> NATS -> MQTT with a live
                             rate, until Ctrl-C or the duration; stops everything it started
  deny                       cargo-deny (installed when missing): licenses, bans (duplicate versions
                             warn) and sources; advisories too when the RustSec database can be
                             fetched (skipped, saying so, where github.com is out of reach)
  fuzz [--seconds N] [--target NAME]...
                             the cargo-fuzz targets of fuzz/ (installs cargo-fuzz when missing),
                             each for N seconds (default 20) over its kept corpus
                             fuzz/corpus/<target>/; fails naming the input of any crash
  help                       this text

services: nats (4222, with JetStream), mosquitto (1883), rabbitmq (5672, guest/guest),
          mariadb (3306, root with an empty password, database test), postgresql (5432),
          kafka (9092, the tansu broker, built once into target/), rtsp (8554, GStreamer)
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
    /// `deploy [--check]`.
    Deploy {
        /// Compare instead of writing.
        check: bool,
    },
    /// `build-images ...`.
    BuildImages(images::Options),
    /// `bench [--quick] [--only NAME,...]`.
    Bench(bench::Options),
    /// `demo [--duration SECONDS]`.
    Demo {
        /// Stop after this many seconds (default: until Ctrl-C).
        duration: Option<u64>,
    },
    /// `deny`.
    Deny,
    /// `fuzz [--seconds N] [--target NAME]...`.
    Fuzz(fuzz::Options),
    /// `new-connector NAME --direction D`.
    NewConnector {
        /// The connector's name.
        name: String,
        /// Its directions.
        directions: Directions,
    },
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
        Some("deny") => match args.next() {
            None => Ok(Command::Deny),
            Some(extra) => bail!("`cargo xtask deny` takes no arguments (got `{extra}`)"),
        },
        Some("demo") => match (args.next(), args.next(), args.next()) {
            (None, _, _) => Ok(Command::Demo { duration: None }),
            (Some("--duration"), Some(seconds), None) => {
                let seconds = seconds
                    .parse()
                    .with_context(|| format!("--duration takes whole seconds (got `{seconds}`)"))?;
                Ok(Command::Demo {
                    duration: Some(seconds),
                })
            }
            _ => bail!("usage: cargo xtask demo [--duration SECONDS]"),
        },
        Some("bench") => {
            let mut options = bench::Options::default();
            while let Some(arg) = args.next() {
                match arg {
                    "--quick" => options.quick = true,
                    "--only" => {
                        let names = args
                            .next()
                            .filter(|v| !v.starts_with("--"))
                            .context("`--only` needs connector names, e.g. `--only mqtt,amqp`")?;
                        options.only.extend(
                            names
                                .split(',')
                                .filter(|name| !name.is_empty())
                                .map(str::to_owned),
                        );
                    }
                    other => bail!("unknown option `{other}` for `bench`: see `cargo xtask help`"),
                }
            }
            bench::check_names(&options.only)?;
            Ok(Command::Bench(options))
        }
        Some("deploy") => match args.next() {
            None => Ok(Command::Deploy { check: false }),
            Some("--check") => match args.next() {
                None => Ok(Command::Deploy { check: true }),
                Some(extra) => bail!("unexpected `{extra}` after `deploy --check`"),
            },
            Some(other) => bail!("unknown option `{other}` for `deploy`: only --check"),
        },
        Some("build-images") => {
            let mut options = images::Options::default();
            while let Some(arg) = args.next() {
                let mut value = |flag: &str| {
                    args.next()
                        .filter(|v| !v.starts_with("--"))
                        .map(str::to_owned)
                        .with_context(|| format!("`{flag}` needs a value"))
                };
                match arg {
                    "--connector" => options.connectors.push(value(arg)?),
                    "--tag" => options.tag = Some(value(arg)?),
                    "--out" => options.out = Some(PathBuf::from(value(arg)?)),
                    "--push" => options.push = Some(value(arg)?),
                    "--load" => options.load = true,
                    other => {
                        bail!("unknown option `{other}` for `build-images`: see `cargo xtask help`")
                    }
                }
            }
            Ok(Command::BuildImages(options))
        }
        Some("fuzz") => {
            let mut options = fuzz::Options::default();
            while let Some(arg) = args.next() {
                let value = args
                    .next()
                    .filter(|v| !v.starts_with("--"))
                    .with_context(|| format!("`{arg}` needs a value"));
                match arg {
                    "--seconds" => {
                        let text = value?;
                        let seconds: u64 = text.parse().with_context(|| {
                            format!("--seconds takes whole seconds (got `{text}`)")
                        })?;
                        if seconds == 0 {
                            bail!("--seconds must be at least 1");
                        }
                        options.seconds = Some(seconds);
                    }
                    "--target" => options.targets.push(value?.to_owned()),
                    other => bail!("unknown option `{other}` for `fuzz`: see `cargo xtask help`"),
                }
            }
            Ok(Command::Fuzz(options))
        }
        Some("new-connector") => {
            let mut name = None;
            let mut directions = None;
            while let Some(arg) = args.next() {
                match arg {
                    "--direction" => {
                        let text = args.next().context(
                            "`--direction` needs a value: ingress, egress or bidirectional",
                        )?;
                        directions = Some(Directions::parse(text)?);
                    }
                    flag if flag.starts_with('-') => {
                        bail!("unknown option `{flag}` for `new-connector`: see `cargo xtask help`")
                    }
                    other if name.is_none() => name = Some(other.to_owned()),
                    other => bail!("`new-connector` takes one name (got `{other}` too)"),
                }
            }
            let name = name.context("`new-connector` needs a NAME, e.g. `cargo xtask new-connector opcua --direction ingress`")?;
            scaffold::check_name(&name)?;
            let directions = directions
                .context("`new-connector` needs --direction ingress|egress|bidirectional")?;
            Ok(Command::NewConnector { name, directions })
        }
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
    fn deny_takes_no_arguments() {
        assert_eq!(parse_str("deny").unwrap(), Command::Deny);
        let err = parse_str("deny --all").unwrap_err().to_string();
        assert!(err.contains("`--all`"), "{err}");
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
        assert_eq!(parse_str("demo").unwrap(), Command::Demo { duration: None });
        assert_eq!(
            parse_str("demo --duration 10").unwrap(),
            Command::Demo { duration: Some(10) }
        );
        assert!(parse_str("demo --duration ten").is_err());
        assert!(parse_str("demo --fast").is_err());
        let err = parse_str("test --release").unwrap_err().to_string();
        assert!(err.contains("`--release`"), "{err}");
    }

    #[test]
    fn bench_takes_quick_and_only() {
        assert_eq!(
            parse_str("bench").unwrap(),
            Command::Bench(bench::Options::default())
        );
        assert_eq!(
            parse_str("bench --quick --only mqtt,amqp --only kafka").unwrap(),
            Command::Bench(bench::Options {
                quick: true,
                only: vec!["mqtt".into(), "amqp".into(), "kafka".into()],
            })
        );
        let err = parse_str("bench --only").unwrap_err().to_string();
        assert!(err.contains("`--only` needs connector names"), "{err}");
        let err = parse_str("bench --only file").unwrap_err().to_string();
        assert!(err.contains("unknown connector `file`"), "{err}");
        let err = parse_str("bench --fast").unwrap_err().to_string();
        assert!(err.contains("`--fast`"), "{err}");
    }

    #[test]
    fn deploy_takes_check() {
        assert_eq!(
            parse_str("deploy").unwrap(),
            Command::Deploy { check: false }
        );
        assert_eq!(
            parse_str("deploy --check").unwrap(),
            Command::Deploy { check: true }
        );
        let err = parse_str("deploy --force").unwrap_err().to_string();
        assert!(err.contains("`--force`"), "{err}");
    }

    #[test]
    fn build_images_options() {
        assert_eq!(
            parse_str("build-images").unwrap(),
            Command::BuildImages(images::Options::default())
        );
        assert_eq!(
            parse_str(
                "build-images --connector file --connector mqtt --tag dev --out /tmp/i --load"
            )
            .unwrap(),
            Command::BuildImages(images::Options {
                connectors: vec!["file".into(), "mqtt".into()],
                tag: Some("dev".into()),
                out: Some("/tmp/i".into()),
                load: true,
                push: None,
            })
        );
        let err = parse_str("build-images --tag").unwrap_err().to_string();
        assert!(err.contains("`--tag` needs a value"), "{err}");
        let err = parse_str("build-images --connector --load")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`--connector` needs a value"), "{err}");
        let err = parse_str("build-images --fast").unwrap_err().to_string();
        assert!(err.contains("`--fast`"), "{err}");
    }

    #[test]
    fn fuzz_options() {
        assert_eq!(
            parse_str("fuzz").unwrap(),
            Command::Fuzz(fuzz::Options::default())
        );
        assert_eq!(
            parse_str("fuzz --seconds 60 --target params_file --target params_mqtt").unwrap(),
            Command::Fuzz(fuzz::Options {
                seconds: Some(60),
                targets: vec!["params_file".into(), "params_mqtt".into()],
            })
        );
        for (line, needle) in [
            ("fuzz --seconds", "`--seconds` needs a value"),
            ("fuzz --seconds --target x", "`--seconds` needs a value"),
            ("fuzz --seconds ten", "whole seconds (got `ten`)"),
            ("fuzz --seconds 0", "at least 1"),
            ("fuzz --target", "`--target` needs a value"),
            ("fuzz --jobs 2", "unknown option `--jobs`"),
            ("fuzz params_file", "unknown option `params_file`"),
        ] {
            let err = parse_str(line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn new_connector_needs_a_name_and_a_direction() {
        assert_eq!(
            parse_str("new-connector opcua --direction ingress").unwrap(),
            Command::NewConnector {
                name: "opcua".into(),
                directions: Directions::Ingress
            }
        );
        assert_eq!(
            parse_str("new-connector --direction bidirectional modbus-tcp").unwrap(),
            Command::NewConnector {
                name: "modbus-tcp".into(),
                directions: Directions::Bidirectional
            }
        );
        for (line, needle) in [
            ("new-connector --direction egress", "needs a NAME"),
            ("new-connector opcua", "needs --direction"),
            (
                "new-connector opcua --direction up",
                "`up` is not a direction",
            ),
            (
                "new-connector Opcua --direction egress",
                "not a connector name",
            ),
            ("new-connector a b --direction egress", "one name"),
        ] {
            let err = parse_str(line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn unknown_verb_is_refused() {
        let err = parse_str("deploy-everything").unwrap_err().to_string();
        assert!(err.contains("unknown verb `deploy-everything`"), "{err}");
    }

    #[test]
    fn help_lists_every_verb() {
        for verb in [
            "services up",
            "services down",
            "services status",
            "test",
            "deploy [--check]",
            "build-images",
            "new-connector",
            "demo [--duration SECONDS]",
            "fuzz [--seconds N] [--target NAME]",
            "help",
        ] {
            assert!(HELP.contains(verb), "help misses {verb}");
        }
    }
}
