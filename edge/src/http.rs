//! Routes, handlers and the request log.
//!
//! Handlers stay thin: authenticate, pick the catalog function, hand one statement to
//! [`crate::db::Database::run_call`]. The request log is one JSON line per request written
//! by a middleware, which learns the function and tenant from a [`RequestInfo`] response
//! extension so that nothing else (tokens, bodies, query strings, emails) can end up in it.
//!
//! Every route answers every method itself, so a 405 carries the route's true `Allow`
//! header (for an RPC, whether GET is allowed depends on the function's volatility) and
//! `OPTIONS` answers with it.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use uuid::Uuid;

use crate::catalog::{Catalog, Function, Volatility};
use crate::config::HttpLimits;
use crate::db::Database;
use crate::error::{cut, Error, InternalDetail};
use crate::jwt::{Verified, Verifier};
use crate::rpc;
use crate::server::Connection;

/// How often at most an unknown function name triggers a catalog reload.
const CATALOG_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// `/ready` is unauthenticated: it asks the database at most once at a time (probes that
/// arrive meanwhile get the last answer) and reuses a success for this long, so a flood of
/// probes can neither take pooled connections from tenants nor queue up behind a slow check.
const READY_OK_FOR: Duration = Duration::from_secs(1);

/// `Allow` of the read-only routes (`/health`, `/ready`, `/rest/v1/`).
const ALLOW_READ: &str = "GET, HEAD, OPTIONS";
/// `Allow` of an RPC that changes data, and of one that only reads.
const ALLOW_RPC_VOLATILE: &str = "OPTIONS, POST";
const ALLOW_RPC_READ: &str = "GET, HEAD, OPTIONS, POST";
/// `Allow` of `/rest/v1/export` (no HEAD: an export consumes its nonce).
const ALLOW_EXPORT: &str = "GET, OPTIONS";
/// `Allow` of `/rest/v1/import/{entity}`.
const ALLOW_IMPORT: &str = "OPTIONS, POST";

pub struct AppState {
    pub verifier: Verifier,
    pub db: Database,
    pub limits: HttpLimits,
    /// Signs the access tokens `/auth/v1` issues; `None` when another issuer does.
    pub signer: Option<crate::auth::Signer>,
    /// Browser origins allowed by CORS (`*`: any).
    pub cors_origins: Vec<String>,
    pub rate_limiter: Arc<crate::ratelimit::RateLimiter>,
    catalog: RwLock<Option<Arc<Catalog>>>,
    /// Serializes reloads and remembers when the last one happened.
    reload: tokio::sync::Mutex<Option<Instant>>,
    /// The last readiness answer and when it was had.
    last_ready: std::sync::Mutex<Option<(Instant, bool)>>,
    /// Held while a readiness check runs.
    ready_check: tokio::sync::Mutex<()>,
}

/// What the request log may know about a request beyond its method, route and status.
#[derive(Debug, Clone, Default)]
struct RequestInfo {
    function: Option<String>,
    tenant_id: Option<Uuid>,
}

