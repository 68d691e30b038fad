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
    /// Watch EtcdClusters and manage their members.
    Run(Box<controller::run::RunArgs>),
    /// Print the EtcdCluster CustomResourceDefinition as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => controller::run::run(*args).await,
        Command::Crd => {
            print!("{}", controller::crd::crd_yaml());
            Ok(())
        }
    }
}
