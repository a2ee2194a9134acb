//! `/auth/v1`: a Supabase Auth (GoTrue) compatible surface, so `@supabase/supabase-js` and
//! the other Supabase clients work unchanged against the edge.
//!
//! The edge holds no auth rules and no auth state. Each endpoint is one call of a
//! `crm_private.auth_*` function (PL/pgSQL in pg_crm) as the `crm_auth` role, given the
//! request as JSON (`body`, `query`, client `ip`, `user_agent`, the verified bearer token's
//! `user`); the database decides, counts attempts, keeps sessions and writes the outbox. The
//! edge only parses HTTP, signs the claims the database returns into access tokens, shapes
//! replies and errors as GoTrue does for API version 2024-01-01, and delivers the outbox
//! ([`crate::mail`]).
//!
//! Client mistakes are 4xx with GoTrue's `{code, message}` and never 5xx: supabase-js
//! retries 5xx for about 30 seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::config::{AuthConfig, ConfigError, JwtConfig};
use crate::error::{cut, Error};
use crate::http::AppState;
use crate::server::Connection;

/// The API version whose error shape (`{code, message}`) these replies follow.
pub const API_VERSION: &str = "2024-01-01";

/// Signs access tokens: HS256 with the shared secret, or ES256 with a configured key whose
/// public half is published at `/auth/v1/.well-known/jwks.json`.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    issuer: String,
    audience: String,
    ttl: Duration,
    jwks: Option<Value>,
}

impl Signer {
    /// `None` when there is nothing to sign with (a JWKS-only edge: GoTrue issues tokens).
    pub fn new(jwt: &JwtConfig, auth: &AuthConfig) -> Result<Option<Signer>, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            var: "AURA_JWT_SIGNING_KEY",
            reason,
        };
        let (key, header, jwks) = if let Some(pem) = &auth.signing_key_pem {
            let key = EncodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|e| invalid(format!("not a PEM EC P-256 private key ({e})")))?;
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256)
                .map_err(|e| invalid(format!("no public key from it ({e})")))?;
            jwk.common.key_id = Some(auth.signing_kid.clone());
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(auth.signing_kid.clone());
            let jwks = json!({ "keys": [jwk] });
            (key, header, Some(jwks))
        } else if let Some(secret) = &jwt.hs256_secret {
            (
                EncodingKey::from_secret(secret.as_bytes()),
                Header::new(Algorithm::HS256),
                None,
            )
        } else {
            return Ok(None);
        };
        Ok(Some(Signer {
            key,
            header,
            issuer: auth.issuer.clone(),
            audience: jwt.audience.clone(),
            ttl: auth.access_token_ttl,
            jwks,
        }))
    }

    /// The public keys, when tokens are signed asymmetrically.
    pub fn jwks(&self) -> Option<&Value> {
        self.jwks.as_ref()
    }

    /// An access token for the claims the database returned: (token, expires_in, expires_at).
    fn sign(&self, claims: &Value) -> Result<(String, u64, u64), Error> {
        let now = unix_now();
        let expires_in = self.ttl.as_secs().max(1);
        let mut claims = claims.clone();
        let Some(object) = claims.as_object_mut() else {
            return Err(Error::Internal("session claims are not an object".into()));
        };
        object.insert("iss".into(), json!(self.issuer));
        object.insert("aud".into(), json!(self.audience));
        object.insert("iat".into(), json!(now));
        object.insert("exp".into(), json!(now + expires_in));
        let token = encode(&self.header, &claims, &self.key)
            .map_err(|e| Error::Internal(format!("signing an access token: {e}")))?;
        Ok((token, expires_in, now + expires_in))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A GoTrue error reply.
fn gotrue_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({ "code": code, "message": cut(message, 500) })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// An edge error in GoTrue's shape (the same statuses as the rest of the edge).
fn edge_error(e: Error) -> Response {
    let (status, _) = e.status_and_code();
    let code = match &e {
        Error::NoToken => "no_authorization",
        Error::BadToken(_) => "bad_jwt",
        Error::BadRequest(_) => "bad_json",
        Error::PayloadTooLarge { .. } => "request_too_large",
        Error::BodyTimeout => "request_timeout",
        Error::TenantBusy => "over_request_rate_limit",
        Error::NoRoute | Error::NoFunction { .. } => "not_found",
        Error::MethodNotAllowed { .. } => "method_not_allowed",
        _ if status == StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
        Error::Db(db) if !status.is_server_error() => {
            // A rule pg_crm raised (say, 23505 for an address of another workspace).
            return gotrue_error(
                if status == StatusCode::CONFLICT {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    status
                },
                match db.code.as_str() {
                    "23505" => "email_exists",
                    "42501" => "not_admin",
                    _ => "validation_failed",
                },
                &db.message,
            );
        }
        _ => "unexpected_failure",
    };
    // Keep the edge's own response (headers such as Retry-After, Allow, Connection: close),
    // with GoTrue's body.
    let message = if status.is_server_error() {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            "The service is temporarily unavailable; retry shortly".to_owned()
        } else {
            "Unexpected failure, please try again".to_owned()
        }
    } else {
        match &e {
            Error::NoToken => "This endpoint requires a Bearer token".to_owned(),
            Error::BadToken(m) => format!("invalid JWT: {m}"),
            other => other.to_string(),
        }
    };
    let mut response = e.into_response();
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&json!({ "code": code, "message": cut(&message, 500) }))
        .unwrap_or_default();
    response = Response::from_parts(parts, Body::from(body));
    response
}

