//! One direction of a link between two managers: a TCP relay on 127.0.0.1 that forwards to
//! the peer's cluster port and that a test can cut and heal.
//!
//! Manager A reaches manager B only through the relay of link A→B, so the TLS sessions and
//! gRPC calls A makes to B (and B's answers) all cross it. Cutting closes every connection
//! it carries and refuses new ones (accepted and closed at once, so the dialler sees the
//! connection fail rather than hang); healing lets new connections through again.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    cut: bool,
    /// Bumped to close every live connection; each connection ends when it changes.
    epoch: u64,
}

pub struct Relay {
    addr: SocketAddr,
    /// `None` while the peer is down: connections are accepted and closed at once.
    target: Arc<RwLock<Option<SocketAddr>>>,
    state: watch::Sender<LinkState>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(RwLock::new(Some(target)));
        let (state, _) = watch::channel(LinkState::default());
        let accept = tokio::spawn(accept_loop(listener, target.clone(), state.clone()));
        Ok(Relay {
            addr,
            target,
            state,
            accept,
        })
    }

    /// Where the dialling side connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones until [`Relay::heal`].
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.cut = true;
            s.epoch += 1;
        });
    }

    pub fn heal(&self) {
        self.state.send_modify(|s| s.cut = false);
    }

    /// Forwards new connections to `target` (the peer restarted on another port), or
    /// closes them at once if `None` (the peer is down); closes the live ones either way.
    pub fn retarget(&self, target: Option<SocketAddr>) {
        *self.target.write().unwrap_or_else(|p| p.into_inner()) = target;
        self.state.send_modify(|s| s.epoch += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        // Live connections end with the sender: their `wait_for` fails.
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<RwLock<Option<SocketAddr>>>,
    state: watch::Sender<LinkState>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let mut rx = state.subscribe();
        let now = *rx.borrow_and_update();
        let to = *target.read().unwrap_or_else(|p| p.into_inner());
        let Some(to) = to.filter(|_| !now.cut) else {
            drop(inbound);
            continue;
        };
        tokio::spawn(async move {
            let mut inbound = inbound;
            // A cut while connecting shows up as a changed epoch below.
            let Ok(mut outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                // Also ends when the relay is dropped (the sender is gone).
                _ = rx.wait_for(|s| s.epoch != now.epoch) => {}
            }
        });
    }
}
