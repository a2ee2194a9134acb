//! Configuration, read once from the environment at startup.
//!
//! The edge refuses to start on a configuration that could only fail later or silently weaken
//! authentication (no key at all, a short HS256 secret, an unparsable database URL, JWKS or
//! TLS setting), so an operator sees the mistake at deploy time and not as a stream of 401s
//! or 503s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::pgtls::DbTarget;

/// How the edge runs. Built by [`Config::from_env`] from these variables:
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `AURA_LISTEN` | address and port to listen on | `127.0.0.1:3000` |
/// | `AURA_AUTHENTICATOR_URL` | libpq-style URL or `key=value` string the edge logs in with, as the `authenticator` role; `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or `system`) as in libpq | required |
/// | `AURA_DB_POOL_SIZE` | maximum pooled connections | `10` |
/// | `AURA_STATEMENT_TIMEOUT` | longest a request's statements may run | `15s` |
/// | `AURA_TENANT_POOL_SHARE` | the share of the pool one tenant may hold at once, `0 < share <= 1` | `0.5` |
/// | `AURA_TENANT_QUEUE` | requests of one tenant that may wait for its share; more get 429 | `64` |
/// | `AURA_RATE_LIMIT` | API requests per user and minute, across all edges (0: off); operators set a tenant's own with `crm_private.set_rate_limit` | `100` |
/// | `AURA_RATE_LIMIT_SYNC` | how often each edge shares its request counts through the database | `1s` |
/// | `AURA_HTTP_MAX_CONNECTIONS` | open client connections; at the cap the longest-idle one is closed for a new one | `1000` |
/// | `AURA_HTTP_HEADER_TIMEOUT` | time to receive a request's headers | `10s` |
/// | `AURA_HTTP_BODY_TIMEOUT` | time to receive a request body, and to send a response | `30s` |
/// | `AURA_HTTP_KEEPALIVE_TIMEOUT` | how long an idle keep-alive connection is kept | `75s` |
/// | `AURA_HTTP_MAX_BODY_BYTES` | largest request body (413 above) | `1048576` |
/// | `AURA_IMPORT_MAX_BYTES` | largest CSV file a `/rest/v1/import` request may upload (413 above); it streams, so this bounds the time, not the memory | `268435456` |
/// | `AURA_HTTP_MAX_HEADER_BYTES` | largest request head (431 above) | `16384` |
/// | `AURA_JWT_SECRET` | HS256 shared secret, at least 32 bytes | unset |
/// | `AURA_JWT_JWKS` | JWKS (ES256/RS256 public keys with `kid`): inline JSON, `@/path/to/file` or an `https://` URL | unset |
/// | `AURA_JWT_JWKS_REFRESH` | how often a JWKS file or URL is read again (also on an unknown `kid`) | `300s` |
/// | `AURA_JWT_AUD` | required `aud` claim | `authenticated` |
/// | `AURA_JWT_ISSUER` | accepted `iss` values, comma-separated; unset: not checked | unset |
/// | `AURA_JWT_ALGORITHMS` | comma-separated allowlist of JWT algorithms | `HS256` if a secret is set, plus `ES256,RS256` if a JWKS is set |
/// | `AURA_JWT_EXPIRY` | lifetime of the access tokens `/auth/v1` issues | `3600s` |
/// | `AURA_JWT_SIGNING_KEY` | PEM file of an EC P-256 private key: sign with ES256 and publish the public key at `/auth/v1/.well-known/jwks.json` (else HS256 with `AURA_JWT_SECRET`) | unset |
/// | `AURA_JWT_SIGNING_KID` | key id of that key | `aura-1` |
/// | `AURA_JWT_SIGNING_ISSUER` | `iss` of the tokens `/auth/v1` issues | the first `AURA_JWT_ISSUER`, else `aura` |
/// | `AURA_MAIL_DIR` | without SMTP, where each outgoing email is written as an `.eml` file | `mail` |
/// | `AURA_SMTP_URL` | deliver email over SMTP: `smtp://user:pass@host:587` (STARTTLS), `smtps://…` (TLS) or `smtp://host:25?tls=none` | unset |
/// | `AURA_MAIL_FROM` | the sender of outgoing email | `Aura <noreply@localhost>` |
/// | `AURA_MAIL_POLL` | how often the outbox is checked for email to send | `1s` |
/// | `AURA_CORS_ORIGINS` | origins browsers may call from, comma-separated, or `*` | `*` |
/// | `AURA_LOG` | tracing filter directive | `info` |
///
/// At least one of `AURA_JWT_SECRET` and `AURA_JWT_JWKS` is required. Empty values count as
/// unset. Durations are seconds (`2.5`) or carry a unit (`500ms`, `10s`, `5m`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The connection string as given (`AURA_AUTHENTICATOR_URL`).
    pub database_url: String,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub tenant_pool_share: f64,
    pub tenant_queue: usize,
    /// Requests per user and minute across all edges (0: off), unless operators set a
    /// tenant's own (`crm_private.set_rate_limit`).
    pub rate_limit: u32,
    /// How often this edge shares its request counts with the others.
    pub rate_limit_sync: Duration,
    pub http: HttpLimits,
    pub jwt: JwtConfig,
    pub listen: SocketAddr,
    pub auth: AuthConfig,
    /// `tracing_subscriber::EnvFilter` directive; used by the binary, ignored by [`crate::serve`].
    pub log_filter: String,
}

