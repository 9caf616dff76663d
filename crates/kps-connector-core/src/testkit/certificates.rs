//! [`TestCertificates`]: a private CA, a server certificate for `127.0.0.1` and `localhost`, and
//! a client certificate for mutual TLS, made with the `openssl` command for one test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// PEM files of a test CA and the certificates it signed, each valid two days. Keys are P-256
/// PKCS#8, unencrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCertificates {
    /// The CA certificate (`ca.pem`): what clients trust and what client certificates are
    /// checked against.
    pub ca: PathBuf,
    /// The CA's key (`ca.key`).
    pub ca_key: PathBuf,
    /// The server certificate (`server.pem`), for `IP:127.0.0.1` and `DNS:localhost`,
    /// extended key usage serverAuth.
    pub server_cert: PathBuf,
    /// The server certificate's key (`server.key`).
    pub server_key: PathBuf,
    /// The client certificate (`client.pem`, CN `kps test client`), extended key usage
    /// clientAuth.
    pub client_cert: PathBuf,
    /// The client certificate's key (`client.key`).
    pub client_key: PathBuf,
}

impl TestCertificates {
    /// Makes the CA, the server and the client certificates in `dir` (which must exist).
    /// Panics naming the `openssl` command when it is missing or fails.
    pub fn generate(dir: &Path) -> Self {
        let certs = Self {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=kps test ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        signed(
            dir,
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        signed(
            dir,
            "client",
            "/CN=kps test client",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        certs
    }

    /// A gRPC client's TLS trusting the CA; with `client_certificate` it also presents the
    /// client certificate (mutual TLS).
    pub fn grpc_client_tls(&self, client_certificate: bool) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca)));
        if client_certificate {
            tls = tls.identity(Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ));
        }
        tls
    }
}

/// Makes `<name>.key` and `<name>.pem` for `subject`, signed by the CA, with `extensions`.
fn signed(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let (key, csr, ext, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    );
    std::fs::write(dir.join(&ext), extensions).expect("certificate extensions written");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| super::service_unavailable("the openssl command", e));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