impl AppState {
    pub fn new(
        verifier: Verifier,
        db: Database,
        limits: HttpLimits,
        signer: Option<crate::auth::Signer>,
        cors_origins: Vec<String>,
        rate_limiter: Arc<crate::ratelimit::RateLimiter>,
    ) -> AppState {
        AppState {
            verifier,
            db,
            limits,
            signer,
            cors_origins,
            rate_limiter,
            catalog: RwLock::new(None),
            reload: tokio::sync::Mutex::new(None),
            last_ready: std::sync::Mutex::new(None),
            ready_check: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the database answers: a recent success, the last answer while a check runs,
    /// or a new check.
    async fn ready(&self) -> Result<(), Error> {
        let last = *self.last_ready.lock().unwrap_or_else(|p| p.into_inner());
        let answer = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::Unavailable(
                    "the last readiness check failed".to_owned(),
                ))
            }
        };
        if let Some((at, true)) = last {
            if at.elapsed() < READY_OK_FOR {
                return Ok(());
            }
        }
        let Ok(_checking) = self.ready_check.try_lock() else {
            return answer(last.is_some_and(|(_, ok)| ok));
        };
        let result = self.db.ready().await;
        *self.last_ready.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), result.is_ok()));
        result
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
    /// ended less than [`CATALOG_REFRESH_INTERVAL`] ago, or if another reload is in flight
    /// (nobody queues behind it), or if not `rate_limited` (another request loaded it first).
    /// While the database is down, requests waiting for a first catalog fail fast after the
    /// one attempt instead of each making its own.
    async fn reload_catalog(&self, rate_limited: bool) -> Result<Arc<Catalog>, Error> {
        let mut last_attempt = match (rate_limited, self.cached_catalog()) {
            (true, Some(current)) => match self.reload.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(current),
            },
            _ => self.reload.lock().await,
        };
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
        let loaded = self.db.load_catalog().await;
        *last_attempt = Some(Instant::now());
        let catalog = Arc::new(loaded?);
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

    /// The `Allow` header of `/rest/v1/rpc/{name}`, or 404 when there is no such function.
    /// Unauthenticated, so it answers from the loaded catalog and never triggers a reload.
    async fn rpc_allow(&self, name: &str) -> Result<&'static str, Error> {
        let catalog = self.catalog().await?;
        let overloads = catalog.overloads(name);
        if overloads.is_empty() {
            return Err(Error::NoFunction {
                name: name.to_owned(),
                args: Vec::new(),
            });
        }
        Ok(
            if overloads
                .iter()
                .any(|f| f.volatility != Volatility::Volatile)
            {
                ALLOW_RPC_READ
            } else {
                ALLOW_RPC_VOLATILE
            },
        )
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", any(health))
        .route("/ready", any(ready))
        .route("/rest/v1", any(openapi))
        .route("/rest/v1/", any(openapi))
        .route("/rest/v1/rpc/{function}", any(rpc_call))
        .route("/rest/v1/export", any(export))
        .route("/rest/v1/import/{entity}", any(import))
        .route("/auth/v1/{*rest}", any(crate::auth::handle))
        .fallback(|| async { Error::NoRoute })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_head,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// 200 with the `Allow` header and no body.
fn options(allow: &'static str) -> Response {
    (StatusCode::OK, [(header::ALLOW, allow)]).into_response()
}

fn method_not_allowed(method: &Method, what: &str, allow: &'static str) -> Error {
    let usable: Vec<&str> = allow.split(", ").filter(|m| *m != "OPTIONS").collect();
    Error::MethodNotAllowed {
        message: format!(
            "Method {} is not allowed for {what}: use {}",
            cut(method.as_str(), 16),
            usable.join(" or ")
        ),
        allow,
    }
}

/// For the read-only routes: `Some(response)` when the method is not GET or HEAD.
fn read_only_route(method: &Method) -> Option<Response> {
    match *method {
        Method::GET | Method::HEAD => None,
        Method::OPTIONS => Some(options(ALLOW_READ)),
        _ => Some(method_not_allowed(method, "this path", ALLOW_READ).into_response()),
    }
}

async fn health(method: Method) -> Response {
    read_only_route(&method).unwrap_or_else(|| Json(json!({"status": "ok"})).into_response())
}