/// A request refused before it reached the database: the reply to send (boxed, a
/// `Response` is large).
type Rejected = Box<Response>;

/// Which credential an endpoint needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    /// A user's access token (its signature; the database checks the session).
    User,
    /// An operator's `service_role` token.
    ServiceRole,
}

/// The route table: (method, path) → the database function and the credential it needs.
fn endpoint(
    method: &Method,
    path: &str,
    query: &Map<String, Value>,
) -> Result<(&'static str, Needs), Rejected> {
    let not_found = || {
        Box::new(gotrue_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such endpoint",
        ))
    };
    let wrong_method = |allow: &'static str| {
        let mut r = gotrue_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("Use {allow} for this endpoint"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        Box::new(r)
    };
    let m = method;
    let is = |want: &Method| m == want;
    Ok(match path {
        "signup" if is(&Method::POST) => ("auth_signup", Needs::Nothing),
        "token" if is(&Method::POST) => {
            match query.get("grant_type").and_then(Value::as_str) {
                Some("password") => ("auth_token_password", Needs::Nothing),
                Some("refresh_token") => ("auth_token_refresh", Needs::Nothing),
                _ => return Err(Box::new(gotrue_error(
                    StatusCode::BAD_REQUEST,
                    "validation_failed",
                    "unsupported_grant_type: use grant_type=password or grant_type=refresh_token",
                ))),
            }
        }
        "settings" if is(&Method::GET) || is(&Method::HEAD) => {
            ("auth_settings_public", Needs::Nothing)
        }
        "logout" if is(&Method::POST) => ("auth_logout", Needs::User),
        "user" if is(&Method::GET) || is(&Method::HEAD) => ("auth_user_get", Needs::User),
        "user" if is(&Method::PUT) => ("auth_user_update", Needs::User),
        "recover" if is(&Method::POST) => ("auth_recover", Needs::Nothing),
        "reauthenticate" if is(&Method::POST) || is(&Method::GET) => {
            ("auth_reauthenticate", Needs::User)
        }
        "verify" if is(&Method::POST) || is(&Method::GET) => ("auth_verify", Needs::Nothing),
        "invite" if is(&Method::POST) => ("auth_invite", Needs::ServiceRole),
        "admin/users" if is(&Method::GET) => ("auth_admin_list_users", Needs::ServiceRole),
        "admin/users" if is(&Method::POST) => ("auth_admin_create_user", Needs::ServiceRole),
        p if p.starts_with("admin/users/") && !p["admin/users/".len()..].contains('/') => {
            match *m {
                Method::GET => ("auth_admin_get_user", Needs::ServiceRole),
                Method::PUT => ("auth_admin_update_user", Needs::ServiceRole),
                Method::DELETE => ("auth_admin_delete_user", Needs::ServiceRole),
                _ => return Err(wrong_method("GET, PUT, DELETE")),
            }
        }
        "signup" | "token" | "logout" | "recover" | "invite" => return Err(wrong_method("POST")),
        "reauthenticate" => return Err(wrong_method("GET, POST")),
        "user" => return Err(wrong_method("GET, PUT")),
        "verify" => return Err(wrong_method("GET, POST")),
        "admin/users" => return Err(wrong_method("GET, POST")),
        _ => return Err(not_found()),
    })
}

/// The bearer token of the request, or the error reply.
fn bearer(headers: &HeaderMap) -> Result<&str, Rejected> {
    let missing = || {
        Box::new(gotrue_error(
            StatusCode::UNAUTHORIZED,
            "no_authorization",
            "This endpoint requires a Bearer token",
        ))
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(missing()),
    }
}

