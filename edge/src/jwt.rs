//! JWT verification.
//!
//! The algorithm comes from the token header, so it is the attacker's choice: it must be on the
//! allowlist, and it decides the key *family* before any key is picked. HMAC algorithms only
//! ever use the configured secret; RSA/EC algorithms only ever use JWKS public keys of the same
//! family. That rules out the classic confusion of verifying an HS256 token with a public key
//! as the secret, and `alg: none` never parses. A header that marks an extension critical
//! (`crit`, RFC 7515 §4.1.11) is refused, as this verifier understands none.
//!
//! A JWKS read from a file or URL is read again periodically and when a token names a key id
//! the verifier does not hold (at most once per cooldown), so the issuer can rotate keys
//! without an edge restart; a failed reload keeps the keys it had.
//!
//! The verified claims are handed to the database whole; `crm_private.begin_request`
//! re-checks session, membership and tenant live.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{decode, decode_header, Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use uuid::Uuid;

use crate::config::{ConfigError, JwksSource, JwtConfig};
use crate::error::Error;

/// Seconds of clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECS: u64 = 30;
const MIN_SECRET_BYTES: usize = 32;
/// A JWKS fetch gives up after this long; the keys held so far stay in use.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Verifies bearer tokens against the configured keys.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    audience: String,
    issuers: Vec<String>,
    algorithms: Vec<Algorithm>,
}

struct PublicKey {
    kid: Option<String>,
    /// The JWK's own `alg`, serialized, when it pins one.
    alg: Option<Value>,
    key: DecodingKey,
}

/// The JWKS and where it comes from.
pub struct Jwks {
    source: JwksSource,
    keys: RwLock<Arc<Vec<PublicKey>>>,
    /// When the last reload was attempted; held while reloading, so reloads never overlap.
    last_reload: tokio::sync::Mutex<Option<Instant>>,
    refresh: Duration,
    cooldown: Duration,
    /// Built on the first fetch from a URL, then reused (building one reads the system's
    /// root certificates).
    http: std::sync::OnceLock<reqwest::Client>,
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The whole claims object, as passed to `crm_private.begin_request`.
    pub claims: Value,
    pub user_id: Uuid,
    /// `app_metadata.tenant_id` if present and a uuid.
    pub tenant_id: Option<Uuid>,
}

/// Why a token was refused, before it becomes a 401.
enum Refusal {
    /// The header names a key id no JWKS key has (yet).
    UnknownKey,
    Bad(&'static str),
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::BadToken(
            match r {
                Refusal::UnknownKey => "JWT was not signed by a known key",
                Refusal::Bad(m) => m,
            }
            .to_owned(),
        )
    }
}