async fn ready(State(state): State<Arc<AppState>>, method: Method) -> Response {
    if let Some(response) = read_only_route(&method) {
        return response;
    }
    match state.ready().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn openapi(State(state): State<Arc<AppState>>, method: Method) -> Response {
    if let Some(response) = read_only_route(&method) {
        return response;
    }
    match state.catalog().await {
        Ok(catalog) => Json(catalog.openapi()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// CORS for browser clients: preflights are answered here, before routing; other
/// responses get the headers when the `Origin` is allowed.
async fn cors(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        if let Some(response) = crate::auth::preflight(&state.cors_origins, request.headers()) {
            return response;
        }
    }
    let headers = request.headers().clone();
    let mut response = next.run(request).await;
    crate::auth::cors_headers(&state.cors_origins, &headers, response.headers_mut());
    response
}

/// Rejects a request head larger than the configured limit with the JSON body (hyper
/// itself refuses heads beyond a higher hard limit, with a bare 431).
async fn limit_head(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limit = state.limits.max_header_bytes;
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + 12;
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + fields > limit {
        return Error::HeadersTooLarge { limit }.into_response();
    }
    next.run(request).await
}

/// The whole body, within the size and time limits. While it arrives the connection is in
/// its body phase (evictable at the connection cap, see [`crate::server`]).
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &HttpLimits,
    connection: Option<&Connection>,
) -> Result<Bytes, Error> {
    let limit = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    if let Some(c) = connection {
        c.reading_body();
    }
    let collected =
        tokio::time::timeout(limits.body_timeout, Limited::new(body, limit).collect()).await;
    if let Some(c) = connection {
        c.body_read();
    }
    let collected = collected.map_err(|_| Error::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::PayloadTooLarge { limit })
        }
        Err(_) => Err(Error::BadRequest(
            "The request body could not be read".to_owned(),
        )),
    }
}

async fn rpc_call(
    State(state): State<Arc<AppState>>,
    method: Method,
    function: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    connection: Option<Extension<Connection>>,
    body: Body,
) -> Response {
    let mut info = RequestInfo::default();
    let mut rate = None;
    let result = async {
        let Path(name) = function.map_err(|_| Error::NoRoute)?;
        if !rpc::valid_function_name(&name) {
            return Err(Error::NoFunction {
                name: cut(&name, 63),
                args: Vec::new(),
            });
        }
        info.function = Some(name.clone());
        let read_only = match method {
            Method::GET | Method::HEAD => true,
            Method::POST => false,
            _ => {
                let allow = state.rpc_allow(&name).await?;
                return if method == Method::OPTIONS {
                    Ok(options(allow))
                } else {
                    Err(method_not_allowed(&method, &format!("api.{name}"), allow))
                };
            }
        };
        let who = admit(&state, &headers, &mut info, &mut rate).await?;
        let (f, args) = if read_only {
            let pairs = query_pairs(&uri)?;
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
            let connection = connection.as_ref().map(|Extension(c)| c);
            let body = read_body(body, &headers, &state.limits, connection).await?;
            let args = rpc::args_from_body(&body)?;
            let f = state
                .resolve(&name, &args.keys().cloned().collect())
                .await?;
            (f, args)
        };
        if read_only && f.volatility == Volatility::Volatile {
            return Err(Error::MethodNotAllowed {
                message: format!(
                    "api.{name} changes data: call it with POST (only read-only functions take this method)"
                ),
                allow: ALLOW_RPC_VOLATILE,
            });
        }
        rpc::check_args(&f, &args)?;
        let call = rpc::build_call(&f, &args.keys().cloned().collect());
        let value = state.db.run_call(read_only, &who, &call, &args).await?;
        Ok(Json(value).into_response())
    }
    .await;
    reply(result, rate, info)
}

/// `GET /rest/v1/export` ([`crate::export`]): authenticated and rate-limited as an RPC call.
async fn export(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let mut info = RequestInfo {
        function: Some("export".to_owned()),
        tenant_id: None,
    };
    let mut rate = None;
    let result = async {
        match method {
            Method::GET => {}
            Method::OPTIONS => return Ok(options(ALLOW_EXPORT)),
            _ => return Err(method_not_allowed(&method, "the export", ALLOW_EXPORT)),
        }
        let who = admit(&state, &headers, &mut info, &mut rate).await?;
        let pairs = query_pairs(&uri)?;
        let params = crate::export::Params::from_query(pairs)?;
        crate::export::respond(&state.db, &who, params).await
    }
    .await;
    reply(result, rate, info)
}

