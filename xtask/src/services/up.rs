//! `services up`: leave running services alone, install the missing ones, start the stopped ones,
//! wait for their ports, remember what was started, and set up what xtask installed or started.
//! The build's own Debian packages (`apt::missing_build_packages`: OpenSSL headers, pkg-config)
//! are installed in the same apt-get run when missing, whichever services are asked for.

use std::collections::BTreeSet;

use anyhow::{Result, bail};

use super::{Service, status};
use crate::apt;
use crate::host::{self, Ctx};
use crate::probe::{self, Health};
use crate::procfs;
use crate::state::{Record, State};

/// `services up`.
pub fn run(ctx: &Ctx, services: &[Service]) -> Result<()> {
    let state_path = ctx.paths.services_state();
    let mut state = State::load(&state_path)?;
    let mut errors = Vec::new();
    let mut todo = Vec::new();
    for svc in services {
        match svc.health() {
            Health::Up => {
                let by = status::started_by(&Health::Up, state.get(svc.name));
                println!("{:<10} {:>5}  running, started by {by}: left alone", svc.name, svc.port);
            }
            Health::Unfit(why) => errors.push(format!(
                "{}: something answers on 127.0.0.1:{} but {why}; stop it, then run `cargo xtask services up` again",
                svc.name, svc.port
            )),
            Health::Down => todo.push(svc),
        }
    }

    let missing: Vec<&Service> = todo
        .iter()
        .copied()
        .filter(|svc| !svc.installed())
        .collect();
    let build_packages = apt::missing_build_packages();
    let packages: BTreeSet<&str> = missing
        .iter()
        .flat_map(|svc| svc.packages().iter().copied())
        .chain(build_packages.iter().copied())
        .collect();
    if !packages.is_empty() {
        let packages: Vec<&str> = packages.into_iter().collect();
        println!("installing {} with apt-get", packages.join(" "));
        apt::install(ctx, &packages)?;
        if let Some(svc) = missing.iter().find(|svc| !svc.installed()) {
            bail!(
                "{}: apt-get installed {} but {} is still missing",
                svc.name,
                svc.packages().join(" "),
                svc.binary
            );
        }
        let still_missing = apt::missing_build_packages();
        if !still_missing.is_empty() {
            bail!(
                "apt-get ran but the build packages {} are still missing",
                still_missing.join(" ")
            );
        }
    }

    // Start everything first, then wait: the slow starters (RabbitMQ) overlap the others.
    let mut starting = Vec::new();
    for svc in todo {
        if svc.health() == Health::Up {
            println!(
                "{:<10} {:>5}  running: started by its package",
                svc.name, svc.port
            );
            starting.push((svc, None));
            continue;
        }
        println!("{:<10} {:>5}  down: starting", svc.name, svc.port);
        let log = ctx.paths.start_log(svc.name);
        // The log holds the latest start only.
        let _ = std::fs::remove_file(&log);
        let started = (svc.start)(ctx).and_then(|commands| {
            commands
                .iter()
                .try_for_each(|argv| host::run_logged(&mut ctx.host.privileged(argv, &[]), &log))
        });
        starting.push((svc, Some(started)));
    }
    for (svc, started) in starting {
        if let Some(started) = started {
            match probe::wait_up(svc.name, svc.port, svc.probe, svc.start_timeout) {
                Ok(took) => {
                    let process = procfs::listener(svc.port);
                    match started {
                        Ok(()) => {
                            state.insert(Record {
                                service: svc.name.to_owned(),
                                process,
                            });
                            state.save(&state_path)?;
                            let pid = process
                                .map(|id| format!(", pid {}", id.pid))
                                .unwrap_or_default();
                            println!(
                                "{:<10} {:>5}  up after {:.1}s (started by xtask{pid})",
                                svc.name,
                                svc.port,
                                took.as_secs_f64()
                            );
                        }
                        Err(err) => println!(
                            "{:<10} {:>5}  up, though its start command failed (something else started it?): {err:#}",
                            svc.name, svc.port
                        ),
                    }
                }
                Err(err) => {
                    let mut message = format!("{err:#}");
                    if let Err(start_err) = started {
                        message.push_str(&format!("\n  the start failed: {start_err:#}"));
                    } else {
                        message.push_str(&format!(
                            "; {}",
                            host::log_tail(&ctx.paths.start_log(svc.name))
                        ));
                    }
                    errors.push(message);
                    continue;
                }
            }
        }
        if let Some(setup) = svc.setup
            && let Err(err) = setup(ctx)
        {
            errors.push(format!("{}: set-up failed: {err:#}", svc.name));
        }
    }

    if !errors.is_empty() {
        bail!("services up failed:\n- {}", errors.join("\n- "));
    }
    Ok(())
}
