//! TCP proxies in front of real servers: [`TripProxy`] stops forwarding after a number of bytes, to fail a stream
//! half-way at a known point; [`GateProxy`] holds connections until it is opened, to keep work in progress.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxy; it stops on drop.
pub struct TripProxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    tripped: watch::Receiver<bool>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TripProxy {
    /// Forwards to `upstream`. Once `trip_after` bytes have gone from upstream to clients (over all connections),
    /// it holds every connection, reports [`TripProxy::tripped`], and drops them all when released.
    pub async fn start(upstream: SocketAddr, trip_after: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (trip_tx, tripped) = watch::channel(false);
        let trip_tx = Arc::new(trip_tx);
        let (release, release_rx) = watch::channel(false);
        let sent = Arc::new(AtomicU64::new(0));
        let task = {
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let (trip_tx, mut release, sent) = (trip_tx.clone(), release_rx.clone(), sent.clone());
                    tokio::spawn(async move {
                        let (mut client_read, mut client_write) = client.into_split();
                        let (mut server_read, mut server_write) = server.into_split();
                        let upstream_leg = tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        });
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match server_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 >= trip_after {
                                let _ = trip_tx.send(true);
                                let _ = release.wait_for(|r| *r).await;
                                break;
                            }
                        }
                        upstream_leg.abort();
                    });
                }
            })
        };
        Ok(Self { addr, tripped, release, task })
    }

    /// Waits until the byte limit was reached.
    pub async fn tripped(&mut self) {
        let _ = self.tripped.wait_for(|t| *t).await;
    }

    /// Drops the held connections.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for TripProxy {
    fn drop(&mut self) {
        let _ = self.release.send(true);
        self.task.abort();
    }
}

/// A TCP proxy in front of a real server that holds every connection it accepts until it is opened: requests wait
/// unanswered (the server never sees them) until [`GateProxy::open`], and from then on everything passes straight
/// through. It keeps a piece of work that needs the server in progress for as long as a test needs.
pub struct GateProxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    held: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl GateProxy {
    /// A closed gate in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (open, open_rx) = watch::channel(false);
        let (held_tx, held) = watch::channel(0usize);
        let held_tx = Arc::new(held_tx);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (mut open_rx, held_tx) = (open_rx.clone(), held_tx.clone());
                tokio::spawn(async move {
                    if !*open_rx.borrow_and_update() {
                        held_tx.send_modify(|n| *n += 1);
                        if open_rx.wait_for(|open| *open).await.is_err() {
                            return;
                        }
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Ok(Self { addr, open, held, task })
    }

    /// Waits until at least `count` connections have arrived while the gate was closed.
    pub async fn held(&mut self, count: usize) {
        let _ = self.held.wait_for(|n| *n >= count).await;
    }

    /// How many connections have arrived while the gate was closed.
    pub fn held_so_far(&self) -> usize {
        *self.held.borrow()
    }

    /// Lets the held connections, and every later one, through.
    pub fn open(&self) {
        let _ = self.open.send(true);
    }
}

impl Drop for GateProxy {
    fn drop(&mut self) {
        let _ = self.open.send(true);
        self.task.abort();
    }
}
