//! [`FaultProxy`]: a loopback TCP proxy that a test puts between a connector and its broker, then
//! cuts (every connection closed, new ones refused) and restores. It can also terminate TLS in
//! front of a plaintext broker, so a client's TLS is proven against the real broker.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use super::TestCertificates;

/// A TCP proxy on 127.0.0.1 to one upstream address.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on an ephemeral loopback port.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, None).await
    }

    /// Starts a proxy that accepts TLS with the server certificate of `certs` and forwards the
    /// plaintext to `upstream`: `amqps://` (or any TLS client) to a plaintext broker.
    pub async fn start_tls(upstream: SocketAddr, certs: &TestCertificates) -> Self {
        Self::start_with(upstream, Some(tls_acceptor(certs, false))).await
    }

    /// As [`FaultProxy::start_tls`], and clients must present a certificate the CA of `certs`
    /// signed (mutual TLS); a client without one is refused during the handshake.
    pub async fn start_mutual_tls(upstream: SocketAddr, certs: &TestCertificates) -> Self {
        Self::start_with(upstream, Some(tls_acceptor(certs, true))).await
    }

    async fn start_with(upstream: SocketAddr, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            upstream,
            tls,
            up.clone(),
            stop.clone(),
        ));
        Self { addr, up, stop }
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every proxied connection and refuses new ones until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Accepts and proxies connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    tls: Option<TlsAcceptor>,
    up: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        if !*up.borrow() {
            drop(client);
            continue;
        }
        let down = up.subscribe();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            match tls {
                None => pipe(client, server, down, stop).await,
                Some(tls) => {
                    let handshake = tokio::select! {
                        _ = stop.cancelled() => return,
                        handshake = tls.accept(client) => handshake,
                    };
                    if let Ok(client) = handshake {
                        pipe(client, server, down, stop).await;
                    }
                }
            }
        });
    }
}

/// Copies both ways until either side closes, the proxy is cut or stopped.
async fn pipe(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    mut server: TcpStream,
    mut down: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = down.wait_for(|up| !*up) => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}

/// A TLS acceptor with the server certificate of `certs`; with `mutual`, client certificates
/// signed by its CA are required.
fn tls_acceptor(certs: &TestCertificates, mutual: bool) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(&certs.server_cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .expect("the test server certificate parses");
    let key = PrivateKeyDer::from_pem_file(&certs.server_key).expect("the test server key parses");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&certs.ca).expect("the test CA reads") {
            roots
                .add(ca.expect("the test CA parses"))
                .expect("the test CA is a trust anchor");
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("a client certificate verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(chain, key)
        .expect("the test server certificate and key go together");
    TlsAcceptor::from(Arc::new(config))
}
