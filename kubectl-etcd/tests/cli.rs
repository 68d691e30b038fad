//! The plugin binary as kubectl runs it: its commands, and a clear error when the API server cannot be reached.
//! (On the test bed, e2e_deployed and e2e_tls run every command against real clusters.)

use std::process::Command;

fn plugin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubectl-etcd"))
}

#[test]
fn it_offers_the_four_commands() {
    let out = plugin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["status", "backups", "backup", "restore"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "{command} in:\n{help}");
    }
    let out = plugin().args(["restore", "demo", "--to", "copy"]).output().unwrap();
    assert!(!out.status.success(), "a restore names its backup");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backup"));
}

#[test]
fn an_api_server_it_cannot_reach_is_an_error_that_says_what_it_was_doing() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    \
         namespace: team\ncurrent-context: x\n",
    )
    .unwrap();
    let out = plugin().args(["status", "prod"]).env("KUBECONFIG", &kubeconfig).output().unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.starts_with("error: reading EtcdCluster team/prod"), "the context's namespace, what failed: {error}");
}
