//! TLS for `amqps://`: the rustls client configuration of a stream's parameters.

use std::sync::Arc;

use amqprs::tls::TlsAdaptor;
use kps_connector_core::{ConnectorError, ConnectorResult};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::params::AmqpParams;

/// The TLS settings of `params`, read now (so renewed certificates are picked up at the next
/// connect): the system's roots and `ca_file` trusted, `cert_file` and `key_file` presented;
/// the broker's certificate must name `host`.
pub(crate) async fn tls_adaptor(params: &AmqpParams, host: &str) -> ConnectorResult<TlsAdaptor> {
    let mut roots = rustls::RootCertStore::empty();
    let native = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
        .await
        .map_err(|e| ConnectorError::fatal(format!("loading the system's CA certificates: {e}")))?;
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &params.ca_file {
        let pem = read_pem("ca_file", path, "CERTIFICATE-----").await?;
        for cert in certificates("ca_file", path, &pem)? {
            roots
                .add(cert)
                .map_err(|e| ConnectorError::invalid("ca_file", format!("{path}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::fatal(format!("tls setup: {e}")))?
        .with_root_certificates(roots);
    let config = match (&params.cert_file, &params.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let pem = read_pem("cert_file", cert_path, "CERTIFICATE-----").await?;
            let chain = certificates("cert_file", cert_path, &pem)?;
            let pem = read_pem("key_file", key_path, "PRIVATE KEY-----").await?;
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
                ConnectorError::invalid("key_file", format!("{key_path} holds no usable key: {e}"))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ConnectorError::invalid(
                    "key_file",
                    format!("{key_path} does not go with {cert_path}: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsAdaptor::new(
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        host.to_owned(),
    ))
}

/// The certificates of PEM text `pem`, read from `path` for parameter `field`.
fn certificates(
    field: &str,
    path: &str,
    pem: &str,
) -> ConnectorResult<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectorError::invalid(field, format!("{path} is not PEM: {e}")))
}

/// Reads the PEM file `path` of parameter `field`, which must hold a `-----BEGIN ...{marker}`
/// block. Errors name the field and the file, never the content.
async fn read_pem(field: &str, path: &str, marker: &str) -> ConnectorResult<String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ConnectorError::invalid(field, format!("cannot read {path}: {e}")))?;
    let holds = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.ends_with(marker));
    if !holds {
        return Err(ConnectorError::invalid(
            field,
            format!("{path} holds no PEM {}", marker.trim_end_matches('-')),
        ));
    }
    Ok(text)
}
