//! Where backups live: one abstraction over object_store for `file:///path` (a mounted PVC) and `s3://bucket/prefix`.
//!
//! Layout under the prefix: `<name>.db.gz` (the compressed snapshot) and `<name>.json` (its manifest, written
//! last). A snapshot object without a manifest is an incomplete backup: never listed, removed by [`Storage::cleanup`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use proto::backup::{BackupInfo, BackupManifest, MANIFEST_FORMAT};
use url::Url;

/// Suffix of a compressed snapshot object.
pub const DATA_SUFFIX: &str = ".db.gz";
/// Suffix of a manifest object.
pub const MANIFEST_SUFFIX: &str = ".json";

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL cannot be used.
    #[error("invalid storage URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL as given (credentials removed).
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The object store failed.
    #[error("storage {op} {path}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The object concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A manifest could not be parsed.
    #[error("manifest {path} is unreadable: {why}")]
    BadManifest {
        /// The manifest object.
        path: String,
        /// Why it was refused.
        why: String,
    },
    /// No such backup.
    #[error("no backup named {0:?}")]
    NotFound(String),
}

impl StorageError {
    fn store(op: &'static str, path: &Path, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } if op == "get" => Self::NotFound(path.to_string()),
            source => Self::Store { op, path: path.to_string(), source },
        }
    }
}

/// S3 settings given on the command line; anything unset falls back to the usual `AWS_*` environment variables.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server, e.g. `http://minio:9000`.
    pub endpoint: Option<String>,
    /// Region; S3-compatible servers usually accept any.
    pub region: Option<String>,
    /// Access key ID.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain-http endpoints.
    pub allow_http: bool,
}

/// A backup store: the object store, the prefix inside it, and a printable URL without credentials.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    display: String,
}

/// A published backup as found in storage.
#[derive(Clone, Debug)]
pub struct StoredBackup {
    /// The manifest.
    pub manifest: BackupManifest,
}

