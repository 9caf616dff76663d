//! [`FaultProxy`]: a loopback TCP proxy that a test puts between a connector and its broker, then
//! cuts (every connection closed, new ones refused) and restores.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, upstream, up.clone(), stop.clone()));
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
        let mut down = up.subscribe();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut client = client;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = down.wait_for(|up| !*up) => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}