impl Verifier {
    pub fn new(config: &JwtConfig) -> Result<Verifier, ConfigError> {
        let secret = match &config.hs256_secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError::Invalid {
                    var: "AURA_JWT_SECRET",
                    reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
                })
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let jwks = match &config.jwks {
            Some(source) => {
                let keys = match source {
                    JwksSource::Inline(doc) => parse_jwks(doc).map_err(jwks_error)?,
                    JwksSource::File(path) => std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                        .and_then(|doc| parse_jwks(&doc))
                        .map_err(jwks_error)?,
                    // Fetched when the edge starts serving; a URL cannot be checked here.
                    JwksSource::Url(url) => {
                        let parsed = url::Url::parse(url)
                            .map_err(|e| jwks_error(format!("not a URL ({e})")))?;
                        if parsed.scheme() != "https" && !is_loopback(&parsed) {
                            return Err(jwks_error(
                                "must be an https:// URL: whoever can change the keys in transit can sign any token".to_owned(),
                            ));
                        }
                        Vec::new()
                    }
                };
                Some(Arc::new(Jwks {
                    source: source.clone(),
                    keys: RwLock::new(Arc::new(keys)),
                    last_reload: tokio::sync::Mutex::new(None),
                    refresh: config.jwks_refresh,
                    cooldown: config.jwks_cooldown,
                    http: std::sync::OnceLock::new(),
                }))
            }
            None => None,
        };
        let fetched_later = matches!(config.jwks, Some(JwksSource::Url(_)));
        let usable = config.algorithms.iter().any(|alg| match alg.family() {
            AlgorithmFamily::Hmac => secret.is_some(),
            family => {
                fetched_later
                    || jwks
                        .as_ref()
                        .is_some_and(|j| j.current().iter().any(|k| k.key.family() == family))
            }
        });
        if !usable {
            return Err(ConfigError::Invalid {
                var: "AURA_JWT_ALGORITHMS",
                reason: "no configured key can verify any allowed algorithm".to_owned(),
            });
        }
        Ok(Verifier {
            secret,
            jwks,
            audience: config.audience.clone(),
            issuers: config.issuers.clone(),
            algorithms: config.algorithms.clone(),
        })
    }

    /// The JWKS, when it is read from a file or URL (for the periodic reload).
    pub fn reloadable_jwks(&self) -> Option<Arc<Jwks>> {
        self.jwks
            .clone()
            .filter(|j| !matches!(j.source, JwksSource::Inline(_)))
    }

    /// Verifies a token (without the `Bearer ` prefix). Every failure is a 401. A key id the
    /// JWKS does not hold triggers one reload (at most once per cooldown) and a second try.
    pub async fn verify(&self, token: &str) -> Result<Verified, Error> {
        let claims = self.verified_claims(token, Mode::User).await?;
        Ok(user_of(claims)?)
    }

    /// Verifies an operator's token: signed by a known key, unexpired, `role: service_role`
    /// (Supabase's service key has no `sub`, and its `aud` is not checked). Every failure is
    /// a 401.
    pub async fn verify_service_role(&self, token: &str) -> Result<(), Error> {
        let claims = self.verified_claims(token, Mode::ServiceRole).await?;
        if claims.get("role").and_then(Value::as_str) != Some("service_role") {
            return Err(Refusal::Bad("JWT role is not service_role").into());
        }
        Ok(())
    }

    async fn verified_claims(&self, token: &str, mode: Mode) -> Result<Value, Error> {
        match self.verify_with_current_keys(token, mode) {
            Err(Refusal::UnknownKey) => match self.reloadable_jwks() {
                Some(jwks) => {
                    jwks.reload_for_unknown_key().await;
                    Ok(self.verify_with_current_keys(token, mode)?)
                }
                None => Err(Refusal::UnknownKey.into()),
            },
            other => Ok(other?),
        }
    }

    fn verify_with_current_keys(&self, token: &str, mode: Mode) -> Result<Value, Refusal> {
        let bad = Refusal::Bad;
        let header = decode_header(token)
            .map_err(|_| bad("JWT is malformed or uses an unsupported algorithm"))?;
        if header.crit.is_some() {
            return Err(bad(
                "JWT header marks extensions critical (crit) that this server does not understand",
            ));
        }
        let alg = header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(bad("JWT algorithm is not allowed"));
        }
        let public;
        let key = match alg.family() {
            AlgorithmFamily::Hmac => self
                .secret
                .as_ref()
                .ok_or(bad("JWT was not signed by a known key"))?,
            family => {
                let jwks = self.jwks.as_ref().ok_or(Refusal::UnknownKey)?;
                public = jwks.current();
                let kid = header.kid.as_deref();
                match public_key(&public, alg, family, kid) {
                    Some(key) => key,
                    None if kid.is_some() => return Err(Refusal::UnknownKey),
                    None => return Err(bad("JWT was not signed by a known key")),
                }
            }
        };

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        if mode == Mode::ServiceRole {
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp"]);
        } else if self.issuers.is_empty() {
            validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        } else {
            validation.set_issuer(&self.issuers);
            validation.set_required_spec_claims(&["exp", "aud", "sub", "iss"]);
        }
        let claims = decode::<Value>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            bad(match e.kind() {
                K::ExpiredSignature => "JWT expired",
                K::InvalidSignature => "JWT signature is invalid",
                K::InvalidAudience => "JWT audience is not accepted",
                K::InvalidIssuer => "JWT issuer is not accepted",
                K::ImmatureSignature => "JWT is not valid yet",
                K::MissingRequiredClaim(_) if self.issuers.is_empty() => {
                    "JWT lacks a required claim (exp, aud, sub)"
                }
                K::MissingRequiredClaim(_) => "JWT lacks a required claim (exp, aud, sub, iss)",
                K::InvalidAlgorithm => "JWT algorithm does not match the key",
                _ => "JWT is invalid",
            })
        })?;
        let claims = claims.claims;
        if !claims.is_object() {
            return Err(bad("JWT claims are not an object"));
        }
        Ok(claims)
    }
}