impl Storage {
    /// Opens the storage a URL names: `file:///abs/path` or `s3://bucket[/prefix]`.
    pub fn open(raw: &str, s3: &S3Options) -> Result<Self, StorageError> {
        let url = Url::parse(raw).map_err(|e| StorageError::InvalidUrl { url: redact(raw), why: e.to_string() })?;
        let invalid = |why: &str| StorageError::InvalidUrl { url: redact(raw), why: why.to_string() };
        match url.scheme() {
            "file" => {
                let dir = url.to_file_path().map_err(|()| invalid("not an absolute local path"))?;
                std::fs::create_dir_all(&dir).map_err(|e| invalid(&format!("cannot create {}: {e}", dir.display())))?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| invalid(&e.to_string()))?
                    .with_automatic_cleanup(true);
                Ok(Self {
                    store: Arc::new(store),
                    prefix: Path::default(),
                    display: format!("file://{}", dir.display()),
                })
            }
            "s3" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| invalid("no bucket"))?;
                let prefix = url.path().trim_matches('/');
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(10))
                        .with_timeout(Duration::from_secs(300)),
                );
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                    // A custom endpoint is almost always an S3-compatible server that wants path-style requests.
                    builder = builder.with_virtual_hosted_style_request(false);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                } else if builder.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
                    builder = builder.with_region("us-east-1");
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                if s3.allow_http {
                    builder = builder.with_allow_http(true);
                }
                let store = builder.build().map_err(|e| invalid(&e.to_string()))?;
                let display = match &s3.endpoint {
                    Some(endpoint) => {
                        format!("s3://{bucket}/{prefix} (endpoint {})", redact(endpoint))
                    }
                    None => format!("s3://{bucket}/{prefix}"),
                };
                Ok(Self { store: Arc::new(store), prefix: Path::from(prefix), display })
            }
            other => Err(invalid(&format!("unsupported scheme {other:?}; use file:// or s3://"))),
        }
    }

    /// The storage URL without credentials, for status and logs.
    pub fn display_url(&self) -> &str {
        &self.display
    }

    fn path(&self, key: &str) -> Path {
        self.prefix.clone().join(key)
    }

    /// Key of the compressed snapshot of backup `name`, relative to the prefix.
    pub fn data_key(name: &str) -> String {
        format!("{name}{DATA_SUFFIX}")
    }

    /// Starts the multipart upload of the compressed snapshot of backup `name`. Memory stays bounded: one
    /// part being filled plus at most `concurrency` parts in flight, each `part_size` bytes.
    pub async fn upload(&self, name: &str, part_size: usize, concurrency: usize) -> Result<Upload, StorageError> {
        let path = self.path(&Self::data_key(name));
        let upload = self.store.put_multipart(&path).await.map_err(|e| StorageError::store("upload", &path, e))?;
        Ok(Upload { inner: WriteMultipart::new_with_chunk_size(upload, part_size), concurrency, path })
    }

    /// Size of an object, if it exists.
    pub async fn object_size(&self, key: &str) -> Result<u64, StorageError> {
        let path = self.path(key);
        let meta = self.store.head(&path).await.map_err(|e| StorageError::store("head", &path, e))?;
        Ok(meta.size)
    }

    /// Publishes a backup by writing its manifest.
    pub async fn publish(&self, manifest: &BackupManifest) -> Result<(), StorageError> {
        let path = self.path(&format!("{}{MANIFEST_SUFFIX}", manifest.info.name));
        let body = serde_json::to_vec_pretty(manifest).expect("a manifest always serializes");
        self.store.put(&path, PutPayload::from(body)).await.map_err(|e| StorageError::store("put", &path, e))?;
        Ok(())
    }

    /// Every published backup, newest first. A manifest whose snapshot object is missing or has another size is
    /// not a backup and is left out (with a warning).
    pub async fn list(&self) -> Result<Vec<BackupManifest>, StorageError> {
        let objects = self.list_objects().await?;
        let sizes: HashMap<String, u64> = objects.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
        let mut manifests = Vec::new();
        for (key, _, _) in objects.iter().filter(|(k, _, _)| k.ends_with(MANIFEST_SUFFIX)) {
            let manifest = match self.read_manifest_key(key).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable manifest");
                    continue;
                }
            };
            match sizes.get(&manifest.object) {
                Some(size) if *size == manifest.info.compressed_size => manifests.push(manifest),
                Some(size) => tracing::warn!(
                    backup = %manifest.info.name, expected = manifest.info.compressed_size, found = size,
                    "skipping backup whose snapshot object has the wrong size"
                ),
                None => {
                    tracing::warn!(backup = %manifest.info.name, "skipping backup whose snapshot object is missing")
                }
            }
        }
        sort_newest_first(&mut manifests);
        Ok(manifests)
    }

    /// The manifest of backup `name` (`latest` names the newest).
    pub async fn manifest(&self, name: &str) -> Result<BackupManifest, StorageError> {
        if name == "latest" {
            return self.list().await?.into_iter().next().ok_or_else(|| StorageError::NotFound(name.to_string()));
        }
        if !valid_name(name) {
            return Err(StorageError::NotFound(name.to_string()));
        }
        let manifest = self.read_manifest_key(&format!("{name}{MANIFEST_SUFFIX}")).await?;
        // A manifest whose object is absent or of another size is not a published backup.
        let size = self.object_size(&manifest.object).await.map_err(|_| StorageError::NotFound(name.to_string()))?;
        if size != manifest.info.compressed_size {
            return Err(StorageError::NotFound(name.to_string()));
        }
        Ok(manifest)
    }

    /// The compressed snapshot of a published backup, as a stream of chunks.
    pub async fn data(
        &self,
        manifest: &BackupManifest,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let path = self.path(&manifest.object);
        let result = self.store.get(&path).await.map_err(|e| StorageError::store("get", &path, e))?;
        let shown = path.to_string();
        Ok(result
            .into_stream()
            .map_err(move |e| StorageError::Store { op: "read", path: shown.clone(), source: e })
            .boxed())
    }

    /// Deletes a backup: its manifest first (so it stops being listed), then its snapshot object.
    pub async fn delete(&self, manifest: &BackupManifest) -> Result<(), StorageError> {
        let manifest_path = self.path(&format!("{}{MANIFEST_SUFFIX}", manifest.info.name));
        self.store.delete(&manifest_path).await.map_err(|e| StorageError::store("delete", &manifest_path, e))?;
        let data_path = self.path(&manifest.object);
        match self.store.delete(&data_path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::store("delete", &data_path, e)),
        }
    }

    /// Removes snapshot objects that never got a manifest (uploads that died) and are older than `grace`, so that
    /// an upload in progress elsewhere is left alone. Returns the removed keys.
    pub async fn cleanup(&self, grace: chrono::Duration) -> Result<Vec<String>, StorageError> {
        let objects = self.list_objects().await?;
        let published: std::collections::HashSet<String> =
            objects.iter().filter_map(|(k, _, _)| k.strip_suffix(MANIFEST_SUFFIX).map(Self::data_key)).collect();
        let cutoff = Utc::now() - grace;
        let mut removed = Vec::new();
        for (key, _, modified) in objects {
            if key.ends_with(DATA_SUFFIX) && !published.contains(&key) && modified < cutoff {
                let path = self.path(&key);
                self.store.delete(&path).await.map_err(|e| StorageError::store("delete", &path, e))?;
                removed.push(key);
            }
        }
        Ok(removed)
    }

    async fn read_manifest_key(&self, key: &str) -> Result<BackupManifest, StorageError> {
        let path = self.path(key);
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(|e| StorageError::store("get", &path, e))?
            .bytes()
            .await
            .map_err(|e| StorageError::store("read", &path, e))?;
        let manifest: BackupManifest = serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::BadManifest { path: path.to_string(), why: e.to_string() })?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(StorageError::BadManifest {
                path: path.to_string(),
                why: format!("format {} is newer than this build understands ({MANIFEST_FORMAT})", manifest.format),
            });
        }
        Ok(manifest)
    }

    /// `(key relative to prefix, size, last modified)` of every object directly under the prefix.
    async fn list_objects(&self) -> Result<Vec<(String, u64, DateTime<Utc>)>, StorageError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listing =
            self.store.list_with_delimiter(prefix).await.map_err(|e| StorageError::store("list", &self.prefix, e))?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|meta| {
                let key = meta.location.filename()?.to_string();
                Some((key, meta.size, meta.last_modified))
            })
            .collect())
    }
}