/// `POST /rest/v1/import/{contacts|organizations}` ([`crate::import`]): authenticated and
/// rate-limited as an RPC call; the body streams into the database.
async fn import(
    State(state): State<Arc<AppState>>,
    method: Method,
    entity: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    connection: Option<Extension<Connection>>,
    body: Body,
) -> Response {
    let mut info = RequestInfo {
        function: Some("import".to_owned()),
        tenant_id: None,
    };
    let mut rate = None;
    let result = async {
        let Path(name) = entity.map_err(|_| Error::NoRoute)?;
        let entity = crate::import::entity(&name).ok_or(Error::NoRoute)?;
        match method {
            Method::POST => {}
            Method::OPTIONS => return Ok(options(ALLOW_IMPORT)),
            _ => return Err(method_not_allowed(&method, "an import", ALLOW_IMPORT)),
        }
        let who = admit(&state, &headers, &mut info, &mut rate).await?;
        let pairs = query_pairs(&uri)?;
        let params = crate::import::Params::from_query(pairs)?;
        let connection = connection.as_ref().map(|Extension(c)| c);
        crate::import::respond(
            &state.db,
            &who,
            entity,
            params,
            &headers,
            body,
            &state.limits,
            connection,
        )
        .await
    }
    .await;
    reply(result, rate, info)
}

/// Admits an API request: its token, then the user's rate limit (counted here, in this
/// edge's memory: no database round trip, see ratelimit). Notes the tenant for the request
/// log and the limiter's decision for the reply's headers.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    info: &mut RequestInfo,
    rate: &mut Option<crate::ratelimit::Decision>,
) -> Result<Verified, Error> {
    let who = authenticate(&state.verifier, headers).await?;
    info.tenant_id = who.tenant_id;
    *rate = state
        .rate_limiter
        .check(&format!("user:{}", who.user_id), who.tenant_id);
    if let Some(decision) = rate.filter(|d| !d.allowed) {
        return Err(Error::RateLimited {
            limit: decision.limit,
        });
    }
    Ok(who)
}

/// An API request's reply: an error as its response, the rate-limit headers, and what the
/// request log may know.
fn reply(
    result: Result<Response, Error>,
    rate: Option<crate::ratelimit::Decision>,
    info: RequestInfo,
) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(decision) = rate {
        decision.apply(response.headers_mut());
    }
    response.extensions_mut().insert(info);
    response
}

fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, Error> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| Error::BadRequest("Malformed query string".to_owned()))?;
    Ok(pairs)
}

async fn authenticate(verifier: &Verifier, headers: &HeaderMap) -> Result<Verified, Error> {
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
    verifier.verify(token).await
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
    // Logs the request if it never gets a response (the client went away first).
    let mut pending = Abandoned {
        id: Some(id.clone()),
        method: method.clone(),
        route: route.clone(),
        started,
    };
    let meta = crate::db::RequestMeta {
        id: id.clone(),
        ip: request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip()),
    };
    let mut response = crate::db::REQUEST_META.scope(meta, next.run(request)).await;
    pending.id = None;
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

/// A request whose response was never produced: logged with nginx's 499 when dropped.
struct Abandoned {
    id: Option<String>,
    method: Method,
    route: Option<String>,
    started: Instant,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            let latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(
                target: "aura_edge::request",
                request_id = %id, method = self.method.as_str(), route = self.route.as_deref(),
                status = 499u16, latency_ms, "request abandoned by the client"
            );
        }
    }
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

    #[tokio::test]
    async fn bearer_parsing() {
        let config = crate::JwtConfig::hs256("0123456789abcdef0123456789abcdef");
        let verifier = Verifier::new(&config).expect("verifier");
        let mut headers = HeaderMap::new();
        assert!(matches!(
            authenticate(&verifier, &headers).await,
            Err(Error::NoToken)
        ));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(
            authenticate(&verifier, &headers).await,
            Err(Error::BadToken(_))
        ));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer not.a.jwt"),
        );
        assert!(matches!(
            authenticate(&verifier, &headers).await,
            Err(Error::BadToken(_))
        ));
    }
}
