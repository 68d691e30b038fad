//! Entry point of `etcd-controller`.

use clap::{Parser, Subcommand};

/// Managed etcd clusters on Kubernetes.
#[derive(Parser)]
#[command(name = "etcd-controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the EtcdCluster CustomResourceDefinition as YAML.
    Crd,
}

fn main() {
    match Cli::parse().command {
        Command::Crd => print!("{}", controller::crd::crd_yaml()),
    }
}