/// Whether a token must be a user's or an operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    User,
    ServiceRole,
}

/// The user a verified token is for.
fn user_of(claims: Value) -> Result<Verified, Refusal> {
    let bad = Refusal::Bad;
    {
        // The canonical hyphenated form only: the gate accepts nothing else either, and a
        // token must not pass here in a form the database then refuses as someone else.
        let user_id = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| is_hyphenated_uuid(s))
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or(bad(
                "JWT sub claim is not a user id (a uuid such as 6f1c1e0a-5b7e-4b8e-9a51-0a7c2f4a1d10)",
            ))?;
        if claims.get("role").and_then(Value::as_str) != Some("authenticated") {
            return Err(bad(
                "JWT role is not accepted: this API serves authenticated users only",
            ));
        }
        let tenant_id = claims
            .pointer("/app_metadata/tenant_id")
            .and_then(Value::as_str)
            .filter(|s| is_hyphenated_uuid(s))
            .and_then(|s| Uuid::parse_str(s).ok());
        Ok(Verified {
            claims,
            user_id,
            tenant_id,
        })
    }
}

/// `8-4-4-4-12` hexadecimal digits (either case), nothing else: not braced, not a URN, not
/// 32 bare digits.
pub fn is_hyphenated_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn public_key<'k>(
    keys: &'k [PublicKey],
    alg: Algorithm,
    family: AlgorithmFamily,
    kid: Option<&str>,
) -> Option<&'k DecodingKey> {
    let alg_json = serde_json::to_value(alg).ok();
    let mut candidates = keys
        .iter()
        .filter(|k| k.key.family() == family && (k.alg.is_none() || k.alg == alg_json));
    match kid {
        Some(kid) => candidates
            .find(|k| k.kid.as_deref() == Some(kid))
            .map(|k| &k.key),
        None => match (candidates.next(), candidates.next()) {
            (Some(only), None) => Some(&only.key),
            _ => None,
        },
    }
}

impl Jwks {
    fn current(&self) -> Arc<Vec<PublicKey>> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How often the periodic reload runs.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    /// Reads the source again now; on failure the keys held stay in use.
    pub async fn reload(&self) -> Result<usize, String> {
        let mut last = self.last_reload.lock().await;
        self.reload_locked(&mut last).await
    }

    async fn reload_for_unknown_key(&self) {
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return;
        }
        if let Err(e) = self.reload_locked(&mut last).await {
            tracing::warn!(error = %e, "JWKS reload for an unknown key id failed; keeping the keys held");
        }
    }

    async fn reload_locked(&self, last: &mut Option<Instant>) -> Result<usize, String> {
        *last = Some(Instant::now());
        let doc = match &self.source {
            JwksSource::Inline(doc) => doc.clone(),
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            JwksSource::Url(url) => fetch(self.http_client()?, url).await?,
        };
        let keys = parse_jwks(&doc)?;
        let n = keys.len();
        match self.keys.write() {
            Ok(mut slot) => *slot = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        tracing::info!(keys = n, "JWKS loaded");
        Ok(n)
    }
}

/// Plain http is accepted for a JWKS on this machine only (a sidecar, the tests).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Jwks {
    fn http_client(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let loopback = match &self.source {
            JwksSource::Url(url) => url::Url::parse(url).is_ok_and(|u| is_loopback(&u)),
            _ => false,
        };
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            // Redirects may not leave https either.
            .https_only(!loopback)
            .build()
            .map_err(|e| format!("JWKS client: {e}"))?;
        Ok(self.http.get_or_init(|| client))
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("fetching the JWKS from {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "fetching the JWKS from {url}: HTTP {}",
            response.status()
        ));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(format!(
            "the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes"
        ));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the JWKS from {url}: {e}"))?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes"
        ));
    }
    String::from_utf8(body.to_vec()).map_err(|_| format!("the JWKS at {url} is not UTF-8"))
}

fn jwks_error(reason: String) -> ConfigError {
    ConfigError::Invalid {
        var: "AURA_JWT_JWKS",
        reason,
    }
}

