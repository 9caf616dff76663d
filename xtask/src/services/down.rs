//! `services down`: stop what `services up` started, and nothing else.

use std::time::Duration;

use anyhow::{Result, bail};

use super::{Service, Stop};
use crate::host::{self, Ctx};
use crate::probe::{self, Health};
use crate::state::State;

/// `services down`: stops what `up` started, nothing else.
pub fn run(ctx: &Ctx, services: &[Service]) -> Result<()> {
    let state_path = ctx.paths.services_state();
    let mut state = State::load(&state_path)?;
    let mut errors = Vec::new();
    for svc in services {
        let Some(record) = state.get(svc.name).cloned() else {
            println!(
                "{:<10} {:>5}  not started by xtask: left alone",
                svc.name, svc.port
            );
            continue;
        };
        let answers = svc.health() != Health::Down;
        match (record.process, answers) {
            (Some(id), _) if !id.is_alive() => {
                let now = if answers {
                    "something else answers now: left alone"
                } else {
                    "already stopped"
                };
                println!(
                    "{:<10} {:>5}  the process xtask started is gone; {now}",
                    svc.name, svc.port
                );
                state.remove(svc.name);
                state.save(&state_path)?;
                continue;
            }
            (None, false) => {
                println!("{:<10} {:>5}  already stopped", svc.name, svc.port);
                state.remove(svc.name);
                state.save(&state_path)?;
                continue;
            }
            _ => {}
        }
        let stopped = match (&svc.stop, record.process) {
            (Stop::Terminate, Some(id)) => host::run(&mut ctx.host.privileged(
                &["kill".to_owned(), "-TERM".to_owned(), id.pid.to_string()],
                &[],
            )),
            (Stop::Terminate, None) => Err(anyhow::anyhow!(
                "xtask could not see which process it started (not root?): stop it by hand"
            )),
            (Stop::Commands(commands), _) => (commands)(ctx).and_then(|commands| {
                commands
                    .iter()
                    .try_for_each(|argv| host::run(&mut ctx.host.privileged(argv, &[])))
            }),
        };
        match stopped.and_then(|()| probe::wait_down(svc.name, svc.port, Duration::from_secs(60))) {
            Ok(()) => {
                println!("{:<10} {:>5}  stopped", svc.name, svc.port);
                state.remove(svc.name);
                state.save(&state_path)?;
            }
            Err(err) => errors.push(format!("{}: {err:#}", svc.name)),
        }
    }
    if !errors.is_empty() {
        bail!("services down failed:\n- {}", errors.join("\n- "));
    }
    Ok(())
}
