//! Routes, handlers and the request log.
//!
//! Handlers stay thin: authenticate, pick the catalog function, hand one statement to
//! [`crate::db::run_call`]. The request log is one JSON line per request written by a
//! middleware, which learns the function and tenant from a [`RequestInfo`] response extension
//! so that nothing else (tokens, bodies, query strings, emails) can end up in it.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde_json::json;
use uuid::Uuid;

use crate::catalog::{Catalog, Function, Volatility};
use crate::error::{Error, InternalDetail};
use crate::jwt::{Verified, Verifier};
use crate::{db, rpc};

/// How often at most an unknown function name triggers a catalog reload.
const CATALOG_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

pub struct AppState {
    pub verifier: Verifier,
    pub pool: Pool,
    catalog: RwLock<Option<Arc<Catalog>>>,
    /// Serializes reloads and remembers when the last one happened.
    reload: tokio::sync::Mutex<Option<Instant>>,
}

/// What the request log may know about a request beyond its method, route and status.
#[derive(Debug, Clone, Default)]
struct RequestInfo {
    function: Option<String>,
    tenant_id: Option<Uuid>,
}

impl AppState {
    pub fn new(verifier: Verifier, pool: Pool) -> AppState {
        AppState {
            verifier,
            pool,
            catalog: RwLock::new(None),
            reload: tokio::sync::Mutex::new(None),
        }
    }

    fn cached_catalog(&self) -> Option<Arc<Catalog>> {
        self.catalog.read().ok().and_then(|c| c.clone())
    }

    /// The cached catalog, loading it on first use.
    async fn catalog(&self) -> Result<Arc<Catalog>, Error> {
        match self.cached_catalog() {
            Some(catalog) => Ok(catalog),
            None => self.reload_catalog(false).await,
        }
    }

    /// Loads the catalog. An already loaded one is kept if `rate_limited` and the last attempt
    /// is younger than [`CATALOG_REFRESH_INTERVAL`], or if not `rate_limited` (another request
    /// loaded it first). While the database is down, requests queued here fail fast instead of
    /// each waiting for its own connect timeout.
    async fn reload_catalog(&self, rate_limited: bool) -> Result<Arc<Catalog>, Error> {
        let mut last_attempt = self.reload.lock().await;
        let since_last = last_attempt.map(|t| t.elapsed());
        match self.cached_catalog() {
            Some(current)
                if !rate_limited || since_last.is_some_and(|d| d < CATALOG_REFRESH_INTERVAL) =>
            {
                return Ok(current)
            }
            None if since_last.is_some_and(|d| d < Duration::from_secs(1)) => {
                return Err(Error::Unavailable(
                    "the api catalog could not be loaded just now".to_owned(),
                ))
            }
            _ => {}
        }
        *last_attempt = Some(Instant::now());
        let catalog = Arc::new(db::load_catalog(&self.pool).await?);
        if let Ok(mut slot) = self.catalog.write() {
            *slot = Some(catalog.clone());
        }
        Ok(catalog)
    }

