//! The backup pipeline: etcd's snapshot stream -> SHA-256 -> gzip -> storage writer, with bounded buffers.
//!
//! The snapshot is never held in memory whole: etcd chunks flow through a small channel into a blocking thread
//! that hashes and compresses them, and compressed chunks flow through another into the storage writer, so the
//! network receive, the compression and the upload run side by side on separate cores.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::storage::{StorageError, Upload};

/// Length of the SHA-256 trailer etcd appends to every snapshot stream.
pub const TRAILER_LEN: usize = 32;
/// Size of the raw blocks compressed in parallel, each into its own gzip member.
const BLOCK: usize = 2 * 1024 * 1024;
/// How many etcd chunks (32 KiB each) may wait for the hashing thread.
const RAW_DEPTH: usize = 64;
/// How many compressed blocks may wait for the storage writer.
const GZ_DEPTH: usize = 2;

/// Why a snapshot could not be streamed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// etcd refused or broke the snapshot stream.
    #[error("etcd snapshot stream from {endpoint}: {source}")]
    Etcd {
        /// The member streamed from.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd sent nothing for too long.
    #[error("etcd snapshot stream from {endpoint} stalled for {idle:?}")]
    Stalled {
        /// The member streamed from.
        endpoint: String,
        /// How long nothing arrived.
        idle: Duration,
    },
    /// The stream ended before etcd said it was complete, or its SHA-256 trailer does not match its content.
    #[error("snapshot from {endpoint} is not intact: {why}")]
    Incomplete {
        /// The member streamed from.
        endpoint: String,
        /// What was wrong.
        why: String,
    },
    /// Writing to storage failed.
    #[error("writing the snapshot to storage: {0}")]
    Write(#[source] StorageError),
    /// Compressing failed (the compressor thread could not hand on its output).
    #[error("compressing the snapshot: {0}")]
    Compress(#[source] std::io::Error),
}

/// What a complete, verified snapshot stream produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    /// Bytes received from etcd (database plus trailer).
    pub raw_size: u64,
    /// Bytes written to storage.
    pub compressed_size: u64,
    /// Hex SHA-256 of all bytes received.
    pub sha256: String,
}

/// Streams a snapshot from `client` (connected to the single member `endpoint`) into `out`, verifying etcd's
/// trailer. On error nothing is finished on `out`: the caller aborts it. On success the caller still has to
/// finish `out`.
pub async fn stream_snapshot(
    client: &mut etcd_client::Client,
    endpoint: &str,
    out: &mut Upload,
    idle_timeout: Duration,
) -> Result<Streamed, SnapshotError> {
    let etcd_err = |source| SnapshotError::Etcd { endpoint: endpoint.to_string(), source };
    let mut stream = client.snapshot().await.map_err(etcd_err)?;
    let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(RAW_DEPTH);
    let (gz_tx, mut gz_rx) = mpsc::channel::<Bytes>(GZ_DEPTH);
    let compressor = tokio::task::spawn_blocking(move || compress(raw_rx, gz_tx));

    let receive = async move {
        let mut finished = false;
        loop {
            let message = tokio::time::timeout(idle_timeout, stream.message())
                .await
                .map_err(|_| SnapshotError::Stalled { endpoint: endpoint.to_string(), idle: idle_timeout })?
                .map_err(etcd_err)?;
            let Some(message) = message else { break };
            finished = message.remaining_bytes() == 0;
            if raw_tx.send(Bytes::copy_from_slice(message.blob())).await.is_err() {
                // The compressor stopped; its own error says why.
                break;
            }
        }
        Ok::<bool, SnapshotError>(finished)
    };
    let write = async {
        let mut written = 0u64;
        while let Some(chunk) = gz_rx.recv().await {
            written += chunk.len() as u64;
            out.put(chunk).await.map_err(SnapshotError::Write)?;
        }
        Ok::<u64, SnapshotError>(written)
    };
    let (received, written) = tokio::join!(receive, write);
    // The writer may have failed, which made the compressor fail; report the root cause first.
    let written = written?;
    let finished = received?;
    let digest = compressor.await.expect("the compressor thread does not panic").map_err(SnapshotError::Compress)?;
    let incomplete = |why: String| SnapshotError::Incomplete { endpoint: endpoint.to_string(), why };
    if !finished {
        return Err(incomplete(format!("the stream ended after {} bytes with bytes still to come", digest.size)));
    }
    if digest.size < TRAILER_LEN as u64 || !(digest.size - TRAILER_LEN as u64).is_multiple_of(512) {
        return Err(incomplete(format!("{} bytes is not a bolt database plus a 32-byte trailer", digest.size)));
    }
    if digest.trailer_ok.is_none_or(|ok| !ok) {
        return Err(incomplete("the SHA-256 trailer does not match the database".to_string()));
    }
    Ok(Streamed { raw_size: digest.size, compressed_size: written, sha256: digest.sha256 })
}

/// Runs on a blocking thread: hashes every chunk until the sender closes, and gzips the stream in blocks on
/// several threads at once (each block an independent gzip member, written in order: a multi-member gzip file
/// that `gunzip` and [`flate2::write::MultiGzDecoder`] read as one stream). At most `workers` blocks are in
/// flight, so memory stays bounded.
fn compress(mut raw_rx: mpsc::Receiver<Bytes>, gz_tx: mpsc::Sender<Bytes>) -> std::io::Result<Digested> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let mut digest = SnapshotDigest::default();
    let mut block = Vec::with_capacity(BLOCK);
    let mut in_flight = VecDeque::new();
    let send = |compressed: Vec<u8>| {
        gz_tx
            .blocking_send(Bytes::from(compressed))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the storage writer stopped"))
    };
    let dispatch = |block: Vec<u8>, in_flight: &mut VecDeque<std::thread::JoinHandle<std::io::Result<Vec<u8>>>>| {
        if in_flight.len() >= workers {
            let oldest = in_flight.pop_front().expect("in flight is not empty");
            send(oldest.join().expect("a compressor thread does not panic")?)?;
        }
        in_flight.push_back(std::thread::spawn(move || gzip_block(&block)));
        Ok::<(), std::io::Error>(())
    };
    while let Some(chunk) = raw_rx.blocking_recv() {
        digest.update(&chunk);
        block.extend_from_slice(&chunk);
        if block.len() >= BLOCK {
            dispatch(std::mem::replace(&mut block, Vec::with_capacity(BLOCK)), &mut in_flight)?;
        }
    }
    if !block.is_empty() || digest.size == 0 {
        dispatch(block, &mut in_flight)?;
    }
    for pending in in_flight {
        send(pending.join().expect("a compressor thread does not panic")?)?;
    }
    Ok(digest.finish())
}

