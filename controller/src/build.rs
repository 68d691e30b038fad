//! Which build this is: the crate version, the commit it was built from, and the SHA-256 of the running
//! executable (what the test bed's image tags are made of), for the start-up log and `etcd_controller_build_info`.

use sha2::{Digest, Sha256};

/// The running build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The crate version (`0.1.0`).
    pub version: &'static str,
    /// The commit the binary was built from (12 hex digits), or `unknown`.
    pub commit: &'static str,
    /// The first 12 hex digits of the SHA-256 of the running executable, or `unknown` when it cannot be read.
    pub binary_sha256: String,
}

impl BuildInfo {
    /// This process's build; streams the executable once through SHA-256 (a few tens of milliseconds).
    pub fn current() -> Self {
        let hash = || -> std::io::Result<String> {
            let mut hasher = Sha256::new();
            std::io::copy(&mut std::fs::File::open(std::env::current_exe()?)?, &mut hasher)?;
            Ok(hex::encode(hasher.finalize())[..12].to_string())
        };
        let binary_sha256 = hash().unwrap_or_else(|_| "unknown".into());
        Self { version: env!("CARGO_PKG_VERSION"), commit: env!("KEC_GIT_COMMIT"), binary_sha256 }
    }
}
