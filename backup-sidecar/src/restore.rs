//! Restoring a snapshot file from a sidecar or from storage: download, decompress, verify, and only then put it in
//! place. This is what the restore init container of a seeded member runs.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use flate2::write::MultiGzDecoder;
use futures::StreamExt;
use futures::stream::BoxStream;
use proto::backup::{ApiErrorBody, HEADER_BACKUP_NAME, HEADER_REVISION, HEADER_SHA256, RestoreResult};
use tokio::sync::mpsc;

use crate::snapshot::{Digested, SnapshotDigest};
use crate::storage::{S3Options, Storage, StorageError};

/// Where to restore from and to.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// A sidecar's base URL (`http://host:19999`) or a storage URL (`file:///…`, `s3://…`).
    pub from: String,
    /// A backup name, or `latest`.
    pub backup: String,
    /// Where the verified snapshot goes.
    pub output: PathBuf,
    /// Bearer token for a sidecar that requires one.
    pub token: Option<String>,
    /// PEM CA bundle an `https://` sidecar's certificate must chain to; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// S3 settings when `from` is an `s3://` URL.
    pub s3: S3Options,
    /// The etcd version the restored member will run: a backup recorded from a version it cannot move from (not
    /// its minor or the one before) is refused before anything is written.
    pub seed_version: Option<String>,
}

/// Why a restore failed. In every case nothing is left at the output path.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The sidecar refused or could not be reached.
    #[error("fetching backup {backup:?} from {from}: {why}")]
    Fetch {
        /// The source.
        from: String,
        /// The backup asked for.
        backup: String,
        /// What went wrong.
        why: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The backup cannot be run by the seed's etcd version.
    #[error("backup {backup:?} was refused: {why}")]
    Refused {
        /// The backup.
        backup: String,
        /// Why.
        why: String,
    },
    /// The backup is corrupt.
    #[error("backup {backup:?} is corrupt and was refused: {why}")]
    Corrupt {
        /// The backup.
        backup: String,
        /// What did not match.
        why: String,
    },
    /// Writing the output failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Downloads, decompresses and verifies a backup, then renames it into place (fsynced). On any failure the
/// partial file is removed and nothing appears at the output path.
pub async fn restore(request: &RestoreRequest) -> Result<RestoreResult, RestoreError> {
    let Source { name, revision, sha256: expected, etcd_version, stream } = open_source(request).await?;
    if let (Some(seed), Some(recorded)) = (request.seed_version.as_deref(), etcd_version.as_deref())
        && let Some(why) = seed_refusal(recorded, seed)
    {
        return Err(RestoreError::Refused { backup: name, why });
    }
    let output = request.output.clone();
    let partial = partial_path(&output);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RestoreError::Io { path, source }
    };
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let file = File::create(&partial).map_err(io(&partial))?;
    let result = unpack(stream, file, &request.from, &name).await;
    let verified = result.and_then(|Digested { sha256, size, trailer_ok }| {
        if sha256 != expected {
            return Err(RestoreError::Corrupt {
                backup: name.clone(),
                why: format!("SHA-256 of the snapshot is {sha256}, the backup's manifest says {expected}"),
            });
        }
        if trailer_ok != Some(true) {
            return Err(RestoreError::Corrupt {
                backup: name.clone(),
                why: "etcd's SHA-256 trailer does not match the database".into(),
            });
        }
        Ok((sha256, size))
    });
    let (sha256, size) = match verified {
        Ok(ok) => ok,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::rename(&partial, &output).map_err(io(&output))?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent).and_then(|dir| dir.sync_all()).map_err(io(parent))?;
    }
    Ok(RestoreResult { backup: name, revision, sha256, size })
}

type ByteStream = BoxStream<'static, Result<Bytes, String>>;

/// A backup being downloaded.
struct Source {
    /// Its name (`latest` resolved).
    name: String,
    /// The revision it holds; 0 when a sidecar did not say.
    revision: i64,
    /// The SHA-256 the snapshot must have.
    sha256: String,
    /// The etcd version it was taken from, where the source says (storage manifests do).
    etcd_version: Option<String>,
    /// Its compressed bytes.
    stream: ByteStream,
}

/// Why a seed running etcd `seed` must not restore a backup taken from etcd `recorded`, if it must not.
fn seed_refusal(recorded: &str, seed: &str) -> Option<String> {
    let (own, next) = proto::backup::seed_minors(recorded)?;
    let seed_minor: u32 = seed.trim_start_matches('v').split('.').nth(1)?.parse().ok()?;
    (seed_minor != own && seed_minor != next).then(|| {
        format!(
            "it was taken from etcd {recorded}, and the seed runs etcd {seed}, which cannot run its data (etcd moves \
             one minor at a time and never below the version that wrote it): set spec.version to 3.{own}.x or \
             3.{next}.x"
        )
    })
}