/// Query parameters as a JSON object of strings (the last of repeated keys wins).
fn query_object(query: Option<&str>) -> Map<String, Value> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// Every `/auth/v1/...` request.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(rest): Path<String>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a);
    let connection = request
        .extensions()
        .get::<Connection>()
        .cloned()
        .map(Extension);
    let mut response = serve(&state, &rest, peer, connection, request).await;
    response.headers_mut().insert(
        "x-supabase-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    response
}

async fn serve(
    state: &AppState,
    path: &str,
    peer: Option<SocketAddr>,
    connection: Option<Extension<Connection>>,
    request: Request,
) -> Response {
    let path = path.trim_end_matches('/');
    let method = request.method().clone();
    match (path, &method) {
        ("health", &Method::GET | &Method::HEAD) => {
            return axum::Json(json!({
                "version": env!("CARGO_PKG_VERSION"), "name": "Aura Auth",
                "description": "Aura's Supabase Auth compatible API"
            }))
            .into_response()
        }
        (".well-known/jwks.json", &Method::GET | &Method::HEAD) => return match state
            .signer
            .as_ref()
            .and_then(|s| s.jwks())
        {
            Some(jwks) => axum::Json(jwks.clone()).into_response(),
            None => gotrue_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "Tokens are signed with a shared secret here: there are no public keys to publish",
            ),
        },
        _ => {}
    }
    if state.signer.is_none() {
        return gotrue_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The auth service is off: this edge verifies tokens from another issuer",
        );
    }
    let query = query_object(request.uri().query());
    let (function, needs) = match endpoint(&method, path, &query) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let headers = request.headers().clone();
    let mut req = Map::new();
    match needs {
        Needs::Nothing => {}
        Needs::User => {
            let token = match bearer(&headers) {
                Ok(t) => t,
                Err(r) => return *r,
            };
            match state.verifier.verify(token).await {
                Ok(who) => {
                    let session = who.claims.get("session_id").cloned().unwrap_or(Value::Null);
                    req.insert(
                        "user".into(),
                        json!({ "id": who.user_id, "session_id": session }),
                    );
                }
                Err(Error::BadToken(m)) => {
                    return gotrue_error(
                        StatusCode::FORBIDDEN,
                        "bad_jwt",
                        &format!("invalid JWT: {m}"),
                    )
                }
                Err(e) => return edge_error(e),
            }
        }
        Needs::ServiceRole => {
            let token = match bearer(&headers) {
                Ok(t) => t,
                Err(r) => return *r,
            };
            if let Err(e) = state.verifier.verify_service_role(token).await {
                let message = match e {
                    Error::BadToken(m) => format!("invalid JWT: {m}"),
                    other => other.to_string(),
                };
                return gotrue_error(
                    StatusCode::FORBIDDEN,
                    "not_admin",
                    &format!("User not allowed: {message}"),
                );
            }
        }
    }
    if let Some(id) = path.strip_prefix("admin/users/") {
        req.insert("id".into(), Value::String(cut(id, 64)));
    }
    let body = if matches!(method, Method::POST | Method::PUT | Method::DELETE) {
        let connection = connection.as_ref().map(|Extension(c)| c);
        let bytes =
            match crate::http::read_body(request.into_body(), &headers, &state.limits, connection)
                .await
            {
                Ok(b) => b,
                Err(e) => return edge_error(e),
            };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return gotrue_error(
                        StatusCode::BAD_REQUEST,
                        "bad_json",
                        "The request body must be a JSON object",
                    )
                }
                Err(_) => {
                    return gotrue_error(
                        StatusCode::BAD_REQUEST,
                        "bad_json",
                        "Could not parse request body as JSON",
                    )
                }
            }
        }
    } else {
        Value::Object(Map::new())
    };
    req.insert("body".into(), body);
    req.insert("query".into(), Value::Object(query.clone()));
    if let Some(peer) = peer {
        req.insert(
            "ip".into(),
            Value::String(peer.ip().to_canonical().to_string()),
        );
    }
    if let Some(agent) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        req.insert("user_agent".into(), Value::String(cut(agent, 512)));
    }
    reply(state, function, &method, Value::Object(req), &query).await
}

