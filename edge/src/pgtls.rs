//! TLS to PostgreSQL with libpq's meaning of `sslmode` and `sslrootcert`, on rustls.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and has no notion of a root
//! certificate, so the edge reads those two settings out of the connection string itself,
//! hands tokio-postgres the rest, and supplies the TLS connector that does what libpq does:
//!
//! | sslmode | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | – | – |
//! | `prefer` (libpq's default) | if the server offers it | no | no |
//! | `require` | yes | only if `sslrootcert` is given (then as `verify-ca`) | no |
//! | `verify-ca` | yes | against `sslrootcert` | no |
//! | `verify-full` | yes | against `sslrootcert` | yes |
//!
//! `sslrootcert` is a PEM file of trusted CA certificates, or `system` for the operating
//! system's store. Without it `verify-ca`/`verify-full` are refused at startup (libpq would
//! look in `~/.postgresql/root.crt`; a service should say where its trust comes from).
//! Unix-socket connections never use TLS.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use crate::config::{invalid, ConfigError};

const VAR: &str = "AURA_AUTHENTICATOR_URL";

/// libpq's `sslmode` values the edge supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(invalid(
                    VAR,
                    "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full",
                ))
            }
            other => {
                return Err(invalid(
                    VAR,
                    format!(
                        "unknown sslmode {:?}: use disable, prefer, require, verify-ca or verify-full",
                        other.chars().take(32).collect::<String>()
                    ),
                ))
            }
        })
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// A parsed `AURA_AUTHENTICATOR_URL`: tokio-postgres's config and the TLS connector for it.
#[derive(Clone)]
pub struct DbTarget {
    pub pg: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub tls: MakeRustls,
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbTarget")
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

impl DbTarget {
    pub fn parse(connection_string: &str) -> Result<DbTarget, ConfigError> {
        let (rest, settings) = take_tls_settings(connection_string)?;
        let mut pg = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| invalid(VAR, format!("not a valid connection string ({e})")))?;
        if settings.ssl_mode.is_none() && pg.get_ssl_mode() != PgSslMode::Prefer {
            // tokio-postgres found an sslmode this parser did not: never guess which wins.
            return Err(invalid(
                VAR,
                "sslmode could not be read; write it as ?sslmode=... (URL) or sslmode=... (key=value)",
            ));
        }
        let system = settings.root_cert.as_deref() == Some("system");
        let ssl_mode = match (&settings.ssl_mode, system) {
            (Some(m), _) => m.parse()?,
            // libpq (16): trusting the public store only makes sense with the name checked.
            (None, true) => SslMode::VerifyFull,
            (None, false) => SslMode::Prefer,
        };
        if system && ssl_mode != SslMode::VerifyFull {
            return Err(invalid(
                VAR,
                "sslrootcert=system needs sslmode=verify-full: any publicly trusted certificate would pass otherwise",
            ));
        }
        let roots = match settings.root_cert.as_deref() {
            None => None,
            Some("system") => Some(system_roots()?),
            Some(path) => Some(file_roots(path)?),
        };
        let needs_root = || {
            invalid(
                VAR,
                format!("sslmode={ssl_mode} needs sslrootcert=/path/to/ca.pem (or =system)"),
            )
        };
        let verification = match (ssl_mode, roots) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => return Err(needs_root()),
            (SslMode::VerifyFull, Some(roots)) => Verification::Full(roots),
            // libpq: with a root certificate, `require` verifies the chain like verify-ca.
            (SslMode::VerifyCa | SslMode::Require | SslMode::Prefer, Some(roots)) => {
                Verification::ChainOnly(roots)
            }
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => {
                Verification::None
            }
        };
        pg.ssl_mode(match ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        Ok(DbTarget {
            pg,
            ssl_mode,
            tls: MakeRustls::new(verification)?,
        })
    }
}

#[derive(Debug, Default, PartialEq)]
struct TlsSettings {
    ssl_mode: Option<String>,
    root_cert: Option<String>,
}