async fn open_source(request: &RestoreRequest) -> Result<Source, RestoreError> {
    if request.from.starts_with("http://") || request.from.starts_with("https://") {
        let fetch_error =
            |why: String| RestoreError::Fetch { from: request.from.clone(), backup: request.backup.clone(), why };
        let url = format!("{}/v1/backups/{}", request.from.trim_end_matches('/'), request.backup);
        let mut http = reqwest::Client::builder();
        if request.ca.is_some() && !request.from.starts_with("https://") {
            return Err(fetch_error("a CA bundle is given for a sidecar reached over plain HTTP: use https://".into()));
        }
        if let Some(ca) = &request.ca {
            let roots = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| fetch_error(format!("the CA bundle cannot be read: {e}")))?;
            http = http.tls_certs_only(roots);
        }
        let http = http.build().map_err(|e| fetch_error(format!("building an HTTP client: {e}")))?;
        let mut get = http.get(&url);
        if let Some(token) = &request.token {
            get = get.bearer_auth(token);
        }
        let response = get.send().await.map_err(|e| fetch_error(chain(&e)))?;
        if !response.status().is_success() {
            let status = response.status();
            let detail = match response.json::<ApiErrorBody>().await {
                Ok(body) => body.detail,
                Err(_) => String::new(),
            };
            return Err(fetch_error(format!("{status} {detail}")));
        }
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let expected =
            header(HEADER_SHA256).ok_or_else(|| fetch_error(format!("the response has no {HEADER_SHA256} header")))?;
        let name = header(HEADER_BACKUP_NAME).unwrap_or_else(|| request.backup.clone());
        let revision = header(HEADER_REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
        let stream = response.bytes_stream().map(|chunk| chunk.map_err(|e| e.to_string())).boxed();
        Ok(Source { name, revision, sha256: expected, etcd_version: None, stream })
    } else {
        let storage = Storage::open(&request.from, &request.s3)?;
        let manifest = storage.manifest(&request.backup).await?;
        let stream = storage.data(&manifest).await?.map(|chunk| chunk.map_err(|e| e.to_string())).boxed();
        let info = manifest.info;
        let etcd_version = Some(info.etcd_version).filter(|v| !v.is_empty());
        Ok(Source { name: info.name, revision: info.revision, sha256: info.sha256, etcd_version, stream })
    }
}

/// Streams compressed chunks through gunzip and SHA-256 into `file` on a blocking thread, then fsyncs it.
async fn unpack(mut stream: ByteStream, file: File, from: &str, name: &str) -> Result<Digested, RestoreError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        let mut decoder = MultiGzDecoder::new(HashingWriter { file, digest: SnapshotDigest::default() });
        while let Some(chunk) = rx.blocking_recv() {
            decoder.write_all(&chunk)?;
        }
        let out = decoder.finish()?;
        out.file.sync_all()?;
        Ok::<_, std::io::Error>(out.digest.finish())
    });
    let mut download_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                download_error = Some(error);
                break;
            }
        }
    }
    drop(tx);
    let unpacked = writer.await.expect("the unpacking thread does not panic");
    if let Some(why) = download_error {
        return Err(RestoreError::Fetch { from: from.to_string(), backup: name.to_string(), why });
    }
    unpacked.map_err(|e| unpack_error(name, e))
}

/// A failed unpack is a corrupt backup only when the gzip stream itself is bad; a full disk, an I/O error or a
/// quota while writing the output is a plain failure (the backup is fine, and a retry elsewhere may work).
fn unpack_error(name: &str, error: std::io::Error) -> RestoreError {
    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
    if matches!(error.kind(), InvalidData | InvalidInput | UnexpectedEof) {
        RestoreError::Corrupt { backup: name.to_string(), why: format!("gzip stream: {error}") }
    } else {
        RestoreError::Io { path: format!("the snapshot of backup {name}"), source: error }
    }
}

struct HashingWriter {
    file: File,
    digest: SnapshotDigest,
}

impl Write for HashingWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(data)?;
        self.digest.update(&data[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn partial_path(output: &Path) -> PathBuf {
    let file_name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "snapshot".into());
    output.with_file_name(format!(".{file_name}.partial-{}", std::process::id()))
}

/// An error with its causes, as a person needs them (a TLS failure is in a cause, not in reqwest's message).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_no_corrupt_backup_but_a_bad_gzip_stream_is() {
        let full = unpack_error("b1", std::io::Error::from_raw_os_error(28));
        assert!(matches!(full, RestoreError::Io { .. }), "ENOSPC: {full}");
        let eio = unpack_error("b1", std::io::Error::from_raw_os_error(5));
        assert!(matches!(eio, RestoreError::Io { .. }), "EIO: {eio}");
        let bad = unpack_error("b1", std::io::Error::new(std::io::ErrorKind::InvalidInput, "corrupt deflate stream"));
        assert!(matches!(bad, RestoreError::Corrupt { .. }), "{bad}");
        let short = unpack_error("b1", std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(matches!(short, RestoreError::Corrupt { .. }), "{short}");
    }
}
