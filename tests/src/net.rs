//! Free loopback ports and waiting for servers to come up.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago (the OS picked it for a listener we closed again).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections at `addr`, or fails after `timeout`.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
