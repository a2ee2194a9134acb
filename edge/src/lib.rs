//! The Aura CRM edge: a thin HTTP front for the `pg_crm` extension.
//!
//! All business rules, permissions and tenant isolation live in PostgreSQL (RLS policies and
//! the `api` functions), so they hold for every client, including a DBA at `psql`. The edge
//! only does what the database cannot: it verifies JWTs, and for each request opens one
//! transaction on a pooled `authenticator` connection, switches to `authenticated` with
//! `SET LOCAL ROLE`, hands the verified claims and tenant to `crm_private.begin_request` (the
//! one gate that checks session, membership and tenant live), calls one `api` function and
//! commits. Everything it sets is transaction-local, so pooled connections never carry one
//! request's identity into the next.
//!
//! Modules: [`config`] (environment), [`server`] (connections: timeouts, the cap),
//! [`jwt`] (token verification, JWKS reload), [`catalog`] (which `api` functions exist, and
//! the OpenAPI document), [`rpc`] (HTTP call → SQL statement), [`db`] (pool, per-request
//! transaction, cancel on disconnect), [`fairness`] (each tenant's share of the pool),
//! [`pgtls`] (TLS to PostgreSQL), [`error`] (the one error type and its HTTP mapping),
//! [`http`] (routes and the request log), [`auth`] (the Supabase Auth compatible `/auth/v1`),
//! [`mail`] (the email outbox sender).

pub mod auth;
pub mod catalog;
pub mod config;
pub mod csv;
pub mod db;
pub mod error;
pub mod export;
pub mod fairness;
pub mod http;
pub mod import;
pub mod jwt;
pub mod mail;
pub mod pgtls;
pub mod ratelimit;
pub mod rpc;
pub mod server;
pub mod zip;

use std::future::Future;
use std::sync::Arc;

pub use config::{AuthConfig, Config, ConfigError, HttpLimits, JwksSource, JwtConfig};
pub use error::Error;

/// Serves the edge on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// Fails only on invalid configuration or a listener error; a database that is down at startup
/// is not an error (requests get 503 until it is back).
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let verifier = jwt::Verifier::new(&config.jwt)?;
    let db = db::Database::new(&config)?;
    // A JWKS from a file or URL: fetched before serving when it is a URL, then read again
    // periodically (and on unknown key ids, see `jwt`).
    let jwks_refresh = match verifier.reloadable_jwks() {
        Some(jwks) => {
            if matches!(config.jwt.jwks, Some(JwksSource::Url(_))) {
                if let Err(e) = jwks.reload().await {
                    tracing::error!(error = %e, "could not load the JWKS; retrying periodically");
                }
            }
            Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(jwks.refresh_interval()).await;
                    if let Err(e) = jwks.reload().await {
                        tracing::warn!(error = %e, "JWKS reload failed; keeping the keys held");
                    }
                }
            }))
        }
        None => None,
    };
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        pool_size = config.pool_size,
        tenant_max_connections = config.tenant_max_connections(),
        sslmode = %db.ssl_mode(),
        max_connections = config.http.max_connections,
        "aura-edge listening"
    );
    let signer = auth::Signer::new(&config.jwt, &config.auth)?;
    let issues_tokens = signer.is_some();
    let limiter = Arc::new(ratelimit::RateLimiter::new(config.rate_limit));
    let state = Arc::new(http::AppState::new(
        verifier,
        db,
        config.http.clone(),
        signer,
        config.auth.cors_origins.clone(),
        limiter.clone(),
    ));
    let rate_sync = tokio::spawn(ratelimit::run(
        limiter,
        state.clone(),
        config.rate_limit_sync,
    ));
    // The outbox sender runs where the auth service does.
    let sender = issues_tokens.then(|| tokio::spawn(mail::run(state.clone(), config.auth.clone())));
    let served = server::run(listener, http::router(state), config.http, shutdown).await;
    rate_sync.abort();
    if let Some(task) = jwks_refresh {
        task.abort();
    }
    if let Some(task) = sender {
        task.abort();
    }
    served?;
    tracing::info!("aura-edge stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One raw HTTP/1.1 exchange; returns the status line and the rest.
    async fn request(addr: std::net::SocketAddr, head: &str, body: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let message = format!(
            "{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(message.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (status, rest) = response.split_once("\r\n").unwrap_or_default();
        (status.to_owned(), rest.to_owned())
    }

    #[tokio::test]
    async fn serves_without_a_database_and_shuts_down() {
        // Port 1 on loopback refuses connections: the database is "down".
        let config = crate::Config::new(
            "postgresql://authenticator:pw@127.0.0.1:1/aura",
            crate::JwtConfig::hs256("0123456789abcdef0123456789abcdef"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(config, listener, async {
            let _ = stopped.await;
        }));

        let (status, rest) = request(addr, "GET /health HTTP/1.1", "").await;
        assert!(status.ends_with("200 OK"), "{status}");
        assert!(rest.to_ascii_lowercase().contains("x-request-id: "));
        let (status, rest) = request(addr, "POST /rest/v1/rpc/whoami HTTP/1.1", "{}").await;
        assert!(status.ends_with("401 Unauthorized"), "{status}");
        assert!(
            rest.contains("PGRST302")
                && rest
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer")
        );
        let (status, rest) = request(addr, "GET /ready HTTP/1.1", "").await;
        assert!(status.ends_with("503 Service Unavailable"), "{status}");
        assert!(rest.to_ascii_lowercase().contains("retry-after: 5"));
        let (status, rest) = request(addr, "GET /rest/v1/ HTTP/1.1", "").await;
        assert!(
            status.ends_with("503 Service Unavailable") && rest.contains("PGRST001"),
            "{status}"
        );
        let (status, _) = request(addr, "GET /elsewhere HTTP/1.1", "").await;
        assert!(status.ends_with("404 Not Found"), "{status}");

        let _ = stop.send(());
        assert!(matches!(server.await, Ok(Ok(()))));
    }
}