    /// The overload of `name` taking `keys`, reloading the catalog once if there is none.
    async fn resolve(&self, name: &str, keys: &BTreeSet<String>) -> Result<Function, Error> {
        let catalog = self.catalog().await?;
        if let Ok(f) = catalog.resolve(name, keys) {
            return Ok(f.clone());
        }
        self.reload_catalog(true)
            .await?
            .resolve(name, keys)
            .cloned()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/rest/v1", get(openapi))
        .route("/rest/v1/", get(openapi))
        .route("/rest/v1/rpc/{function}", get(rpc_call).post(rpc_call))
        .fallback(|| async { Error::NoRoute })
        .method_not_allowed_fallback(|| async {
            Error::MethodNotAllowed("Only GET and POST are allowed here".to_owned())
        })
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, Error> {
    db::ready(&state.pool).await?;
    Ok(Json(json!({"status": "ready"})))
}

async fn openapi(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, Error> {
    Ok(Json(state.catalog().await?.openapi()))
}

async fn rpc_call(
    State(state): State<Arc<AppState>>,
    method: Method,
    function: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut info = RequestInfo::default();
    let result = async {
        let who = authenticate(&state.verifier, &headers)?;
        info.tenant_id = who.tenant_id;
        let Path(name) = function.map_err(|_| Error::NoRoute)?;
        if !rpc::valid_function_name(&name) {
            return Err(Error::NoFunction {
                name: name.chars().take(63).collect(),
                args: Vec::new(),
            });
        }
        info.function = Some(name.clone());
        let read_only = method == Method::GET || method == Method::HEAD;
        let (f, args) = if read_only {
            let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
                .map_err(|e| Error::BadRequest(format!("Malformed query string: {e}")))?;
            let keys = pairs.iter().map(|(k, _)| k.clone()).collect();
            let f = state.resolve(&name, &keys).await?;
            let is_json = |key: &str| {
                f.args
                    .iter()
                    .any(|a| a.name == key && matches!(a.type_sql.as_str(), "json" | "jsonb"))
            };
            let args = rpc::args_from_query(pairs, is_json)?;
            (f, args)
        } else {
            let body =
                body.map_err(|e| Error::BadRequest(format!("Unreadable request body: {e}")))?;
            let args = rpc::args_from_body(&body)?;
            let f = state
                .resolve(&name, &args.keys().cloned().collect())
                .await?;
            (f, args)
        };
        if read_only && f.volatility == Volatility::Volatile {
            return Err(Error::MethodNotAllowed(format!(
                "api.{name} changes data: call it with POST (GET is for read-only functions)"
            )));
        }
        let call = rpc::build_call(&f, &args.keys().cloned().collect());
        db::run_call(&state.pool, read_only, &who, &call, &args).await
    }
    .await;
    let mut response = match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(info);
    response
}

fn authenticate(verifier: &Verifier, headers: &HeaderMap) -> Result<Verified, Error> {
    let value = headers.get(header::AUTHORIZATION).ok_or(Error::NoToken)?;
    let value = value
        .to_str()
        .map_err(|_| Error::BadToken("Authorization header is not valid".to_owned()))?;
    let token = match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => {
            return Err(Error::BadToken(
                "Authorization header must be 'Bearer <jwt>'".to_owned(),
            ))
        }
    };
    verifier.verify(token)
}

/// An incoming `x-request-id` is kept only if it is a short token of safe characters.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let info = response
        .extensions()
        .get::<RequestInfo>()
        .cloned()
        .unwrap_or_default();
    let tenant_id = info.tenant_id.map(|t| t.to_string());
    let status = response.status().as_u16();
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (method, route, function, tenant_id) = (
        method.as_str(),
        route.as_deref(),
        info.function.as_deref(),
        tenant_id.as_deref(),
    );
    match response.extensions().get::<InternalDetail>() {
        Some(InternalDetail(error)) => tracing::error!(
            target: "aura_edge::request",
            request_id = %id, method, route, function, status, latency_ms, tenant_id, error = %error, "request failed"
        ),
        None => tracing::info!(
            target: "aura_edge::request",
            request_id = %id, method, route, function, status, latency_ms, tenant_id, "request"
        ),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id(&headers).len(), 36);
        headers.insert("x-request-id", HeaderValue::from_static("abc-123_x.y"));
        assert_eq!(request_id(&headers), "abc-123_x.y");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
    }

    #[test]
    fn bearer_parsing() {
        let config = crate::JwtConfig::hs256("0123456789abcdef0123456789abcdef");
        let verifier = Verifier::new(&config).expect("verifier");
        let mut headers = HeaderMap::new();
        assert!(matches!(
            authenticate(&verifier, &headers),
            Err(Error::NoToken)
        ));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(
            authenticate(&verifier, &headers),
            Err(Error::BadToken(_))
        ));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer not.a.jwt"),
        );
        assert!(matches!(
            authenticate(&verifier, &headers),
            Err(Error::BadToken(_))
        ));
    }
}
