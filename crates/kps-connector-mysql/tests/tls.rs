//! TLS to the server. MySQL negotiates TLS inside its protocol, so a TLS-terminating proxy cannot
//! stand in for the server: the test starts a MariaDB of its own (`mariadb-install-db` into a
//! temporary data directory, then `mariadbd` on a free loopback port) with a server certificate
//! of a test CA and `require_secure_transport=ON`, so every connection that works is TLS. The
//! machine's MariaDB (TLS disabled) is left alone; `ssl_mode: required` against it fails clearly.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{count, ints, parse, url};
use kps_connector_core::testkit::{
    EventView, NatsProbe, StreamDecl, TestCertificates, TestConnector, service_unavailable,
    unique_name,
};
use kps_connector_core::{Bytes, State};
use kps_connector_mysql::MysqlConnector;
use serde_json::{Value, json};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlSslMode};
use sqlx::{ConnectOptions, Connection};

const WAIT: Duration = Duration::from_secs(60);

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";

/// The user that must present a client certificate (`REQUIRE X509`).
const X509_USER: &str = "kps_x509";

/// A MariaDB of the test's own, TLS only, killed on drop.
struct PrivateMariaDb {
    child: Child,
    port: u16,
    certs: TestCertificates,
    dir: tempfile::TempDir,
}