/// An upload in progress. Dropped without [`Upload::finish`], the object never appears (the store's own
/// staging area or an S3 multipart upload holds the parts; [`Upload::abort`] removes them at once).
pub struct Upload {
    inner: WriteMultipart,
    concurrency: usize,
    path: Path,
}

impl Upload {
    /// Appends bytes, waiting while too many parts are in flight.
    pub async fn put(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        self.inner
            .wait_for_capacity(self.concurrency)
            .await
            .map_err(|e| StorageError::store("upload", &self.path, e))?;
        self.inner.put(bytes);
        Ok(())
    }

    /// Uploads what is left and completes the object. On failure the upload is aborted.
    pub async fn finish(self) -> Result<(), StorageError> {
        let path = self.path;
        self.inner.finish().await.map(|_| ()).map_err(|e| StorageError::store("upload", &path, e))
    }

    /// Gives the upload up, removing its parts.
    pub async fn abort(self) -> Result<(), StorageError> {
        let path = self.path;
        self.inner.abort().await.map_err(|e| StorageError::store("abort", &path, e))
    }
}

/// Orders backups newest first on parsed values (finish time, then revision), never on names.
pub fn sort_newest_first(manifests: &mut [BackupManifest]) {
    manifests.sort_by_key(|m| std::cmp::Reverse((m.info.finished_at, m.info.revision)));
}

/// Whether `name` can be a backup name: it becomes part of object keys and URLs.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// The manifest of a new backup.
pub fn manifest_for(info: BackupInfo) -> BackupManifest {
    BackupManifest { format: MANIFEST_FORMAT, object: Storage::data_key(&info.name), info }
}

/// Removes user info (credentials) from a URL for display.
pub fn redact(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => raw.to_string(),
        Err(_) => "<unparseable URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_prefix_are_refused() {
        assert!(valid_name("c-20260101T000000Z-r5"));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("http://user:pw@minio:9000"), "http://minio:9000/");
        assert_eq!(redact("s3://bucket/prefix"), "s3://bucket/prefix");
    }

    #[test]
    fn unknown_schemes_are_refused_with_a_clear_message() {
        let err = Storage::open("ftp://x/y", &S3Options::default()).unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
    }
}
