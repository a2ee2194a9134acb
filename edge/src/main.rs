//! `aura-edge`: reads its configuration from `AURA_*` variables (see [`edge::Config`]), logs
//! JSON lines to stdout and serves until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match edge::Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("aura-edge: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = match EnvFilter::try_new(&config.log_filter) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("aura-edge: configuration error: AURA_LOG: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_current_span(false)
        .init();

    // One connection attempt up front, so a wrong password or TLS setting shows in the log
    // at once, with its cause, rather than later as 503s. Not fatal: the database may come
    // up after the edge.
    match edge::db::probe(&config).await {
        Ok(()) => tracing::info!("database reachable"),
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the database yet; requests get 503 until it answers")
        }
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match edge::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "aura-edge failed");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