/// Reads the asymmetric keys of a JWKS. Symmetric (`oct`) entries are refused on purpose: the
/// HS256 secret has its own variable, and a JWKS is meant to be public.
fn parse_jwks(doc: &str) -> Result<Vec<PublicKey>, String> {
    let doc: Value = serde_json::from_str(doc).map_err(|e| format!("not JSON ({e})"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "no \"keys\" array".to_owned())?;
    let mut out = Vec::new();
    for (i, raw) in keys.iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(jwk) => jwk,
            Err(_) => continue, // a key type this edge does not know cannot verify anything
        };
        if !matches!(
            jwk.algorithm,
            AlgorithmParameters::EllipticCurve(_) | AlgorithmParameters::RSA(_)
        ) {
            continue;
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {i}: {e}"))?;
        out.push(PublicKey {
            kid: jwk.common.key_id.clone(),
            alg: raw.get("alg").cloned(),
            key,
        });
    }
    if out.is_empty() {
        return Err("no usable EC or RSA public key".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "test-secret-test-secret-test-secret!!";
    const USER: &str = "6f1c1e0a-5b7e-4b8e-9a51-0a7c2f4a1d10";
    const TENANT: &str = "0b9a53d6-3c8b-4c3f-8f8e-2f9e1b2f0c11";
    // Two P-256 key pairs made for these tests only.
    const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgStgMVn1qbnh/DBla
33qGWpPqkZV4KUk6zDyriDMjzYyhRANCAASkg7AQwdg/Rg2jYIgY/YYDls1YWtQR
qhq/uR8AxKJjEIisSkTWSnfe6AIGhUPozqVgJ0ushn0635GCGBCAakj5
-----END PRIVATE KEY-----
";
    const EC_X: &str = "pIOwEMHYP0YNo2CIGP2GA5bNWFrUEaoav7kfAMSiYxA";
    const EC_Y: &str = "iKxKRNZKd97oAgaFQ-jOpWAnS6yGfTrfkYIYEIBqSPk";
    const EC2_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgL528cEbM3qDxhSaW
5mT7POg87L1rwPV1O1iu+6iJDayhRANCAAR9J0cUzCIO6eprNwpxWTz9CRv3dppJ
NFtyDabrJoxJD36GmSKM2TK5t6zkvgIv9cbzmLNYQLFzGO6G3dBImzYf
-----END PRIVATE KEY-----
";
    const EC2_X: &str = "fSdHFMwiDunqazcKcVk8_Qkb93aaSTRbcg2m6yaMSQ8";
    const EC2_Y: &str = "foaZIozZMrm3rOS-Ai_1xvOYs1hAsXMY7obd0EibNh8";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> Value {
        json!({
            "sub": USER, "role": "authenticated", "aud": "authenticated",
            "exp": now() + 600, "iat": now(), "email": "a@example.com",
            "iss": "https://issuer.test/auth/v1",
            "session_id": "9d1f2a4e-0000-4000-8000-000000000001",
            "app_metadata": {"tenant_id": TENANT, "tenant_role": "admin"}, "user_metadata": {}
        })
    }

    fn hs(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
    }

    fn ec_key(kid: &str, x: &str, y: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"})
    }

    fn jwks() -> String {
        json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            ec_key("ec-1", EC_X, EC_Y)
        ]})
        .to_string()
    }

    fn config() -> JwtConfig {
        JwtConfig {
            jwks: Some(JwksSource::Inline(jwks())),
            algorithms: vec![Algorithm::HS256, Algorithm::ES256, Algorithm::RS256],
            ..JwtConfig::hs256(SECRET)
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(&config()).expect("verifier")
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn check(v: &Verifier, token: &str) -> Result<Verified, Error> {
        block_on(v.verify(token))
    }

    fn rejects_with(v: &Verifier, token: &str, why: &str) {
        match check(v, token) {
            Err(Error::BadToken(m)) => assert!(m.contains(why), "expected {why:?}, got {m:?}"),
            other => panic!("expected rejection ({why}), got {other:?}"),
        }
    }

    fn rejects(token: &str, why: &str) {
        rejects_with(&verifier(), token, why);
    }

    fn es256(kid: Option<&str>, pem: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).expect("pem");
        encode(&header, claims, &key).expect("encode")
    }

    /// A token signed like `hs` but with extra header fields.
    fn hs_with_header(extra: Value, claims: &Value) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let mut header = json!({"alg": "HS256", "typ": "JWT"});
        for (k, v) in extra.as_object().expect("object") {
            header[k] = v.clone();
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{signing_input}.{signature}")
    }

    #[test]
    fn good_hs256() {
        let v = check(&verifier(), &hs(&claims())).expect("valid token");
        assert_eq!(v.user_id.to_string(), USER);
        assert_eq!(v.tenant_id.map(|t| t.to_string()).as_deref(), Some(TENANT));
        assert_eq!(v.claims["email"], "a@example.com");
    }

    #[test]
    fn missing_or_bad_tenant_is_none() {
        let mut c = claims();
        c["app_metadata"]["tenant_id"] = json!("not-a-uuid");
        assert_eq!(check(&verifier(), &hs(&c)).expect("valid").tenant_id, None);
        c["app_metadata"]["tenant_id"] = json!("0b9a53d63c8b4c3f8f8e2f9e1b2f0c11");
        assert_eq!(check(&verifier(), &hs(&c)).expect("valid").tenant_id, None);
        c["app_metadata"] = json!({});
        assert_eq!(check(&verifier(), &hs(&c)).expect("valid").tenant_id, None);
    }

    #[test]
    fn forged_signature() {
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"another-secret-another-secret-!!"),
        )
        .expect("encode");
        rejects(&forged, "signature");
    }

    #[test]
    fn expired() {
        let mut c = claims();
        c["exp"] = json!(now() - 3600);
        rejects(&hs(&c), "expired");
        c.as_object_mut().map(|o| o.remove("exp"));
        rejects(&hs(&c), "required claim");
    }

    #[test]
    fn alg_none() {
        // Unpadded base64url, enough for a handcrafted token.
        let b64 = |v: Value| {
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            use base64::Engine as _;
            URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let token = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(claims())
        );
        rejects(&token, "malformed");
    }

    #[test]
    fn wrong_audience_role_and_sub() {
        let mut c = claims();
        c["aud"] = json!("someone-else");
        rejects(&hs(&c), "audience");
        let mut c = claims();
        c["role"] = json!("service_role");
        rejects(&hs(&c), "role");
        let mut c = claims();
        c["role"] = json!("anon");
        rejects(&hs(&c), "role");
        let mut c = claims();
        c["sub"] = json!("admin");
        rejects(&hs(&c), "sub");
    }

    #[test]
    fn sub_must_be_a_hyphenated_uuid() {
        let upper = USER.to_ascii_uppercase();
        let mut c = claims();
        c["sub"] = json!(upper);
        assert!(
            check(&verifier(), &hs(&c)).is_ok(),
            "hex digits in either case"
        );
        for odd in [
            USER.replace('-', ""),
            format!("{{{USER}}}"),
            format!("urn:uuid:{USER}"),
            format!(" {USER}"),
            format!("{USER}0"),
        ] {
            let mut c = claims();
            c["sub"] = json!(odd);
            rejects(&hs(&c), "sub");
        }
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let good = hs_with_header(json!({"kid": "whatever"}), &claims());
        assert!(
            check(&verifier(), &good).is_ok(),
            "the handmade token is valid"
        );
        for crit in [json!(["b64"]), json!(["exp"]), json!([])] {
            let token = hs_with_header(json!({"crit": crit, "b64": false}), &claims());
            rejects(&token, "crit");
        }
    }

    #[test]
    fn issuer_when_configured() {
        let mut config = config();
        config.issuers = vec!["https://issuer.test/auth/v1".to_owned()];
        let v = Verifier::new(&config).expect("verifier");
        assert!(check(&v, &hs(&claims())).is_ok());
        let mut c = claims();
        c["iss"] = json!("https://elsewhere.test/auth/v1");
        rejects_with(&v, &hs(&c), "issuer");
        c.as_object_mut().map(|o| o.remove("iss"));
        rejects_with(&v, &hs(&c), "required claim");
        // Without the setting any issuer passes.
        assert!(check(&verifier(), &hs(&c)).is_ok());
    }

    #[test]
    fn algorithm_not_allowed() {
        let token = encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode");
        rejects(&token, "not allowed");
    }

    #[test]
    fn es256_via_jwks() {
        let token = es256(Some("ec-1"), EC_PRIVATE_PEM, &claims());
        assert_eq!(
            check(&verifier(), &token)
                .expect("valid")
                .user_id
                .to_string(),
            USER
        );
        rejects(
            &es256(Some("unknown"), EC_PRIVATE_PEM, &claims()),
            "known key",
        );
        // The only EC key is used when there is no kid.
        assert!(check(&verifier(), &es256(None, EC_PRIVATE_PEM, &claims())).is_ok());
    }

    #[test]
    fn hs256_never_uses_public_key_material() {
        // Sign HS256 with the JWKS's public coordinates and the "sym" oct key as secrets.
        for secret in [EC_X.as_bytes(), b"secret".as_slice()] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("ec-1".to_owned());
            let token =
                encode(&header, &claims(), &EncodingKey::from_secret(secret)).expect("encode");
            rejects(&token, "signature");
        }
    }

    #[test]
    fn a_rotated_jwks_file_is_read_again_on_an_unknown_kid() {
        let dir = std::env::temp_dir().join(format!("aura-jwks-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("jwks.json");
        let write = |keys: Vec<Value>| {
            std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write jwks")
        };
        write(vec![ec_key("old", EC_X, EC_Y)]);
        let config = JwtConfig {
            hs256_secret: None,
            jwks: Some(JwksSource::File(path.clone())),
            algorithms: vec![Algorithm::ES256],
            jwks_cooldown: Duration::ZERO,
            ..JwtConfig::hs256(SECRET)
        };
        let v = Verifier::new(&config).expect("verifier");
        let new_token = es256(Some("new"), EC2_PRIVATE_PEM, &claims());
        let old_token = es256(Some("old"), EC_PRIVATE_PEM, &claims());
        assert!(check(&v, &old_token).is_ok());
        rejects_with(&v, &new_token, "known key");

        // The issuer rotates: the new key is published, the old one withdrawn.
        write(vec![ec_key("new", EC2_X, EC2_Y)]);
        assert!(
            check(&v, &new_token).is_ok(),
            "read again for the unknown kid"
        );
        rejects_with(&v, &old_token, "known key");

        // A broken file keeps the keys that were loaded.
        std::fs::write(&path, "{not json").expect("write");
        let jwks = v.reloadable_jwks().expect("a file source reloads");
        assert!(block_on(jwks.reload()).is_err());
        assert!(check(&v, &new_token).is_ok());

        // With a cooldown, a burst of unknown kids reads the file at most once.
        let config = JwtConfig {
            jwks_cooldown: Duration::from_secs(3600),
            ..config
        };
        write(vec![ec_key("old", EC_X, EC_Y)]);
        let v = Verifier::new(&config).expect("verifier");
        rejects_with(&v, &new_token, "known key"); // reads once: still no "new" key
        write(vec![ec_key("new", EC2_X, EC2_Y)]);
        rejects_with(&v, &new_token, "known key"); // within the cooldown: not read again
        assert!(block_on(v.reloadable_jwks().expect("file").reload()).is_ok());
        assert!(
            check(&v, &new_token).is_ok(),
            "the periodic reload picks it up"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_jwks_url_must_be_https_unless_on_this_machine() {
        let with = |url: &str| {
            Verifier::new(&JwtConfig {
                jwks: Some(JwksSource::Url(url.to_owned())),
                ..config()
            })
        };
        assert!(with("https://p.supabase.co/auth/v1/.well-known/jwks.json").is_ok());
        assert!(with("http://127.0.0.1:9999/jwks.json").is_ok());
        assert!(with("http://localhost/jwks.json").is_ok());
        assert!(with("http://p.supabase.co/auth/v1/.well-known/jwks.json").is_err());
        assert!(with("http://10.0.0.5/jwks.json").is_err());
    }

    #[test]
    fn config_checks() {
        let short = JwtConfig::hs256("short");
        assert!(Verifier::new(&short).is_err());
        let mut no_key = JwtConfig::hs256(SECRET);
        no_key.algorithms = vec![Algorithm::ES256];
        assert!(Verifier::new(&no_key).is_err());
        assert!(is_hyphenated_uuid(USER));
        assert!(!is_hyphenated_uuid(&USER.replace('-', "")));
    }
}
