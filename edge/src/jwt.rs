//! JWT verification.
//!
//! The algorithm comes from the token header, so it is the attacker's choice: it must be on the
//! allowlist, and it decides the key *family* before any key is picked. HMAC algorithms only
//! ever use the configured secret; RSA/EC algorithms only ever use JWKS public keys of the same
//! family. That rules out the classic confusion of verifying an HS256 token with a public key
//! as the secret, and `alg: none` never parses. The verified claims are handed to the database
//! whole; `crm_private.begin_request` re-checks session, membership and tenant live.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{decode, decode_header, Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use uuid::Uuid;

use crate::config::{ConfigError, JwtConfig};
use crate::error::Error;

/// Seconds of clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECS: u64 = 30;
const MIN_SECRET_BYTES: usize = 32;

/// Verifies bearer tokens against the configured keys.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Vec<PublicKey>,
    audience: String,
    algorithms: Vec<Algorithm>,
}

struct PublicKey {
    kid: Option<String>,
    /// The JWK's own `alg`, serialized, when it pins one.
    alg: Option<Value>,
    key: DecodingKey,
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
        let jwks = match &config.jwks_json {
            Some(doc) => parse_jwks(doc)?,
            None => Vec::new(),
        };
        let usable = config.algorithms.iter().any(|alg| match alg.family() {
            AlgorithmFamily::Hmac => secret.is_some(),
            family => jwks.iter().any(|k| k.key.family() == family),
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
            algorithms: config.algorithms.clone(),
        })
    }

    /// Verifies a token (without the `Bearer ` prefix). Every failure is a 401.
    pub fn verify(&self, token: &str) -> Result<Verified, Error> {
        let bad = |m: &str| Error::BadToken(m.to_owned());
        let header = decode_header(token)
            .map_err(|_| bad("JWT is malformed or uses an unsupported algorithm"))?;
        let alg = header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(bad("JWT algorithm is not allowed"));
        }
        let key = match alg.family() {
            AlgorithmFamily::Hmac => self.secret.as_ref(),
            family => self.public_key(alg, family, header.kid.as_deref()),
        }
        .ok_or_else(|| bad("JWT was not signed by a known key"))?;

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let claims = decode::<Value>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            bad(match e.kind() {
                K::ExpiredSignature => "JWT expired",
                K::InvalidSignature => "JWT signature is invalid",
                K::InvalidAudience => "JWT audience is not accepted",
                K::ImmatureSignature => "JWT is not valid yet",
                K::MissingRequiredClaim(_) => "JWT lacks a required claim (exp, aud, sub)",
                K::InvalidAlgorithm => "JWT algorithm does not match the key",
                _ => "JWT is invalid",
            })
        })?;
        let claims = claims.claims;
        if !claims.is_object() {
            return Err(bad("JWT claims are not an object"));
        }
        let user_id = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| bad("JWT sub claim is not a user id"))?;
        if claims.get("role").and_then(Value::as_str) != Some("authenticated") {
            return Err(bad(
                "JWT role is not accepted: this API serves authenticated users only",
            ));
        }
        let tenant_id = claims
            .pointer("/app_metadata/tenant_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        Ok(Verified {
            claims,
            user_id,
            tenant_id,
        })
    }

    fn public_key(
        &self,
        alg: Algorithm,
        family: AlgorithmFamily,
        kid: Option<&str>,
    ) -> Option<&DecodingKey> {
        let alg_json = serde_json::to_value(alg).ok();
        let mut candidates = self
            .jwks
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
}

/// Reads the asymmetric keys of a JWKS. Symmetric (`oct`) entries are refused on purpose: the
/// HS256 secret has its own variable, and a JWKS is meant to be public.
fn parse_jwks(doc: &str) -> Result<Vec<PublicKey>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        var: "AURA_JWT_JWKS",
        reason,
    };
    let doc: Value = serde_json::from_str(doc).map_err(|e| invalid(format!("not JSON ({e})")))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no \"keys\" array".to_owned()))?;
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
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| invalid(format!("key {i}: {e}")))?;
        out.push(PublicKey {
            kid: jwk.common.key_id.clone(),
            alg: raw.get("alg").cloned(),
            key,
        });
    }
    if out.is_empty() {
        return Err(invalid("no usable EC or RSA public key".to_owned()));
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
    // A P-256 key pair made for these tests only.
    const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgStgMVn1qbnh/DBla
33qGWpPqkZV4KUk6zDyriDMjzYyhRANCAASkg7AQwdg/Rg2jYIgY/YYDls1YWtQR
qhq/uR8AxKJjEIisSkTWSnfe6AIGhUPozqVgJ0ushn0635GCGBCAakj5
-----END PRIVATE KEY-----
";
    const EC_X: &str = "pIOwEMHYP0YNo2CIGP2GA5bNWFrUEaoav7kfAMSiYxA";
    const EC_Y: &str = "iKxKRNZKd97oAgaFQ-jOpWAnS6yGfTrfkYIYEIBqSPk";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> Value {
        json!({
            "sub": USER, "role": "authenticated", "aud": "authenticated",
            "exp": now() + 600, "iat": now(), "email": "a@example.com",
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

    fn jwks() -> String {
        json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "ec-1", "alg": "ES256", "use": "sig"}
        ]})
        .to_string()
    }

    fn verifier() -> Verifier {
        let config = JwtConfig {
            hs256_secret: Some(SECRET.to_owned()),
            jwks_json: Some(jwks()),
            audience: "authenticated".to_owned(),
            algorithms: vec![Algorithm::HS256, Algorithm::ES256, Algorithm::RS256],
        };
        Verifier::new(&config).expect("verifier")
    }

    fn rejects(token: &str, why: &str) {
        match verifier().verify(token) {
            Err(Error::BadToken(m)) => assert!(m.contains(why), "expected {why:?}, got {m:?}"),
            other => panic!("expected rejection ({why}), got {other:?}"),
        }
    }

    #[test]
    fn good_hs256() {
        let v = verifier().verify(&hs(&claims())).expect("valid token");
        assert_eq!(v.user_id.to_string(), USER);
        assert_eq!(v.tenant_id.map(|t| t.to_string()).as_deref(), Some(TENANT));
        assert_eq!(v.claims["email"], "a@example.com");
    }

    #[test]
    fn missing_or_bad_tenant_is_none() {
        let mut c = claims();
        c["app_metadata"]["tenant_id"] = json!("not-a-uuid");
        assert_eq!(verifier().verify(&hs(&c)).expect("valid").tenant_id, None);
        c["app_metadata"] = json!({});
        assert_eq!(verifier().verify(&hs(&c)).expect("valid").tenant_id, None);
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
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = v.to_string().into_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            out
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
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("pem");
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-1".to_owned());
        let token = encode(&header, &claims(), &key).expect("encode");
        assert_eq!(
            verifier()
                .verify(&token)
                .expect("valid")
                .user_id
                .to_string(),
            USER
        );

        header.kid = Some("unknown".to_owned());
        rejects(
            &encode(&header, &claims(), &key).expect("encode"),
            "known key",
        );
        header.kid = None; // the only EC key is used when there is no kid
        assert!(verifier()
            .verify(&encode(&header, &claims(), &key).expect("encode"))
            .is_ok());
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
    fn config_checks() {
        let short = JwtConfig::hs256("short");
        assert!(Verifier::new(&short).is_err());
        let mut no_key = JwtConfig::hs256(SECRET);
        no_key.algorithms = vec![Algorithm::ES256];
        assert!(Verifier::new(&no_key).is_err());
    }
}