/// Calls the database and turns its reply into HTTP.
async fn reply(
    state: &AppState,
    function: &'static str,
    method: &Method,
    req: Value,
    query: &Map<String, Value>,
) -> Response {
    let outcome = match state.db.run_auth(function, &req).await {
        Ok(v) => v,
        Err(e) => return edge_error(e),
    };
    let redirecting = function == "auth_verify" && *method == Method::GET;
    if let Some(error) = outcome.get("error") {
        let status = error
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| StatusCode::from_u16(s as u16).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        if redirecting {
            return verify_error_redirect(state, query, status, message).await;
        }
        let mut body = error.clone();
        if let Some(object) = body.as_object_mut() {
            object.remove("status");
            object.remove("retry_after");
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(wait) = error.get("retry_after").and_then(Value::as_u64) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        return response;
    }
    if let Some(session) = outcome.get("session") {
        let Some(signer) = &state.signer else {
            return edge_error(Error::Internal("no signer".into()));
        };
        let (access_token, expires_in, expires_at) = match signer.sign(&session["claims"]) {
            Ok(t) => t,
            Err(e) => return edge_error(e),
        };
        let refresh_token = session["refresh_token"].as_str().unwrap_or_default();
        if redirecting {
            let target = outcome
                .get("redirect_to")
                .and_then(Value::as_str)
                .unwrap_or("/");
            let kind = outcome
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("signup");
            let fragment = format!(
                "access_token={access_token}&expires_at={expires_at}&expires_in={expires_in}&refresh_token={refresh_token}&token_type=bearer&type={kind}"
            );
            return redirect(&format!(
                "{}#{fragment}",
                target.split('#').next().unwrap_or(target)
            ));
        }
        return axum::Json(json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": expires_in,
            "expires_at": expires_at,
            "refresh_token": refresh_token,
            "user": session["user"],
        }))
        .into_response();
    }
    if outcome.get("status").and_then(Value::as_u64) == Some(204) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = outcome.get("body").cloned().unwrap_or_else(|| json!({}));
    let mut response = axum::Json(body).into_response();
    if let (Some(total), Some(page), Some(per_page)) = (
        outcome.get("total").and_then(Value::as_u64),
        outcome.get("page").and_then(Value::as_u64),
        outcome.get("per_page").and_then(Value::as_u64),
    ) {
        let headers = response.headers_mut();
        headers.insert("x-total-count", HeaderValue::from(total));
        let last = total.div_ceil(per_page).max(1);
        let mut links = Vec::new();
        if page < last {
            links.push(format!(
                "</admin/users?page={}&per_page={per_page}>; rel=\"next\"",
                page + 1
            ));
        }
        links.push(format!(
            "</admin/users?page={last}&per_page={per_page}>; rel=\"last\""
        ));
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            headers.insert(header::LINK, v);
        }
    }
    response
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => gotrue_error(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Invalid redirect",
        ),
    }
}

/// GET /verify that failed: back to the site with the error in the fragment, as GoTrue does.
async fn verify_error_redirect(
    state: &AppState,
    query: &Map<String, Value>,
    status: StatusCode,
    message: &str,
) -> Response {
    // The allowed target comes from the database's rules; without one, the plain error.
    let site = match state
        .db
        .run_auth("auth_redirect_target", &json!({ "query": query }))
        .await
    {
        Ok(v) => v
            .get("redirect_to")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Err(_) => None,
    };
    match site {
        Some(site) => {
            let encoded: String =
                url::form_urlencoded::byte_serialize(message.as_bytes()).collect();
            let code = if status == StatusCode::FORBIDDEN {
                "otp_expired"
            } else {
                "validation_failed"
            };
            redirect(&format!(
                "{}#error=access_denied&error_code={code}&error_description={encoded}",
                site.split('#').next().unwrap_or(&site)
            ))
        }
        None => gotrue_error(status, "otp_expired", message),
    }
}

/// Answers a CORS preflight, or adds the CORS headers to a response, for allowed origins.
pub fn cors_headers(origins: &[String], request_headers: &HeaderMap, response: &mut HeaderMap) {
    let Some(origin) = request_headers.get(header::ORIGIN) else {
        return;
    };
    let allowed = origins.iter().any(|o| o == "*")
        || origin.to_str().is_ok_and(|o| {
            origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(o))
        });
    if !allowed {
        return;
    }
    response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    response.append(header::VARY, HeaderValue::from_static("Origin"));
    response.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "x-request-id, x-total-count, link, retry-after, x-supabase-api-version, content-range, ratelimit-limit, ratelimit-remaining, ratelimit-reset",
        ),
    );
}

/// `Some(response)` for a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn preflight(origins: &[String], request_headers: &HeaderMap) -> Option<Response> {
    request_headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    cors_headers(origins, request_headers, headers);
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "authorization, apikey, content-type, accept, accept-profile, content-profile, prefer, range, x-client-info, x-supabase-api-version, x-request-id",
            ),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    Some(response)
}
