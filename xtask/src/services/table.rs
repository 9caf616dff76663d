//! The services the tests need, and how this kind of machine (Debian, root, no systemd) installs,
//! starts and stops each. A new service (a Kafka-protocol broker, an RTSP server) is one more entry.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Argv, Install, Service, Stop, setup};
use crate::host::Ctx;
use crate::probe::Probe;

/// Every service, in the order `up` handles them.
pub fn all() -> Vec<Service> {
    vec![
        Service {
            name: "nats",
            port: 4222,
            probe: Probe::NatsJetStream,
            binary: "/usr/sbin/nats-server",
            install: Install::Apt(&["nats-server"]),
            start: |_| {
                Ok(vec![
                    argv(&["mkdir", "-p", "/var/lib/nats-server"]),
                    argv(&[
                        "start-stop-daemon",
                        "--start",
                        "--oknodo",
                        "--background",
                        "--exec",
                        "/usr/sbin/nats-server",
                        "--",
                        "-a",
                        "127.0.0.1",
                        "-p",
                        "4222",
                        "-js",
                        "-sd",
                        "/var/lib/nats-server",
                        "-l",
                        "/var/log/nats-server.log",
                    ]),
                ])
            },
            stop: Stop::Terminate,
            setup: None,
            start_timeout: Duration::from_secs(30),
        },
        Service {
            name: "mosquitto",
            port: 1883,
            probe: Probe::Tcp,
            binary: "/usr/sbin/mosquitto",
            install: Install::Apt(&["mosquitto"]),
            start: |_| {
                Ok(vec![
                    // The packaged configuration writes its pid file there.
                    argv(&[
                        "install",
                        "-d",
                        "-o",
                        "mosquitto",
                        "-g",
                        "mosquitto",
                        "/run/mosquitto",
                    ]),
                    argv(&["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"]),
                ])
            },
            stop: Stop::Terminate,
            setup: None,
            start_timeout: Duration::from_secs(30),
        },
        Service {
            name: "rabbitmq",
            port: 5672,
            probe: Probe::Tcp,
            binary: "/usr/sbin/rabbitmq-server",
            install: Install::Apt(&["rabbitmq-server"]),
            start: |_| Ok(vec![argv(&["rabbitmq-server", "-detached"])]),
            stop: Stop::Commands(|_| Ok(vec![argv(&["rabbitmqctl", "stop"])])),
            setup: None,
            start_timeout: Duration::from_secs(120),
        },
        Service {
            name: "mariadb",
            port: 3306,
            probe: Probe::Tcp,
            binary: "/usr/sbin/mariadbd",
            install: Install::Apt(&["mariadb-server"]),
            start: |_| {
                Ok(vec![
                    argv(&["install", "-d", "-o", "mysql", "-g", "mysql", "/run/mysqld"]),
                    // --user: a fresh install's configuration does not name the user to run as.
                    argv(&[
                        "start-stop-daemon",
                        "--start",
                        "--oknodo",
                        "--background",
                        "--exec",
                        "/usr/sbin/mariadbd",
                        "--",
                        "--user=mysql",
                    ]),
                ])
            },
            stop: Stop::Terminate,
            setup: Some(setup::mariadb),
            start_timeout: Duration::from_secs(60),
        },
        Service {
            name: "postgresql",
            port: 5432,
            probe: Probe::Tcp,
            binary: "/usr/bin/pg_ctlcluster",
            install: Install::Apt(&["postgresql"]),
            start: |_| postgres_cluster("start"),
            stop: Stop::Commands(|_: &Ctx| postgres_cluster("stop")),
            setup: Some(setup::postgresql),
            start_timeout: Duration::from_secs(60),
        },
        super::rtsp::service(),
        super::kafka::service(),
    ]
}

fn argv(args: &[&str]) -> Argv {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// `pg_ctlcluster --skip-systemctl-redirect <version> main <action>`, for the newest version in
/// /etc/postgresql.
fn postgres_cluster(action: &str) -> Result<Vec<Argv>> {
    let names: Vec<String> = fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql: is the postgresql package installed?")?
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    let version = newest_version(&names).context("no PostgreSQL cluster in /etc/postgresql")?;
    Ok(vec![argv(&[
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        &version,
        "main",
        action,
    ])])
}

/// The highest version among folder names such as `15` or `9.6` (others are ignored).
fn newest_version(names: &[String]) -> Option<String> {
    let key = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    names
        .iter()
        .filter_map(|name| Some((key(name)?, name)))
        .max()
        .map(|(_, name)| name.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use super::*;

    #[test]
    fn the_table_has_the_services_on_their_ports() {
        let ports: Vec<(&str, u16)> = all().iter().map(|svc| (svc.name, svc.port)).collect();
        assert_eq!(
            ports,
            [
                ("nats", 4222),
                ("mosquitto", 1883),
                ("rabbitmq", 5672),
                ("mariadb", 3306),
                ("postgresql", 5432),
                ("rtsp", 8554),
                ("kafka", 9092)
            ]
        );
    }

    #[test]
    fn the_table_is_consistent() {
        let all = all();
        let names: HashSet<&str> = all.iter().map(|svc| svc.name).collect();
        let ports: HashSet<u16> = all.iter().map(|svc| svc.port).collect();
        assert_eq!(names.len(), all.len(), "names are unique");
        assert_eq!(ports.len(), all.len(), "ports are unique");
        for svc in &all {
            assert!(
                svc.binary.starts_with('/'),
                "{}: binary is an absolute path",
                svc.name
            );
            assert!(!svc.packages().is_empty(), "{}: has packages", svc.name);
            assert!(
                svc.start_timeout >= Duration::from_secs(10),
                "{}: starts get time",
                svc.name
            );
        }
        let nats = all.iter().find(|svc| svc.name == "nats").unwrap();
        assert_eq!(nats.probe, Probe::NatsJetStream, "NATS must have JetStream");
    }

    #[test]
    fn start_commands_are_the_machine_ones() {
        let ctx = Ctx::detect().unwrap();
        let all = all();
        let start = |name: &str| {
            let svc = all.iter().find(|svc| svc.name == name).unwrap();
            (svc.start)(&ctx)
                .unwrap()
                .into_iter()
                .map(|argv| argv.join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            start("nats").last().unwrap(),
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
             -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
        );
        assert_eq!(
            start("mosquitto").last().unwrap(),
            "mosquitto -d -c /etc/mosquitto/mosquitto.conf"
        );
        assert_eq!(start("rabbitmq"), ["rabbitmq-server -detached"]);
        assert!(start("mariadb").last().unwrap().starts_with(
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
        ));
        if Path::new("/etc/postgresql").is_dir() {
            let pg = start("postgresql");
            assert!(
                pg[0].starts_with("pg_ctlcluster --skip-systemctl-redirect "),
                "{pg:?}"
            );
            assert!(pg[0].ends_with(" main start"), "{pg:?}");
        }
    }

    #[test]
    fn newest_postgres_version_wins() {
        let names = |list: &[&str]| {
            list.iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(newest_version(&names(&["15"])), Some("15".into()));
        assert_eq!(
            newest_version(&names(&["9.6", "16", "15", "README"])),
            Some("16".into())
        );
        assert_eq!(newest_version(&names(&["9.6", "10"])), Some("10".into()));
        assert_eq!(newest_version(&names(&["README"])), None);
    }
}