impl PrivateMariaDb {
    /// Initialises a data directory, starts the server and waits until it accepts a TLS login.
    async fn start() -> Self {
        for binary in [MARIADBD, INSTALL_DB] {
            if !Path::new(binary).exists() {
                service_unavailable(
                    binary,
                    "missing; `cargo xtask services up` installs MariaDB",
                );
            }
        }
        let dir = tempfile::tempdir().expect("a directory for the server");
        let certs_dir = dir.path().join("certs");
        std::fs::create_dir(&certs_dir).expect("certificate directory");
        let certs = TestCertificates::generate(&certs_dir);
        let data = dir.path().join("data");
        // The data directory's first database and users, created before the server listens.
        let init = dir.path().join("init.sql");
        std::fs::write(
            &init,
            format!(
                "CREATE DATABASE IF NOT EXISTS test;\n\
                 CREATE USER '{X509_USER}'@'%' REQUIRE X509;\n\
                 GRANT ALL ON test.* TO '{X509_USER}'@'%';\n"
            ),
        )
        .expect("init file");
        let arg = |name: &str, path: &Path| format!("--{name}={}", path.display());
        // Small InnoDB files: the server holds a few rows.
        let small = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M"];

        let started = Instant::now();
        let install = {
            let mut cmd = Command::new(INSTALL_DB);
            cmd.args(["--no-defaults", "--auth-root-authentication-method=normal"])
                .arg("--skip-test-db")
                .arg(arg("datadir", &data))
                .args(small)
                .stdin(Stdio::null());
            tokio::task::spawn_blocking(move || cmd.output())
                .await
                .expect("install task")
                .expect("mariadb-install-db runs")
        };
        assert!(
            install.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
        let installed = started.elapsed();

        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(MARIADBD)
            .arg("--no-defaults")
            .arg(arg("datadir", &data))
            .arg(arg("socket", &dir.path().join("mysqld.sock")))
            .arg(arg("pid-file", &dir.path().join("mysqld.pid")))
            .arg(arg("log-error", &dir.path().join("error.log")))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(arg("ssl-ca", &certs.ca))
            .arg(arg("ssl-cert", &certs.server_cert))
            .arg(arg("ssl-key", &certs.server_key))
            .arg("--require-secure-transport=ON")
            .arg(arg("init-file", &init))
            .arg("--skip-log-bin")
            // Needed when the tests run as root; ignored (with a warning) otherwise.
            .arg("--user=root")
            .args(small)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        let server = Self {
            child,
            port,
            certs,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match server.connect().await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    break;
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the private MariaDB did not accept a TLS login: {e}; {}",
                    server.error_log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "private MariaDB: data directory initialised in {:.1}s, accepting TLS logins {:.1}s after the start",
            installed.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        server
    }

    /// `mysql://root@127.0.0.1:<port>/test`.
    fn url(&self) -> String {
        self.url_as("root")
    }

    fn url_as(&self, user: &str) -> String {
        format!("mysql://{user}@127.0.0.1:{}/test", self.port)
    }

    /// The test's own connection, as root, verifying the server against the CA.
    async fn connect(&self) -> Result<MySqlConnection, sqlx::Error> {
        MySqlConnectOptions::from_str(&self.url())?
            .ssl_mode(MySqlSslMode::VerifyCa)
            .ssl_ca(&self.certs.ca)
            .connect()
            .await
    }

    async fn exec(&self, sql: &str) {
        let mut conn = self.connect().await.expect("a connection");
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log"))
            .map(|log| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(10)..].join("\n")
            })
            .unwrap_or_default()
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// Waits until `stream` is UNHEALTHY and returns the status message.
async fn unhealthy(connector: &mut TestConnector<MysqlConnector>, stream: &str) -> String {
    connector
        .wait_for_state(stream, State::Unhealthy, WAIT)
        .await;
    let events = connector.events().await;
    events
        .iter()
        .find(|e: &&EventView| {
            e.kind == "status" && e.stream_id == stream && e.state == State::Unhealthy
        })
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_reads_and_writes_over_tls_and_an_untrusted_server_is_refused() {
    let server = PrivateMariaDb::start().await;
    let certs = &server.certs;
    let ca = path(&certs.ca);
    let (table_in, table_out) = (unique_name("kps_tls_in"), unique_name("kps_tls_out"));
    server
        .exec(&format!(
            "CREATE TABLE `{table_in}` (id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64))"
        ))
        .await;
    server
        .exec(&format!(
            "CREATE TABLE `{table_out}` (id INT PRIMARY KEY, payload VARCHAR(64))"
        ))
        .await;
    let values: Vec<String> = (1..=100).map(|i| format!("('row-{i}')")).collect();
    server
        .exec(&format!(
            "INSERT INTO `{table_in}` (payload) VALUES {}",
            values.join(",")
        ))
        .await;

    let probe = NatsProbe::connect().await;
    let base = unique_name("kps.mysql.tls");
    let (ch_in, ch_out, ch_x509) = (
        format!("{base}.in"),
        format!("{base}.out"),
        format!("{base}.x509"),
    );
    let mut arrivals = probe.subscribe(&ch_in).await;
    let mut connector = TestConnector::start(MysqlConnector::default()).await;
    connector
        .apply(vec![
            StreamDecl::ingress(
                "tls-in",
                ch_in.as_str(),
                json!({"url": server.url(), "table": table_in, "mode": "incrementing",
                       "cursor_column": "id", "ssl_mode": "verify_ca", "ca_file": ca}),
            ),
            // The certificate names IP:127.0.0.1, the URL's host.
            StreamDecl::egress(
                "tls-out",
                ch_out.as_str(),
                json!({"url": server.url(), "table": table_out,
                       "ssl_mode": "verify_identity", "ca_file": ca}),
            ),
            // A user that must present a client certificate; `ca_file` alone means verify_ca.
            StreamDecl::egress(
                "x509-out",
                ch_x509.as_str(),
                json!({"url": server.url_as(X509_USER), "table": table_out, "ca_file": ca,
                       "cert_file": path(&certs.client_cert),
                       "key_file": path(&certs.client_key)}),
            ),
            // Without the CA the system's store does not trust the test CA.
            StreamDecl::ingress(
                "untrusted-in",
                format!("{base}.untrusted"),
                json!({"url": server.url(), "table": table_in, "mode": "incrementing",
                       "cursor_column": "id", "ssl_mode": "verify_ca"}),
            ),
            // The server refuses the certificate-only user without a certificate.
            StreamDecl::egress(
                "no-cert-out",
                format!("{base}.nocert"),
                json!({"url": server.url_as(X509_USER), "table": table_out,
                       "ssl_mode": "required"}),
            ),
            StreamDecl::egress(
                "missing-ca",
                format!("{base}.missing"),
                json!({"url": server.url(), "table": table_out,
                       "ca_file": path(&server.dir.path().join("missing.pem"))}),
            ),
        ])
        .await
        .expect("streams accepted");
    for id in ["tls-in", "tls-out", "x509-out"] {
        connector.wait_for_state(id, State::Healthy, WAIT).await;
    }

    // Rows to NATS over TLS.
    let read = parse(&arrivals.collect(100, WAIT).await);
    assert_eq!(ints(&read, "id"), (1..=100).collect::<Vec<i64>>());
    // Records to rows over TLS, as root and as the certificate-only user.
    let to_rows = |range: std::ops::RangeInclusive<i64>| -> Vec<Bytes> {
        range
            .map(|i| Bytes::from(json!({"id": i, "payload": format!("out-{i}")}).to_string()))
            .collect()
    };
    probe.publish_records(&ch_out, &to_rows(1..=100), 10).await;
    probe
        .publish_records(&ch_x509, &to_rows(101..=150), 10)
        .await;
    let mut check = server.connect().await.expect("a connection");
    let deadline = Instant::now() + WAIT;
    loop {
        let written: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `{table_out}`"))
            .fetch_one(&mut check)
            .await
            .expect("count");
        if written == 150 {
            break;
        }
        assert!(Instant::now() < deadline, "{written} of 150 rows written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let message = unhealthy(&mut connector, "untrusted-in").await;
    println!("untrusted-in: {message}");
    assert!(
        message.contains("ssl_mode verify_ca") && message.contains("UnknownIssuer"),
        "{message}"
    );
    let message = unhealthy(&mut connector, "no-cert-out").await;
    println!("no-cert-out: {message}");
    assert!(
        message.contains("Access denied") && message.contains(X509_USER),
        "{message}"
    );
    connector
        .wait_for_state("missing-ca", State::Failed, WAIT)
        .await;
    let events = connector.events().await;
    let failed = events
        .iter()
        .find(|e| e.stream_id == "missing-ca" && e.state == State::Failed)
        .expect("the failed status");
    assert!(
        failed.message.contains("ca_file") && failed.message.contains("missing.pem"),
        "{}",
        failed.message
    );
    connector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_against_a_plaintext_server_fails_clearly_and_preferred_falls_back() {
    let pool = common::db().await;
    let table = unique_name("kps_tls_plain");
    common::create(
        &pool,
        &table,
        "id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64)",
    )
    .await;
    common::insert_payloads(&pool, &table, 0, 10).await;
    let base = unique_name("kps.mysql.plain");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&format!("{base}.preferred")).await;
    let ingress = |mode: &str| -> Value {
        json!({"url": url(), "table": table, "mode": "incrementing", "cursor_column": "id",
               "ssl_mode": mode})
    };
    let mut connector = TestConnector::start(MysqlConnector::default()).await;
    connector
        .apply(vec![
            StreamDecl::ingress("required", format!("{base}.required"), ingress("required")),
            StreamDecl::ingress(
                "preferred",
                format!("{base}.preferred"),
                ingress("preferred"),
            ),
        ])
        .await
        .expect("streams accepted");
    let message = unhealthy(&mut connector, "required").await;
    println!("required: {message}");
    assert!(
        message.contains("ssl_mode required") && message.contains("server does not support TLS"),
        "{message}"
    );
    assert_eq!(arrivals.collect(10, WAIT).await.len(), 10);
    assert_eq!(count(&pool, &table).await, 10);
    connector.shutdown().await;
    common::drop_table(&pool, &table).await;
}
