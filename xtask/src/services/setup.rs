//! Making a service that xtask installed or started fit for the tests: MariaDB's root logs in over
//! TCP with an empty password and database `test` exists; PostgreSQL has a superuser `root`, a
//! database `test` and trusts loopback connections. Each checks first and changes nothing when the
//! tests can already log in.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::host::{self, Ctx};

const MARIADB_SETUP: &str = "\
CREATE DATABASE IF NOT EXISTS test;
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
FLUSH PRIVILEGES;";

/// MariaDB: root over TCP with an empty password, database `test`.
pub fn mariadb(ctx: &Ctx) -> Result<()> {
    let login = || {
        host::succeeds(Command::new("mariadb").args([
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "-e",
            "SELECT 1",
            "test",
        ]))
    };
    if login() {
        return Ok(());
    }
    // A fresh install lets the system's root in through the unix socket.
    host::run(
        &mut ctx
            .host
            .privileged(&["mariadb", "-u", "root", "-e", MARIADB_SETUP], &[]),
    )?;
    if !login() {
        bail!(
            "root still cannot log in to 127.0.0.1:3306 with an empty password and database test"
        );
    }
    Ok(())
}

/// PostgreSQL: superuser `root`, database `test`, trust on loopback.
pub fn postgresql(ctx: &Ctx) -> Result<()> {
    let login = || {
        host::succeeds(
            Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "5432",
                    "-U",
                    "root",
                    "-d",
                    "test",
                    "-w",
                    "-tAc",
                    "SELECT 1",
                ])
                .env_remove("PGPASSWORD"),
        )
    };
    if login() {
        return Ok(());
    }
    let as_postgres = |args: &[&str]| {
        let mut argv = vec!["runuser", "-u", "postgres", "--"];
        argv.extend_from_slice(args);
        let mut cmd = ctx.host.privileged(&argv, &[]);
        cmd.current_dir("/");
        cmd
    };
    host::run(&mut as_postgres(&[
        "psql",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        "postgres",
        "-c",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') \
         THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END $$",
    ]))?;
    let has_test = host::output(&mut as_postgres(&[
        "psql",
        "-d",
        "postgres",
        "-tAc",
        "SELECT 1 FROM pg_database WHERE datname = 'test'",
    ]))?;
    if String::from_utf8_lossy(&has_test.stdout).trim() != "1" {
        host::run(&mut as_postgres(&["createdb", "-O", "root", "test"]))?;
    }

    let hba_file = host::output(&mut as_postgres(&[
        "psql",
        "-d",
        "postgres",
        "-tAc",
        "SHOW hba_file",
    ]))?;
    let hba_file = String::from_utf8_lossy(&hba_file.stdout).trim().to_owned();
    let hba = host::output(&mut ctx.host.privileged(&["cat", &hba_file], &[]))?;
    if !hba.status.success() {
        bail!("cannot read {hba_file}");
    }
    if let Some(trusted) = with_loopback_trust(&String::from_utf8_lossy(&hba.stdout)) {
        let tmp = ctx.paths.xtask_dir.join("pg_hba.conf");
        fs::create_dir_all(&ctx.paths.xtask_dir)?;
        fs::write(&tmp, trusted).with_context(|| format!("cannot write {}", tmp.display()))?;
        let tmp = tmp.to_string_lossy().into_owned();
        host::run(&mut ctx.host.privileged(
            &[
                "install", "-m", "0640", "-o", "postgres", "-g", "postgres", &tmp, &hba_file,
            ],
            &[],
        ))?;
        host::run(&mut as_postgres(&[
            "psql",
            "-d",
            "postgres",
            "-tAc",
            "SELECT pg_reload_conf()",
        ]))?;
    }
    if !login() {
        bail!("root still cannot log in to 127.0.0.1:5432 database test without a password");
    }
    Ok(())
}

const TRUST_LINES: &str = "# cargo xtask: the tests log in over loopback without a password\n\
host all all 127.0.0.1/32 trust\n\
host all all ::1/128 trust\n";

/// `hba` with loopback trust lines in front (pg_hba.conf: the first match wins), or `None` when it
/// already starts trusting 127.0.0.1 before any other `host` line.
fn with_loopback_trust(hba: &str) -> Option<String> {
    let first_host = hba
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first().is_some_and(|kind| kind.starts_with("host")));
    if first_host.is_some_and(|fields| fields == ["host", "all", "all", "127.0.0.1/32", "trust"]) {
        return None;
    }
    Some(format!("{TRUST_LINES}{hba}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_trust_goes_first_once() {
        let debian = "local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let trusted = with_loopback_trust(debian).unwrap();
        assert!(trusted.starts_with(TRUST_LINES));
        assert!(trusted.ends_with(debian));
        assert_eq!(with_loopback_trust(&trusted), None, "idempotent");
        assert_eq!(
            with_loopback_trust("local all all trust\nhost all all 127.0.0.1/32 trust\n"),
            None
        );
    }

    #[test]
    fn mariadb_setup_keeps_socket_login_and_adds_tcp_root() {
        assert!(MARIADB_SETUP.contains("OR unix_socket"));
        assert!(MARIADB_SETUP.contains("'root'@'127.0.0.1'"));
        assert!(MARIADB_SETUP.contains("CREATE DATABASE IF NOT EXISTS test"));
    }
}