/// Removes `sslmode` and `sslrootcert` from a URL's query or a `key=value` string, leaving
/// everything else as written. Both forms are read the way tokio-postgres reads them (the
/// URL's query starts after the credentials; keys are percent-decoded; `key=value` values may
/// be quoted, with backslash escapes), so the two parsers never disagree on what was set.
/// Client certificates are refused by name rather than as an unknown option.
fn take_tls_settings(s: &str) -> Result<(String, TlsSettings), ConfigError> {
    let mut settings = TlsSettings::default();
    let mut take = |key: &str, value: String| -> Result<bool, ConfigError> {
        match key {
            "sslmode" => settings.ssl_mode = Some(value),
            "sslrootcert" => settings.root_cert = Some(value),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(invalid(
                    VAR,
                    "client certificates (sslcert, sslkey) are not supported; use a password",
                ))
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let trimmed = s.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        // Like tokio-postgres: the credentials run to the first `@`, the query starts at the
        // first `?` after them (a password may hold a `?`).
        let after_scheme = trimmed.find("://").map_or(0, |i| i + 3);
        let from = trimmed[after_scheme..]
            .find('@')
            .map_or(after_scheme, |at| after_scheme + at + 1);
        let Some(q) = trimmed[from..].find('?').map(|q| from + q) else {
            return Ok((trimmed.to_owned(), settings));
        };
        let (base, query) = (&trimmed[..q], &trimmed[q + 1..]);
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(&percent_decode(key), percent_decode(value))? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, settings));
    }
    let mut rest = String::new();
    let mut chars = trimmed.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(invalid(
                VAR,
                format!("not a valid connection string (expected = after {key:?})"),
            ));
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        loop {
            match chars.peek().copied() {
                Some((_, '\'')) if quoted => {
                    chars.next();
                    break;
                }
                Some((_, c)) if !quoted && c.is_whitespace() => break,
                Some((_, '\\')) => {
                    chars.next();
                    value.extend(chars.next().map(|(_, c)| c));
                }
                Some((_, c)) => {
                    value.push(c);
                    chars.next();
                }
                None if quoted => {
                    return Err(invalid(
                        VAR,
                        "not a valid connection string (unterminated quote)",
                    ))
                }
                None => break,
            }
        }
        let end = chars.peek().map_or(trimmed.len(), |&(i, _)| i);
        if !take(&key, value)? {
            rest.push_str(&trimmed[start..end]);
            rest.push(' ');
        }
    }
    Ok((rest.trim_end().to_owned(), settings))
}

/// `%XX` decoding as tokio-postgres does it (`+` stays `+`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn file_roots(path: &str) -> Result<RootCertStore, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| invalid(VAR, format!("cannot read sslrootcert {path}: {e}")))?;
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in
        rustls_pemfile_certs(&pem).map_err(|e| invalid(VAR, format!("sslrootcert {path}: {e}")))?
    {
        roots
            .add(cert)
            .map_err(|e| invalid(VAR, format!("sslrootcert {path}: {e}")))?;
        found += 1;
    }
    if found == 0 {
        return Err(invalid(
            VAR,
            format!("sslrootcert {path} holds no PEM certificate"),
        ));
    }
    Ok(roots)
}

/// The certificates of a PEM document.
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM ({e:?})"))
}

fn system_roots() -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(invalid(
            VAR,
            "sslrootcert=system, but the system's certificate store is empty (install ca-certificates)",
        ));
    }
    Ok(roots)
}

enum Verification {
    None,
    ChainOnly(RootCertStore),
    Full(RootCertStore),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// tokio-postgres's TLS connector, on rustls.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl MakeRustls {
    fn new(verification: Verification) -> Result<MakeRustls, ConfigError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(VAR, format!("TLS setup: {e}")))?;
        let webpki = |roots: RootCertStore| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| invalid(VAR, format!("sslrootcert: {e}")))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match verification {
            Verification::Full(roots) => webpki(roots)?,
            Verification::ChainOnly(roots) => Arc::new(ChainOnly(webpki(roots)?)),
            Verification::None => Arc::new(NoCertCheck(provider.clone())),
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustls {
            config: Arc::new(config),
        })
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, not authenticated (as in
/// libpq). The handshake's signatures are still checked against the presented certificate.
#[derive(Debug)]
struct NoCertCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// Called for every connection, Unix sockets and `sslmode=disable` included (with an
    /// empty name when there is no host name), so a name that is no TLS server name is only
    /// an error once a handshake is actually attempted.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name: ServerName::try_from(domain.to_owned()).map_err(|_| domain.to_owned()),
        })
    }
}

pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    /// The server name, or the host text that is not one.
    name: Result<ServerName<'static>, String>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let name = self.name.map_err(|host| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("TLS needs a host name to check the certificate against; {host:?} is none (use host=, not only hostaddr=)"),
                )
            })?;
            let stream = self.connector.connect(name, stream).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for RustlsStream {
    /// No channel binding: SCRAM works without it (tokio-postgres's default is `prefer`).
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(s: &str) -> (String, TlsSettings) {
        take_tls_settings(s).expect("parses")
    }

    #[test]
    fn tls_settings_come_out_of_urls() {
        let (rest, t) = settings(
            "postgresql://authenticator:pw@db.test:5432/aura?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(
            rest,
            "postgresql://authenticator:pw@db.test:5432/aura?application_name=x"
        );
        assert_eq!(t.ssl_mode.as_deref(), Some("verify-full"));
        assert_eq!(t.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, t) = settings("postgres://a@h/db?sslmode=require");
        assert_eq!(rest, "postgres://a@h/db");
        assert_eq!(t.ssl_mode.as_deref(), Some("require"));
        assert_eq!(settings("postgres://a@h/db").1, TlsSettings::default());
    }

    #[test]
    fn tls_settings_come_out_of_key_value_strings() {
        let (rest, t) = settings(
            "host=db.test user=authenticator sslmode = verify-ca sslrootcert='/path/with space/ca.pem' password='it\\'s'",
        );
        assert_eq!(rest, "host=db.test user=authenticator password='it\\'s'");
        assert_eq!(t.ssl_mode.as_deref(), Some("verify-ca"));
        assert_eq!(t.root_cert.as_deref(), Some("/path/with space/ca.pem"));
        assert!(tokio_postgres::Config::from_str(&rest).is_ok());
        assert!(take_tls_settings("host=x sslrootcert='open").is_err());
        assert!(take_tls_settings("host=x sslcert=/c.pem").is_err());
    }

    #[test]
    fn modes() {
        let mode = |s: &str| DbTarget::parse(s).map(|t| t.ssl_mode);
        assert_eq!(mode("host=/tmp user=a").ok(), Some(SslMode::Prefer));
        assert_eq!(
            mode("postgres://a@h/d?sslmode=disable").ok(),
            Some(SslMode::Disable)
        );
        assert_eq!(
            mode("postgres://a@h/d?sslmode=require").ok(),
            Some(SslMode::Require)
        );
        assert!(mode("postgres://a@h/d?sslmode=allow").is_err());
        assert!(mode("postgres://a@h/d?sslmode=bogus").is_err());
        let needs_root = mode("postgres://a@h/d?sslmode=verify-ca").unwrap_err();
        assert!(
            needs_root.to_string().contains("sslrootcert"),
            "{needs_root}"
        );
        let missing =
            mode("postgres://a@h/d?sslmode=verify-full&sslrootcert=/nonexistent.pem").unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }

    #[test]
    fn read_as_tokio_postgres_reads_them() {
        // A `?` in the password belongs to the credentials.
        let (rest, t) = settings("postgresql://u:pa?ss@db/aura?sslmode=require");
        assert_eq!(rest, "postgresql://u:pa?ss@db/aura");
        assert_eq!(t.ssl_mode.as_deref(), Some("require"));
        // Keys are percent-decoded.
        let (_, t) = settings("postgresql://u@db/aura?ssl%6Dode=verify-ca&sslrootcert=/ca.pem");
        assert_eq!(t.ssl_mode.as_deref(), Some("verify-ca"));
        // Unquoted values take backslash escapes.
        let (rest, t) = settings(r"host=db sslrootcert=/a\ b.pem user=x");
        assert_eq!(t.root_cert.as_deref(), Some("/a b.pem"));
        assert_eq!(rest, "host=db user=x");
        assert_eq!(
            DbTarget::parse("host=db sslmode=require")
                .map(|t| t.ssl_mode)
                .ok(),
            Some(SslMode::Require)
        );
        // The last one given wins, as in tokio-postgres; an empty one is refused.
        assert_eq!(
            DbTarget::parse("postgres://u@db/a?sslmode=disable&sslmode=require")
                .map(|t| t.ssl_mode)
                .ok(),
            Some(SslMode::Require)
        );
        assert!(DbTarget::parse("postgresql://u@db/aura?sslmode=require&sslmode").is_err());
    }

    #[test]
    fn the_system_store_only_with_verify_full() {
        let system = |extra: &str| {
            DbTarget::parse(&format!("postgres://a@db.test/d?sslrootcert=system{extra}"))
        };
        for weaker in ["&sslmode=prefer", "&sslmode=require", "&sslmode=verify-ca"] {
            let refused = system(weaker).map(|t| t.ssl_mode).unwrap_err();
            assert!(refused.to_string().contains("verify-full"), "{refused}");
        }
        // Without sslmode, `system` means verify-full (if the machine has a store at all).
        if let Ok(target) = system("") {
            assert_eq!(target.ssl_mode, SslMode::VerifyFull);
        }
    }

    #[test]
    fn unix_sockets_need_no_server_name() {
        let mut tls = DbTarget::parse("host=/run/postgresql user=a dbname=d")
            .expect("parses")
            .tls;
        // tokio-postgres asks for a connector with an empty name for a socket: not an error.
        assert!(MakeTlsConnect::<Socket>::make_tls_connect(&mut tls, "").is_ok());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2Fa%20b+c"), "/a b+c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
