//! Configuration, read once from the environment at startup.
//!
//! The edge refuses to start on a configuration that could only fail later or silently weaken
//! authentication (no key at all, a short HS256 secret, an unparsable database URL or JWKS), so
//! an operator sees the mistake at deploy time and not as a stream of 401s or 503s.

use std::net::SocketAddr;
use std::str::FromStr;

use jsonwebtoken::Algorithm;

/// How the edge runs. Built by [`Config::from_env`] from these variables:
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `AURA_LISTEN` | address and port to listen on | `127.0.0.1:3000` |
/// | `AURA_AUTHENTICATOR_URL` | libpq-style URL or `key=value` string the edge logs in with, as the `authenticator` role, e.g. `postgresql://authenticator:pw@127.0.0.1:54329/aura` or `host=/run/postgresql user=authenticator dbname=aura` (unix socket directory) | required |
/// | `AURA_DB_POOL_SIZE` | maximum pooled connections | `10` |
/// | `AURA_JWT_SECRET` | HS256 shared secret, at least 32 bytes | unset |
/// | `AURA_JWT_JWKS` | JWKS document (ES256/RS256 public keys with `kid`), inline JSON or `@/path/to/file` | unset |
/// | `AURA_JWT_AUD` | required `aud` claim | `authenticated` |
/// | `AURA_JWT_ALGORITHMS` | comma-separated allowlist of JWT algorithms | `HS256` if a secret is set, plus `ES256,RS256` if a JWKS is set |
/// | `AURA_LOG` | tracing filter directive | `info` |
///
/// At least one of `AURA_JWT_SECRET` and `AURA_JWT_JWKS` is required. Empty values count as unset.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub pool_size: usize,
    pub jwt: JwtConfig,
    pub listen: SocketAddr,
    /// `tracing_subscriber::EnvFilter` directive; used by the binary, ignored by [`crate::serve`].
    pub log_filter: String,
}

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub hs256_secret: Option<String>,
    /// A JWKS document (`{"keys": [...]}`), already read from its file if one was named.
    pub jwks_json: Option<String>,
    pub audience: String,
    /// Only tokens whose header `alg` is listed here are considered.
    pub algorithms: Vec<Algorithm>,
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

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
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
            jwks_json: None,
            audience: "authenticated".to_owned(),
            algorithms: vec![Algorithm::HS256],
        }
    }
}

impl Config {
    /// Defaults for everything but the database URL and the JWT keys.
    pub fn new(database_url: impl Into<String>, jwt: JwtConfig) -> Config {
        Config {
            database_url: database_url.into(),
            pool_size: 10,
            jwt,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            log_filter: "info".to_owned(),
        }
    }

    /// Reads the `AURA_*` variables described on [`Config`] and validates them.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| {
            std::env::var_os(name).map(|v| v.into_string().unwrap_or_else(|_| "\u{fffd}".into()))
        })
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let listen = match var("AURA_LISTEN") {
            Some(v) => SocketAddr::from_str(v.trim())
                .map_err(|e| invalid("AURA_LISTEN", format!("not an address:port ({e})")))?,
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
        };
        let database_url =
            var("AURA_AUTHENTICATOR_URL").ok_or(ConfigError::Missing("AURA_AUTHENTICATOR_URL"))?;
        tokio_postgres::Config::from_str(&database_url).map_err(|e| {
            invalid(
                "AURA_AUTHENTICATOR_URL",
                format!("not a valid connection string ({e})"),
            )
        })?;
        let pool_size = match var("AURA_DB_POOL_SIZE") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| invalid("AURA_DB_POOL_SIZE", "must be an integer from 1 to 1000"))?,
            None => 10,
        };

        let hs256_secret = var("AURA_JWT_SECRET");
        let jwks_json =
            match var("AURA_JWT_JWKS") {
                Some(v) => match v.trim().strip_prefix('@') {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                        invalid("AURA_JWT_JWKS", format!("cannot read {path}: {e}"))
                    })?),
                    None => Some(v),
                },
                None => None,
            };
        if hs256_secret.is_none() && jwks_json.is_none() {
            return Err(ConfigError::Missing("AURA_JWT_SECRET or AURA_JWT_JWKS"));
        }
        let audience = var("AURA_JWT_AUD").unwrap_or_else(|| "authenticated".to_owned());
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
                if jwks_json.is_some() {
                    algs.extend([Algorithm::ES256, Algorithm::RS256]);
                }
                algs
            }
        };
        let jwt = JwtConfig {
            hs256_secret,
            jwks_json,
            audience,
            algorithms,
        };
        crate::jwt::Verifier::new(&jwt)?;

        Ok(Config {
            database_url,
            pool_size,
            jwt,
            listen,
            log_filter: var("AURA_LOG").unwrap_or_else(|| "info".to_owned()),
        })
    }
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
        assert_eq!(c.jwt.audience, "authenticated");
        assert_eq!(c.jwt.algorithms, vec![Algorithm::HS256]);
        assert_eq!(c.log_filter, "info");
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
    }

    #[test]
    fn unix_socket_connection_string() {
        let socket = (
            "AURA_AUTHENTICATOR_URL",
            "host=/tmp/pgsock user=authenticator dbname=aura",
        );
        assert!(lookup(&[socket, SECRET]).is_ok());
    }
}
