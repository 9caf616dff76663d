//! `cargo xtask services up|down|status`: the services the tests need, on loopback.
//!
//! A service is one [`Service`] entry in [`table::all`]: its port and probe, how to install it,
//! how to start it in the background, how to stop it, and what to set up once it runs. `up` leaves
//! alone whatever already answers, installs what is missing (one apt-get run for all), starts the
//! rest, waits for their ports, and remembers what it started in `target/xtask/services.state`;
//! `down` stops only that.

mod down;
mod kafka;
mod rtsp;
mod setup;
mod status;
mod table;
mod up;

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::host::Ctx;
use crate::probe::{self, Health, Probe};

pub use down::run as down;
pub use status::run as status;
pub use up::run as up;

/// A command line, program first.
pub type Argv = Vec<String>;

/// One service the tests need.
pub struct Service {
    /// Its name on the command line and in the state file.
    pub name: &'static str,
    /// The loopback port it answers on.
    pub port: u16,
    /// How to tell it answers.
    pub probe: Probe,
    /// The file whose presence means it is installed.
    pub binary: &'static str,
    /// How to install it when `binary` is missing.
    pub install: Install,
    /// The commands (run as root, in order) that start it in the background and return.
    pub start: fn(&Ctx) -> Result<Vec<Argv>>,
    /// How `down` stops it (only when `up` started it).
    pub stop: Stop,
    /// Makes it fit for the tests after xtask installed or started it (users, databases); `None`
    /// when a fresh one is fit as it is.
    pub setup: Option<fn(&Ctx) -> Result<()>>,
    /// How long to wait for its port after the start.
    pub start_timeout: Duration,
}

/// How a service gets installed.
pub enum Install {
    /// These Debian packages, with apt-get. (A service built from a registry package, cached under
    /// `target/`, would be another variant.)
    Apt(&'static [&'static str]),
}

/// How `down` stops a service that `up` started.
pub enum Stop {
    /// SIGTERM to the process that listened on its port after the start.
    Terminate,
    /// These commands, run as root.
    Commands(fn(&Ctx) -> Result<Vec<Argv>>),
}

impl Service {
    /// Whether its binary is on this machine.
    pub fn installed(&self) -> bool {
        Path::new(self.binary).exists()
    }

    /// Probes its port.
    pub fn health(&self) -> Health {
        probe::check(self.port, self.probe)
    }

    fn packages(&self) -> &'static [&'static str] {
        match self.install {
            Install::Apt(packages) => packages,
        }
    }
}

/// The services named `names` (all of them when `names` is empty), in table order.
pub fn select(names: &[String]) -> Result<Vec<Service>> {
    let all = table::all();
    if let Some(unknown) = names
        .iter()
        .find(|name| !all.iter().any(|svc| svc.name == name.as_str()))
    {
        let known: Vec<&str> = all.iter().map(|svc| svc.name).collect();
        bail!(
            "unknown service `{unknown}`: the services are {}",
            known.join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|svc| names.is_empty() || names.iter().any(|name| name == svc.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_table_order_and_refuses_unknown_names() {
        let names = |svcs: Vec<Service>| svcs.iter().map(|svc| svc.name).collect::<Vec<_>>();
        assert_eq!(select(&[]).unwrap().len(), table::all().len());
        let picked = select(&["postgresql".to_owned(), "nats".to_owned()]).unwrap();
        assert_eq!(names(picked), ["nats", "postgresql"]);
        let err = select(&["zookeeper".to_owned()]).err().unwrap().to_string();
        assert!(err.contains("unknown service `zookeeper`"), "{err}");
        assert!(
            err.contains("nats, mosquitto, rabbitmq, mariadb, postgresql"),
            "{err}"
        );
    }
}
