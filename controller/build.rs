//! Records the commit the controller is built from, so a running controller can say which build it is
//! (`KEC_GIT_COMMIT` overrides it, for builds without the repository, as in a container build).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=KEC_GIT_COMMIT");
    let commit = std::env::var("KEC_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Build again when HEAD moves: `logs/HEAD` grows on every checkout and commit; HEAD itself where there is no
    // reflog. Only paths that exist: cargo takes a missing one as changed and would run this on every build.
    for file in ["logs/HEAD", "HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file])
            && Path::new(env!("CARGO_MANIFEST_DIR")).join(&path).exists()
        {
            println!("cargo:rerun-if-changed={}", Path::new(env!("CARGO_MANIFEST_DIR")).join(path).display());
        }
    }
    println!("cargo:rustc-env=KEC_GIT_COMMIT={commit}");
}