/// The `/auth/v1` service's edge-side settings (the rules are in the database's
/// `crm_private.auth_settings`): token signing, email delivery, CORS.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub access_token_ttl: Duration,
    /// PEM of an EC P-256 private key (ES256); `None`: HS256 with the shared secret.
    pub signing_key_pem: Option<String>,
    pub signing_kid: String,
    pub issuer: String,
    pub mail_dir: PathBuf,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub mail_poll: Duration,
    /// Allowed browser origins; `*` allows any.
    pub cors_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl: Duration::from_secs(3600),
            signing_key_pem: None,
            signing_kid: "aura-1".to_owned(),
            issuer: "aura".to_owned(),
            mail_dir: PathBuf::from("mail"),
            smtp_url: None,
            mail_from: "Aura <noreply@localhost>".to_owned(),
            mail_poll: Duration::from_secs(1),
            cors_origins: vec!["*".to_owned()],
        }
    }
}

/// What a client connection may cost: see [`crate::server`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    /// The largest file an import may upload (streamed, never held whole).
    pub max_import_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            max_import_bytes: 256 << 20,
        }
    }
}

/// Where the JWKS comes from. A file or URL is read again every [`JwtConfig::jwks_refresh`]
/// and when a token names a key id it does not hold, so keys rotate without a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    Inline(String),
    File(PathBuf),
    Url(String),
}

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub hs256_secret: Option<String>,
    pub jwks: Option<JwksSource>,
    pub audience: String,
    /// Accepted `iss` values; empty means the issuer is not checked.
    pub issuers: Vec<String>,
    /// Only tokens whose header `alg` is listed here are considered.
    pub algorithms: Vec<Algorithm>,
    pub jwks_refresh: Duration,
    /// The shortest time between two reloads caused by unknown key ids, so a stream of
    /// tokens with made-up `kid`s cannot turn into a stream of fetches.
    pub jwks_cooldown: Duration,
}

