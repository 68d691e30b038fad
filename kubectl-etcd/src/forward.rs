//! A local port forwarded to a pod's port through the API server: each connection accepted on
//! `127.0.0.1:<local>` is carried by a port-forward of its own, so any HTTP client (TLS included) can use it.

use std::net::SocketAddr;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// A local listener forwarding to `port` of a pod; it stops when dropped.
pub struct Forward {
    /// Where to connect.
    pub local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Forward {
    /// Forwards `127.0.0.1:<a free port>` to `port` of pod `pod`.
    pub async fn start(pods: Api<Pod>, pod: &str, port: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("listening on loopback")?;
        let local = listener.local_addr()?;
        let pod = pod.to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut local, _)) = listener.accept().await {
                let (pods, pod) = (pods.clone(), pod.clone());
                tokio::spawn(async move {
                    let mut forwarder = match pods.portforward(&pod, &[port]).await {
                        Ok(forwarder) => forwarder,
                        Err(error) => {
                            eprintln!("warning: port-forward to pod {pod} port {port}: {error}");
                            return;
                        }
                    };
                    let Some(mut remote) = forwarder.take_stream(port) else { return };
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                    drop(remote);
                    let _ = forwarder.join().await;
                });
            }
        });
        Ok(Self { local, task })
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}