fn gzip_block(block: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(block.len() / 2), Compression::fast());
    encoder.write_all(block)?;
    encoder.finish()
}

/// The SHA-256 of a snapshot stream and the check of etcd's trailer, in one hashing pass: every byte but the
/// last 32 seen so far is hashed, so at the end the hash state is that of the database alone (to compare with
/// the held-back trailer), and feeding it the trailer too gives the hash of the whole stream.
#[derive(Default)]
pub struct SnapshotDigest {
    hasher: Sha256,
    held: Vec<u8>,
    size: u64,
}

/// What [`SnapshotDigest`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digested {
    /// Hex SHA-256 of every byte (database and trailer).
    pub sha256: String,
    /// Bytes seen.
    pub size: u64,
    /// `Some(true)` when the last 32 bytes are the SHA-256 of everything before them; `None` when the stream was
    /// shorter than a trailer.
    pub trailer_ok: Option<bool>,
}

impl SnapshotDigest {
    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        if chunk.len() >= TRAILER_LEN {
            // Everything held and all but the chunk's last 32 bytes can no longer be the trailer.
            self.hasher.update(&self.held);
            let (body, tail) = chunk.split_at(chunk.len() - TRAILER_LEN);
            self.hasher.update(body);
            self.held.clear();
            self.held.extend_from_slice(tail);
        } else {
            self.held.extend_from_slice(chunk);
            if self.held.len() > TRAILER_LEN {
                let release = self.held.len() - TRAILER_LEN;
                self.hasher.update(&self.held[..release]);
                self.held.drain(..release);
            }
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digested {
        let trailer_ok =
            (self.held.len() == TRAILER_LEN).then(|| self.hasher.clone().finalize().as_slice() == self.held.as_slice());
        let mut hasher = self.hasher;
        hasher.update(&self.held);
        Digested { sha256: hex::encode(hasher.finalize()), size: self.size, trailer_ok }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_trailer(body: &[u8]) -> Vec<u8> {
        let mut all = body.to_vec();
        all.extend_from_slice(&Sha256::digest(body));
        all
    }

    fn digest(chunks: impl IntoIterator<Item = Vec<u8>>) -> Digested {
        let mut digest = SnapshotDigest::default();
        chunks.into_iter().for_each(|c| digest.update(&c));
        digest.finish()
    }

    #[test]
    fn an_intact_stream_passes_in_any_chunking_and_hashes_whole() {
        let body: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let stream = with_trailer(&body);
        let whole = hex::encode(Sha256::digest(&stream));
        for size in [1, 5, 31, 32, 33, 1000, 5000] {
            let found = digest(stream.chunks(size).map(<[u8]>::to_vec));
            assert_eq!(found.trailer_ok, Some(true), "chunk size {size}");
            assert_eq!(found.sha256, whole, "chunk size {size}");
            assert_eq!(found.size, stream.len() as u64);
        }
        // Uneven chunks, short ones after long ones.
        let mixed =
            vec![stream[..40].to_vec(), stream[40..45].to_vec(), stream[45..4000].to_vec(), stream[4000..].to_vec()];
        assert_eq!(digest(mixed).trailer_ok, Some(true));
    }

    #[test]
    fn truncated_or_altered_streams_fail_the_trailer_check() {
        let stream = with_trailer(&[7u8; 4096]);
        assert_eq!(digest([stream[..stream.len() - 1].to_vec()]).trailer_ok, Some(false));
        let mut flipped = stream.clone();
        flipped[100] ^= 1;
        assert_eq!(digest([flipped]).trailer_ok, Some(false));
        assert_eq!(digest([vec![1, 2, 3]]).trailer_ok, None);
    }
}
