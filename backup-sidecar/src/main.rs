//! Entry point of `etcd-backup-sidecar`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match backup_sidecar::cli::run(backup_sidecar::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            // A corrupt backup stays corrupt, and one the seed's version cannot run stays refused: their own exit code
            // tells the controller not to try it again.
            match error.downcast_ref() {
                Some(backup_sidecar::guard::GuardError::Refused(_)) => {
                    return std::process::ExitCode::from(proto::backup::EXIT_WRONG_VOLUME);
                }
                Some(backup_sidecar::guard::GuardError::Unusable(_)) => {
                    return std::process::ExitCode::from(proto::backup::EXIT_VOLUME_UNUSABLE);
                }
                _ => {}
            }
            match error.downcast_ref::<backup_sidecar::restore::RestoreError>() {
                Some(
                    backup_sidecar::restore::RestoreError::Corrupt { .. }
                    | backup_sidecar::restore::RestoreError::Refused { .. },
                ) => std::process::ExitCode::from(proto::backup::EXIT_CORRUPT_BACKUP),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}