/// A configuration problem, named by its variable.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    Missing(&'static str),
    Invalid { var: &'static str, reason: String },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Missing(var) => write!(f, "{var} is required but not set"),
            ConfigError::Invalid { var, reason } => write!(f, "{var}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

impl JwtConfig {
    /// HS256 only, audience `authenticated`.
    pub fn hs256(secret: impl Into<String>) -> JwtConfig {
        JwtConfig {
            hs256_secret: Some(secret.into()),
            jwks: None,
            audience: "authenticated".to_owned(),
            issuers: Vec::new(),
            algorithms: vec![Algorithm::HS256],
            jwks_refresh: Duration::from_secs(300),
            jwks_cooldown: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Defaults for everything but the database URL and the JWT keys.
    pub fn new(database_url: impl Into<String>, jwt: JwtConfig) -> Config {
        Config {
            database_url: database_url.into(),
            pool_size: 10,
            statement_timeout: Duration::from_secs(15),
            tenant_pool_share: 0.5,
            tenant_queue: 64,
            rate_limit: 100,
            rate_limit_sync: Duration::from_secs(1),
            http: HttpLimits::default(),
            jwt,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            auth: AuthConfig::default(),
            log_filter: "info".to_owned(),
        }
    }

    /// The most pooled connections one tenant may hold at once (at least one).
    pub fn tenant_max_connections(&self) -> usize {
        ((self.pool_size as f64 * self.tenant_pool_share).floor() as usize).clamp(1, self.pool_size)
    }

    /// Reads the `AURA_*` variables described on [`Config`] and validates them.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| {
            std::env::var_os(name).map(|v| v.into_string().unwrap_or_else(|_| "\u{fffd}".into()))
        })
    }

    /// As [`Config::from_env`], reading the variables from `get` (for tests and embedding).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Self::from_lookup(get)
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let duration = |name: &'static str, default: Duration| match var(name) {
            Some(v) => parse_duration(v.trim())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(name, "must be a duration such as 2.5, 500ms, 10s or 5m")),
            None => Ok(default),
        };
        let count =
            |name: &'static str, default: usize, range: std::ops::RangeInclusive<usize>| match var(
                name,
            ) {
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        invalid(
                            name,
                            format!(
                                "must be an integer from {} to {}",
                                range.start(),
                                range.end()
                            ),
                        )
                    }),
                None => Ok(default),
            };
        let defaults = Config::new(String::new(), JwtConfig::hs256(""));

        let listen = match var("AURA_LISTEN") {
            Some(v) => SocketAddr::from_str(v.trim())
                .map_err(|e| invalid("AURA_LISTEN", format!("not an address:port ({e})")))?,
            None => defaults.listen,
        };
        let database_url =
            var("AURA_AUTHENTICATOR_URL").ok_or(ConfigError::Missing("AURA_AUTHENTICATOR_URL"))?;
        DbTarget::parse(&database_url)?;
        let pool_size = count("AURA_DB_POOL_SIZE", defaults.pool_size, 1..=1000)?;
        let statement_timeout = duration("AURA_STATEMENT_TIMEOUT", defaults.statement_timeout)?;
        let tenant_pool_share = match var("AURA_TENANT_POOL_SHARE") {
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && *s <= 1.0)
                .ok_or_else(|| {
                    invalid(
                        "AURA_TENANT_POOL_SHARE",
                        "must be a fraction above 0 and at most 1",
                    )
                })?,
            None => defaults.tenant_pool_share,
        };
        let tenant_queue = count("AURA_TENANT_QUEUE", defaults.tenant_queue, 0..=100_000)?;
        let rate_limit = count(
            "AURA_RATE_LIMIT",
            defaults.rate_limit as usize,
            0..=1_000_000,
        )? as u32;
        let rate_limit_sync = duration("AURA_RATE_LIMIT_SYNC", defaults.rate_limit_sync)?;
        let d = HttpLimits::default();
        let http = HttpLimits {
            max_connections: count(
                "AURA_HTTP_MAX_CONNECTIONS",
                d.max_connections,
                1..=1_000_000,
            )?,
            header_timeout: duration("AURA_HTTP_HEADER_TIMEOUT", d.header_timeout)?,
            body_timeout: duration("AURA_HTTP_BODY_TIMEOUT", d.body_timeout)?,
            keep_alive_timeout: duration("AURA_HTTP_KEEPALIVE_TIMEOUT", d.keep_alive_timeout)?,
            max_body_bytes: count("AURA_HTTP_MAX_BODY_BYTES", d.max_body_bytes, 1..=1 << 30)?,
            max_header_bytes: count(
                "AURA_HTTP_MAX_HEADER_BYTES",
                d.max_header_bytes,
                1024..=1 << 20,
            )?,
            max_import_bytes: count("AURA_IMPORT_MAX_BYTES", d.max_import_bytes, 1..=1 << 40)?,
        };

        let hs256_secret = var("AURA_JWT_SECRET");
        let auth_defaults = AuthConfig::default();
        let signing_key_pem = match var("AURA_JWT_SIGNING_KEY") {
            Some(path) => Some(std::fs::read_to_string(path.trim()).map_err(|e| {
                invalid(
                    "AURA_JWT_SIGNING_KEY",
                    format!("cannot read {}: {e}", path.trim()),
                )
            })?),
            None => None,
        };
        let signing_kid = var("AURA_JWT_SIGNING_KID").unwrap_or(auth_defaults.signing_kid.clone());
        let mut jwks = var("AURA_JWT_JWKS").map(|v| {
            let v = v.trim().to_owned();
            if let Some(path) = v.strip_prefix('@') {
                JwksSource::File(PathBuf::from(path))
            } else if v.starts_with("https://") || v.starts_with("http://") {
                JwksSource::Url(v)
            } else {
                JwksSource::Inline(v)
            }
        });
        // Tokens this edge signs with its own key verify against that key's public half.
        let mut own_es256 = false;
        if let (Some(pem), None) = (&signing_key_pem, &jwks) {
            let probe = AuthConfig {
                signing_key_pem: Some(pem.clone()),
                signing_kid: signing_kid.clone(),
                ..AuthConfig::default()
            };
            let signer = crate::auth::Signer::new(&JwtConfig::hs256(""), &probe)?;
            if let Some(keys) = signer.as_ref().and_then(|s| s.jwks()) {
                jwks = Some(JwksSource::Inline(keys.to_string()));
                own_es256 = true;
            }
        }
        if hs256_secret.is_none() && jwks.is_none() {
            return Err(ConfigError::Missing("AURA_JWT_SECRET or AURA_JWT_JWKS"));
        }
        let audience = var("AURA_JWT_AUD").unwrap_or_else(|| "authenticated".to_owned());
        let issuers = var("AURA_JWT_ISSUER")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let algorithms = match var("AURA_JWT_ALGORITHMS") {
            Some(v) => v
                .split(',')
                .map(|a| {
                    Algorithm::from_str(a.trim()).map_err(|_| {
                        invalid(
                            "AURA_JWT_ALGORITHMS",
                            format!("unknown algorithm {:?}", a.trim()),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let mut algs = Vec::new();
                if hs256_secret.is_some() {
                    algs.push(Algorithm::HS256);
                }
                if own_es256 {
                    algs.push(Algorithm::ES256);
                } else if jwks.is_some() {
                    algs.extend([Algorithm::ES256, Algorithm::RS256]);
                }
                algs
            }
        };
        let jwt = JwtConfig {
            hs256_secret,
            jwks,
            audience,
            issuers,
            algorithms,
            jwks_refresh: duration("AURA_JWT_JWKS_REFRESH", Duration::from_secs(300))?,
            jwks_cooldown: Duration::from_secs(10),
        };
        crate::jwt::Verifier::new(&jwt)?;
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let auth = AuthConfig {
            access_token_ttl: duration("AURA_JWT_EXPIRY", auth_defaults.access_token_ttl)?,
            signing_key_pem,
            signing_kid,
            issuer: var("AURA_JWT_SIGNING_ISSUER")
                .or_else(|| jwt.issuers.first().cloned())
                .unwrap_or(auth_defaults.issuer),
            mail_dir: var("AURA_MAIL_DIR")
                .map(PathBuf::from)
                .unwrap_or(auth_defaults.mail_dir),
            smtp_url: var("AURA_SMTP_URL"),
            mail_from: var("AURA_MAIL_FROM").unwrap_or(auth_defaults.mail_from),
            mail_poll: duration("AURA_MAIL_POLL", auth_defaults.mail_poll)?,
            cors_origins: var("AURA_CORS_ORIGINS")
                .map(list)
                .unwrap_or(auth_defaults.cors_origins),
        };
        if auth.access_token_ttl < Duration::from_secs(120) {
            return Err(invalid(
                "AURA_JWT_EXPIRY",
                "must be at least 120s: clients refresh tokens that expire within 90 seconds",
            ));
        }

        Ok(Config {
            database_url,
            pool_size,
            statement_timeout,
            tenant_pool_share,
            tenant_queue,
            rate_limit,
            rate_limit_sync,
            http,
            jwt,
            listen,
            auth,
            log_filter: var("AURA_LOG").unwrap_or_else(|| "info".to_owned()),
        })
    }
}

/// `2.5` (seconds), `500ms`, `10s`, `5m`.
fn parse_duration(s: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok()? * scale;
    (seconds.is_finite() && (0.0..=86_400.0 * 365.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    const URL: (&str, &str) = (
        "AURA_AUTHENTICATOR_URL",
        "postgresql://authenticator:pw@127.0.0.1:54329/aura",
    );
    const SECRET: (&str, &str) = ("AURA_JWT_SECRET", "0123456789abcdef0123456789abcdef");

    #[test]
    fn defaults() {
        let c = lookup(&[URL, SECRET]).expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.pool_size, 10);
        assert_eq!(c.tenant_max_connections(), 5);
        assert_eq!(c.tenant_queue, 64);
        assert_eq!(c.statement_timeout, Duration::from_secs(15));
        assert_eq!(c.http, HttpLimits::default());
        assert_eq!(c.jwt.audience, "authenticated");
        assert!(c.jwt.issuers.is_empty());
        assert_eq!(c.jwt.algorithms, vec![Algorithm::HS256]);
        assert_eq!(c.log_filter, "info");
    }

    #[test]
    fn limits_and_shares() {
        let c = lookup(&[
            URL,
            SECRET,
            ("AURA_DB_POOL_SIZE", "3"),
            ("AURA_TENANT_POOL_SHARE", "0.25"),
            ("AURA_HTTP_HEADER_TIMEOUT", "500ms"),
            ("AURA_HTTP_BODY_TIMEOUT", "2.5"),
            ("AURA_HTTP_KEEPALIVE_TIMEOUT", "1m"),
            ("AURA_HTTP_MAX_CONNECTIONS", "20"),
            ("AURA_JWT_ISSUER", "https://a.test/auth/v1, https://b.test"),
        ])
        .expect("valid");
        assert_eq!(
            c.tenant_max_connections(),
            1,
            "a share never rounds to zero"
        );
        assert_eq!(c.http.header_timeout, Duration::from_millis(500));
        assert_eq!(c.http.body_timeout, Duration::from_millis(2500));
        assert_eq!(c.http.keep_alive_timeout, Duration::from_secs(60));
        assert_eq!(c.http.max_connections, 20);
        assert_eq!(c.jwt.issuers, ["https://a.test/auth/v1", "https://b.test"]);
        for bad in [
            ("AURA_TENANT_POOL_SHARE", "0"),
            ("AURA_TENANT_POOL_SHARE", "1.5"),
            ("AURA_HTTP_HEADER_TIMEOUT", "soon"),
            ("AURA_HTTP_HEADER_TIMEOUT", "0"),
            ("AURA_HTTP_MAX_CONNECTIONS", "0"),
            ("AURA_HTTP_MAX_HEADER_BYTES", "10"),
        ] {
            assert!(
                matches!(lookup(&[URL, SECRET, bad]), Err(ConfigError::Invalid { var, .. }) if var == bad.0),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_settings() {
        assert_eq!(
            lookup(&[SECRET]).unwrap_err(),
            ConfigError::Missing("AURA_AUTHENTICATOR_URL")
        );
        assert!(matches!(lookup(&[URL]), Err(ConfigError::Missing(_))));
        let short = ("AURA_JWT_SECRET", "too-short");
        assert!(matches!(
            lookup(&[URL, short]),
            Err(ConfigError::Invalid {
                var: "AURA_JWT_SECRET",
                ..
            })
        ));
        let none = ("AURA_JWT_ALGORITHMS", "HS256,none");
        assert!(matches!(
            lookup(&[URL, SECRET, none]),
            Err(ConfigError::Invalid { .. })
        ));
        let pool = ("AURA_DB_POOL_SIZE", "0");
        assert!(matches!(
            lookup(&[URL, SECRET, pool]),
            Err(ConfigError::Invalid { .. })
        ));
        let tls = (
            "AURA_AUTHENTICATOR_URL",
            "postgresql://a@db.test/aura?sslmode=verify-full",
        );
        assert!(matches!(
            lookup(&[tls, SECRET]),
            Err(ConfigError::Invalid { var: "AURA_AUTHENTICATOR_URL", reason }) if reason.contains("sslrootcert")
        ));
    }

    #[test]
    fn jwks_sources() {
        let url = (
            "AURA_JWT_JWKS",
            "https://p.supabase.co/auth/v1/.well-known/jwks.json",
        );
        let c = lookup(&[URL, url]).expect("a URL is fetched later");
        assert_eq!(c.jwt.jwks, Some(JwksSource::Url(url.1.to_owned())));
        assert_eq!(c.jwt.algorithms, vec![Algorithm::ES256, Algorithm::RS256]);
        let missing = ("AURA_JWT_JWKS", "@/nonexistent/jwks.json");
        assert!(matches!(
            lookup(&[URL, missing]),
            Err(ConfigError::Invalid {
                var: "AURA_JWT_JWKS",
                ..
            })
        ));
    }

    #[test]
    fn unix_socket_connection_string() {
        let socket = (
            "AURA_AUTHENTICATOR_URL",
            "host=/tmp/pgsock user=authenticator dbname=aura",
        );
        assert!(lookup(&[socket, SECRET]).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        for bad in ["", "-1", "x", "1h", "NaN", "inf"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
