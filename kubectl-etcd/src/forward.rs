//! A local port forwarded to a pod's port through the API server: each connection accepted on
//! `127.0.0.1:<local>` is carried by a port-forward of its own, so any HTTP client (TLS included) can use it.

use std::net::SocketAddr;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// A local listener forwarding to `port` of a pod; it and every connection it carries stop when it is dropped.
pub struct Forward {
    /// Where to connect.
    pub local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Opens a port-forward to `port` of `pod`, saying what failed (RBAC, a pod gone) in terms a person can act on.
async fn open(pods: &Api<Pod>, pod: &str, port: u16) -> anyhow::Result<kube::api::Portforwarder> {
    pods.portforward(pod, &[port]).await.with_context(|| {
        format!(
            "port-forward to pod {pod} port {port} (it needs `get` and `create` on pods/portforward in the pod's \
             namespace, and the pod running)"
        )
    })
}

impl Forward {
    /// Forwards `127.0.0.1:<a free port>` to `port` of pod `pod`, after checking that a port-forward to it opens.
    pub async fn start(pods: Api<Pod>, pod: &str, port: u16) -> anyhow::Result<Self> {
        // One opened here, so that a refusal is this call's error, not a connection closed later.
        let probe = open(&pods, pod, port).await?;
        probe.abort();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("listening on loopback")?;
        let local = listener.local_addr()?;
        let pod = pod.to_string();
        let task = tokio::spawn(async move {
            // The connections' tasks: aborted with this one when the Forward is dropped.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut local, _)) = listener.accept().await {
                let (pods, pod) = (pods.clone(), pod.clone());
                connections.spawn(async move {
                    let Ok(mut forwarder) = open(&pods, &pod, port).await else { return };
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
