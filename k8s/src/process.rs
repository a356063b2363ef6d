//! What both binaries do at start: logging, and a shutdown signal on SIGTERM/SIGINT.

use tokio::sync::watch;
use tracing::info;

/// Logs to stdout (colour only on a terminal), as JSON lines with `json`; `RUST_LOG` overrides the default level.
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init();
    }
}

/// A receiver that turns `true` on the first SIGTERM or SIGINT.
pub fn shutdown_signal() -> std::io::Result<watch::Receiver<bool>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        info!("shutting down");
        let _ = tx.send(true);
    });
    Ok(rx)
}
