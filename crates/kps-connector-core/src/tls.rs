//! TLS material from PEM files: the gRPC server's certificate, key and client CA, and the NATS
//! client's CA and certificate. Files are read and checked once at startup, so a missing or
//! malformed file is an error naming it before anything serves; the keys are never logged.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS file or option is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One option of a pair was given without the other.
    #[error("{given} needs {missing}")]
    Incomplete {
        /// The option given (`--tls-cert`).
        given: &'static str,
        /// The option missing (`--tls-key`).
        missing: &'static str,
    },
    /// A file could not be read.
    #[error("{option} {path}: cannot read: {source}")]
    Unreadable {
        /// The option naming the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not what the option needs.
    #[error("{option} {path}: {reason}")]
    Invalid {
        /// The option naming the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Files that are each well-formed but unusable together (a key that is not the
    /// certificate's, an unsupported key type, a CA that cannot verify clients).
    #[error("{files}: {reason}")]
    Unusable {
        /// The options and their files.
        files: String,
        /// What the TLS library said.
        reason: String,
    },
}

/// PEM text read from a file and checked to hold what it should.
#[derive(Clone)]
pub struct PemFile {
    path: PathBuf,
    pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemFile").field("path", &self.path).finish()
    }
}

impl PemFile {
    /// Reads `path` (named by `option` in errors), which must hold at least one certificate.
    pub fn certificates(option: &'static str, path: &Path) -> Result<Self, TlsError> {
        let file = Self::read(option, path)?;
        let certs = CertificateDer::pem_slice_iter(&file.pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file.invalid(option, format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(file.invalid(option, "holds no PEM certificate".to_owned()));
        }
        Ok(file)
    }

    /// Reads `path` (named by `option` in errors), which must hold a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1).
    pub fn private_key(option: &'static str, path: &Path) -> Result<Self, TlsError> {
        let file = Self::read(option, path)?;
        PrivateKeyDer::from_pem_slice(&file.pem)
            .map_err(|e| file.invalid(option, format!("holds no usable PEM private key ({e})")))?;
        Ok(file)
    }

    fn read(option: &'static str, path: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::Unreadable {
            option,
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            pem,
        })
    }

    fn invalid(&self, option: &'static str, reason: String) -> TlsError {
        TlsError::Invalid {
            option,
            path: self.path.clone(),
            reason,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PEM text.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

/// The gRPC server's TLS: its certificate chain and key, and optionally the CA client
/// certificates must be signed by (mutual TLS).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate chain.
    pub cert: PemFile,
    /// The server's private key.
    pub key: PemFile,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<PemFile>,
}

impl ServerTls {
    /// Reads and checks the files of `--tls-cert`, `--tls-key` and `--tls-client-ca`: `None`
    /// when TLS is off; an error naming the option when one is given without its partner.
    pub fn from_files(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<Self>, TlsError> {
        let (cert, key) = match (cert, key, client_ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), _) => (cert, key),
            (Some(_), None, _) => {
                return Err(TlsError::Incomplete {
                    given: "--tls-cert",
                    missing: "--tls-key",
                });
            }
            (None, Some(_), _) => {
                return Err(TlsError::Incomplete {
                    given: "--tls-key",
                    missing: "--tls-cert",
                });
            }
            (None, None, Some(_)) => {
                return Err(TlsError::Incomplete {
                    given: "--tls-client-ca",
                    missing: "--tls-cert and --tls-key",
                });
            }
        };
        Ok(Some(Self {
            cert: PemFile::certificates("--tls-cert", cert)?,
            key: PemFile::private_key("--tls-key", key)?,
            client_ca: client_ca
                .map(|ca| PemFile::certificates("--tls-client-ca", ca))
                .transpose()?,
        }))
    }
}

/// The NATS client's TLS: the CA that signed the server's certificate (else the system roots)
/// and the client certificate and key the server may require.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The CA certificates to trust instead of the system's.
    pub ca: Option<PemFile>,
    /// The client certificate chain and key (mutual TLS).
    pub identity: Option<(PemFile, PemFile)>,
}

impl ClientTls {
    /// Reads and checks the files of `--nats-tls-ca`, `--nats-tls-cert` and `--nats-tls-key`:
    /// `None` when none is given.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Self>, TlsError> {
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                PemFile::certificates("--nats-tls-cert", cert)?,
                PemFile::private_key("--nats-tls-key", key)?,
            )),
            (Some(_), None) => {
                return Err(TlsError::Incomplete {
                    given: "--nats-tls-cert",
                    missing: "--nats-tls-key",
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete {
                    given: "--nats-tls-key",
                    missing: "--nats-tls-cert",
                });
            }
        };
        let ca = ca
            .map(|ca| PemFile::certificates("--nats-tls-ca", ca))
            .transpose()?;
        if ca.is_none() && identity.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { ca, identity }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_required_and_named() {
        let p = Path::new("/nonexistent");
        let err = ServerTls::from_files(Some(p), None, None).unwrap_err();
        assert_eq!(err.to_string(), "--tls-cert needs --tls-key");
        let err = ServerTls::from_files(None, Some(p), None).unwrap_err();
        assert_eq!(err.to_string(), "--tls-key needs --tls-cert");
        let err = ServerTls::from_files(None, None, Some(p)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--tls-client-ca needs --tls-cert and --tls-key"
        );
        assert!(ServerTls::from_files(None, None, None).unwrap().is_none());
        let err = ClientTls::from_files(None, Some(p), None).unwrap_err();
        assert_eq!(err.to_string(), "--nats-tls-cert needs --nats-tls-key");
        assert!(ClientTls::from_files(None, None, None).unwrap().is_none());
    }

    #[test]
    fn unreadable_and_malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = ServerTls::from_files(Some(&missing), Some(&missing), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("--tls-cert ") && text.contains("missing.pem"),
            "{text}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = ServerTls::from_files(Some(&garbage), Some(&garbage), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("--tls-cert ") && text.contains("garbage.pem"),
            "{text}"
        );
        let err = ClientTls::from_files(Some(&garbage), None, None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("--nats-tls-ca ") && text.contains("no PEM certificate"),
            "{text}"
        );
    }
}
