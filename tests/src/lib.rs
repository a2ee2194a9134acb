//! Support for the integration tests: a throwaway PostgreSQL cluster with pg_crm (started
//! through `scripts/pgcluster`, from the PostgreSQL tree named by `AURA_TEST_PG_CONFIG`,
//! where `make test` has installed pg_crm), the real edge on a free port, and tokens.
//!
//! Nothing is mocked: requests go over HTTP to the edge, which talks to PostgreSQL as
//! `authenticator`, exactly as in production, and over TLS: every cluster serves a
//! certificate from a throwaway CA made for it, and the edge connects with
//! `sslmode=verify-full` against that CA.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

pub const JWT_SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn pgcluster(args: &[&str]) -> String {
    let out = Command::new(root().join("scripts/pgcluster"))
        .args(args)
        .output()
        .expect("run scripts/pgcluster");
    assert!(
        out.status.success(),
        "pgcluster {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A PostgreSQL cluster in a temp dir on a free port, database `aura` with pg_crm, TLS on
/// (see [`Tls`]). Stopped and deleted on drop.
pub struct Cluster {
    pg_config: String,
    dir: PathBuf,
    pub port: u16,
    pub tls: Tls,
    /// With `AURA_TEST_VIA_PGBOUNCER=1`: PgBouncer in transaction mode in front of the
    /// cluster, on this port; the edge's connection string ([`Cluster::authenticator_url`])
    /// then goes through it.
    pub bouncer_port: Option<u16>,
}

/// Certificates made for one cluster: a CA, the server's certificate for `localhost` and
/// `127.0.0.1` (what the cluster serves), one for another name from the same CA, and an
/// unrelated CA.
pub struct Tls {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub wrong_name: (PathBuf, PathBuf),
}

impl Tls {
    fn make(dir: &Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        std::fs::create_dir_all(dir).expect("tls dir");
        let ca = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).expect("CA");
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("Aura test CA");
        let (other_cert, _) = ca("Some other CA");
        let leaf = |names: &[&str], ips: &[&str]| {
            let key = KeyPair::generate().expect("key");
            let mut params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                    .expect("params");
            params.distinguished_name.push(DnType::CommonName, names[0]);
            for ip in ips {
                params
                    .subject_alt_names
                    .push(SanType::IpAddress(ip.parse().expect("ip")));
            }
            let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        let key_file = |name: &str, pem: &str| {
            let path = write(name, pem);
            // PostgreSQL refuses a key others can read; it must belong to the server's user.
            let status = Command::new("chmod")
                .arg("600")
                .arg(&path)
                .status()
                .expect("chmod");
            assert!(status.success());
            own(&path);
            path
        };
        let (server_cert, server_key) = leaf(&["localhost"], &["127.0.0.1"]);
        let (wrong_cert, wrong_key) = leaf(&["db.elsewhere.test"], &[]);
        Tls {
            ca: write("ca.pem", &ca_cert.pem()),
            other_ca: write("other-ca.pem", &other_cert.pem()),
            server: (
                write("server.pem", &server_cert),
                key_file("server.key", &server_key),
            ),
            wrong_name: (
                write("wrong-name.pem", &wrong_cert),
                key_file("wrong-name.key", &wrong_key),
            ),
        }
    }
}

/// As root, the cluster runs as `AURA_PG_USER` (default `postgres`): files it reads must be its.
fn own(path: &Path) {
    if is_root() {
        let user = std::env::var("AURA_PG_USER").unwrap_or_else(|_| "postgres".to_owned());
        let status = Command::new("chown")
            .arg(&user)
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {user} {}", path.display());
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    pub async fn start() -> Cluster {
        let pg_config = std::env::var("AURA_TEST_PG_CONFIG").expect(
            "AURA_TEST_PG_CONFIG must name a pg_config whose tree has pg_crm installed (make test sets it)",
        );
        let dir = std::env::temp_dir().join(format!("aura-it-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let status = Command::new("chmod")
            .arg("755")
            .arg(&dir)
            .status()
            .expect("chmod");
        assert!(status.success());
        let port: u16 = pgcluster(&["free-port"]).parse().expect("a port");
        let data = dir.join("data");
        let data_s = data.to_str().expect("utf-8 path");
        pgcluster(&["init", &pg_config, data_s]);
        let tls = Tls::make(&dir.join("tls"));
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        std::io::Write::write_all(
            &mut conf,
            format!(
                "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\npg_crm.worker_databases = 'aura'\n",
                tls.server.0.display(),
                tls.server.1.display()
            )
            .as_bytes(),
        )
        .expect("enable TLS");
        let mut cluster = Cluster {
            pg_config,
            dir,
            port,
            tls,
            bouncer_port: None,
        };
        cluster.first_start();
        if std::env::var("AURA_TEST_VIA_PGBOUNCER").is_ok_and(|v| v == "1") {
            let bouncer_port: u16 = pgcluster(&["free-port"]).parse().expect("a port");
            let dir = cluster.dir.join("bouncer");
            pgcluster(&[
                "bouncer",
                dir.to_str().expect("utf-8 path"),
                &port.to_string(),
                &bouncer_port.to_string(),
            ]);
            cluster.bouncer_port = Some(bouncer_port);
        }
        let admin = cluster.connect("postgres").await;
        admin
            .batch_execute("CREATE DATABASE aura")
            .await
            .expect("create database");
        let admin = cluster.admin().await;
        let compat =
            std::fs::read_to_string(root().join("sql/supabase_compat.sql")).expect("compat sql");
        admin
            .batch_execute(&compat)
            .await
            .expect("apply supabase_compat.sql");
        admin
            .batch_execute("CREATE EXTENSION pg_crm CASCADE")
            .await
            .expect("create extension");
        cluster
    }

    /// The directory of the cluster's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("data").join("run")
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().expect("utf-8").to_string()
    }

    /// What PostgreSQL has logged so far (`server.log` in the data directory).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("data").join("server.log")).unwrap_or_default()
    }

    /// Where edges started for this cluster write outgoing email (`.eml` files).
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.join("mail")
    }

    /// Stop PostgreSQL (fast shutdown: connections are terminated).
    pub fn stop(&self) {
        pgcluster(&["stop", &self.pg_config, &self.data()]);
    }

    /// Start it again on the same port.
    /// Starts on the port picked; should another process have taken that port since it was
    /// picked (tests run in parallel, edges bind free ports too), on a fresh one.
    fn first_start(&mut self) {
        for _ in 0..5 {
            let out = Command::new(root().join("scripts/pgcluster"))
                .args([
                    "start",
                    &self.pg_config,
                    &self.data(),
                    &self.port.to_string(),
                ])
                .output()
                .expect("run scripts/pgcluster");
            if out.status.success() {
                return;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("already in use"),
                "starting PostgreSQL failed: {stderr}"
            );
            self.port = pgcluster(&["free-port"]).parse().expect("a port");
        }
        panic!("no free port for PostgreSQL after 5 tries");
    }

    pub fn start_again(&self) {
        pgcluster(&[
            "start",
            &self.pg_config,
            &self.data(),
            &self.port.to_string(),
        ]);
    }

    async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={db}",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect as postgres");
        tokio::spawn(conn);
        client
    }

    /// A superuser connection to `aura`: the DBA's view.
    pub async fn admin(&self) -> tokio_postgres::Client {
        self.connect("aura").await
    }

    /// The edge's connection string (logs in as `authenticator`), over TLS with the server's
    /// certificate and name verified; `AURA_TEST_DB_SSLMODE` picks another sslmode. Through
    /// PgBouncer (see [`Cluster::bouncer_port`]) without TLS, on the loopback.
    pub fn authenticator_url(&self) -> String {
        if let Some(bouncer) = self.bouncer_port {
            return format!("postgresql://authenticator@127.0.0.1:{bouncer}/aura?sslmode=disable");
        }
        let mode = std::env::var("AURA_TEST_DB_SSLMODE").unwrap_or_else(|_| "verify-full".into());
        self.authenticator_url_with(&format!(
            "sslmode={mode}&sslrootcert={}",
            self.tls.ca.display()
        ))
    }

    /// The edge's connection string with these query parameters.
    pub fn authenticator_url_with(&self, params: &str) -> String {
        format!(
            "postgresql://authenticator@127.0.0.1:{}/aura?{params}",
            self.port
        )
    }

    /// Serve another certificate (TLS settings are reloaded without a restart).
    pub async fn serve_certificate(&self, cert: &Path, key: &Path) {
        let admin = self.connect("postgres").await;
        for statement in [
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .expect("switch certificate");
        }
        // The postmaster reloads asynchronously; new connections see it shortly.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.bouncer_port.is_some() {
            let _ = Command::new(root().join("scripts/pgcluster"))
                .args(["bouncer-stop", &self.dir.join("bouncer").to_string_lossy()])
                .output();
        }
        let _ = Command::new(root().join("scripts/pgcluster"))
            .args(["stop", &self.pg_config, &self.data()])
            .output();
        // AURA_TEST_LOGS collects every cluster's server log, for scripts/no-pii-in-logs.sh.
        if let Some(logs) = std::env::var_os("AURA_TEST_LOGS") {
            let name = self
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = std::fs::copy(
                self.dir.join("data").join("server.log"),
                PathBuf::from(logs).join(format!("{name}.log")),
            );
        }
        // AURA_TEST_KEEP=1 keeps the directory (server and PgBouncer logs) for a post-mortem.
        if !std::env::var("AURA_TEST_KEEP").is_ok_and(|v| v == "1") {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The edge, in this process, serving real HTTP on a free port.
pub struct Edge {
    pub url: String,
    /// One HTTP client per edge (building one reads the system's root certificates).
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Edge {
    pub async fn start(cluster: &Cluster, pool_size: usize) -> Edge {
        Edge::start_with(cluster, |config| config.pool_size = pool_size).await
    }

    /// The edge's test configuration for this cluster, as [`Edge::start_with`] begins with.
    pub fn config(cluster: &Cluster) -> edge::Config {
        let mut config = edge::Config::new(
            cluster.authenticator_url(),
            edge::JwtConfig::hs256(JWT_SECRET),
        );
        // Email goes to files in a directory of this cluster's (see [`Cluster::mail_dir`]).
        config.auth.mail_dir = cluster.mail_dir();
        config.auth.mail_poll = std::time::Duration::from_millis(100);
        // The limiter runs, but the suite's users make more than 100 requests a minute;
        // tests/tests/edges.rs turns it down.
        config.rate_limit = 100_000;
        config
    }

    /// The edge with its configuration adjusted by `adjust`.
    pub async fn start_with(cluster: &Cluster, adjust: impl FnOnce(&mut edge::Config)) -> Edge {
        let mut config = Edge::config(cluster);
        adjust(&mut config);
        Edge::start_config(config).await
    }

    pub async fn start_config(config: edge::Config) -> Edge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            edge::serve(config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("edge serve");
        });
        Edge {
            url,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// GoTrue-shaped claims for a user in a tenant and one of their sessions, valid for an hour.
pub fn claims_with_session(user_id: &str, tenant_id: &str, session_id: &str) -> Value {
    json!({
        "iss": "aura-tests", "sub": user_id, "aud": "authenticated", "role": "authenticated",
        "iat": now(), "exp": now() + 3600, "email": format!("{user_id}@example.test"),
        "session_id": session_id,
        "app_metadata": {"tenant_id": tenant_id}, "user_metadata": {}
    })
}

/// Claims naming a session that does not exist: the gate refuses them (see
/// [`Member::claims`] for a live one).
pub fn claims(user_id: &str, tenant_id: &str) -> Value {
    claims_with_session(user_id, tenant_id, &uuid::Uuid::new_v4().to_string())
}

/// Sign claims with the test secret (HS256).
pub fn sign(claims: &Value) -> String {
    sign_with(claims, JWT_SECRET)
}

pub fn sign_with(claims: &Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A member of a seeded tenant.
#[derive(Debug, Clone)]
pub struct Member {
    pub email: String,
    pub user_id: String,
    pub tenant_id: String,
    pub role: String,
    /// A live session (`crm_private.create_session`), as a sign-in makes.
    pub session_id: String,
}

impl Member {
    /// Claims of this member's session.
    pub fn claims(&self) -> Value {
        claims_with_session(&self.user_id, &self.tenant_id, &self.session_id)
    }

    pub fn token(&self) -> String {
        sign(&self.claims())
    }
}

/// A new session for a user, as a sign-in makes (what `scripts/dev-token` does too).
pub async fn new_session(admin: &tokio_postgres::Client, user_id: &str) -> String {
    admin
        .query_one(
            "SELECT crm_private.create_session($1::text::uuid)::text",
            &[&user_id],
        )
        .await
        .expect("create_session")
        .get(0)
}

/// Two tenants (slugs `{prefix}-a`, `{prefix}-b`), each with an admin, a manager and a rep,
/// created with the operator functions a DBA uses.
pub async fn seed_two_tenants(admin: &tokio_postgres::Client, prefix: &str) -> Vec<Member> {
    let mut members = Vec::new();
    for t in ["a", "b"] {
        let slug = format!("{prefix}-{t}");
        let row = admin
            .query_one(
                "SELECT (r ->> 'tenant_id'), (r ->> 'admin_user_id')
                   FROM crm_private.create_tenant($1, $2, $3) r",
                &[
                    &format!("Tenant {}", t.to_uppercase()),
                    &slug,
                    &format!("admin@{slug}.test"),
                ],
            )
            .await
            .expect("create_tenant");
        let tenant_id: String = row.get(0);
        let user_id: String = row.get(1);
        members.push(Member {
            email: format!("admin@{slug}.test"),
            session_id: new_session(admin, &user_id).await,
            user_id,
            tenant_id: tenant_id.clone(),
            role: "admin".into(),
        });
        for role in ["manager", "rep"] {
            let email = format!("{role}@{slug}.test");
            let row = admin
                .query_one(
                    "SELECT crm_private.add_member($1::text::uuid, $2, $3)::text",
                    &[&tenant_id, &email, &role],
                )
                .await
                .expect("add_member");
            let user_id: String = row.get(0);
            members.push(Member {
                email,
                session_id: new_session(admin, &user_id).await,
                user_id,
                tenant_id: tenant_id.clone(),
                role: role.into(),
            });
        }
    }
    members
}

/// POST /rest/v1/rpc/{function} with a JSON body; returns (status, headers, body).
pub async fn rpc(
    edge: &Edge,
    token: Option<&str>,
    function: &str,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = edge
        .client
        .post(format!("{}/rest/v1/rpc/{function}", edge.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, json)
}

/// GET with an optional token; returns (status, body).
pub async fn get(edge: &Edge, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = edge.client.get(format!("{}{path}", edge.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Installs `api.test_sleep(seconds)`, a deliberately slow read, in this cluster only.
pub async fn install_test_sleep(admin: &tokio_postgres::Client) {
    admin
        .batch_execute(
            "CREATE FUNCTION api.test_sleep(seconds double precision) RETURNS text
               LANGUAGE sql STABLE AS $$ SELECT pg_sleep(seconds)::text || 'slept' $$;
             REVOKE ALL ON FUNCTION api.test_sleep(double precision) FROM PUBLIC;
             GRANT EXECUTE ON FUNCTION api.test_sleep(double precision) TO authenticated;",
        )
        .await
        .expect("api.test_sleep");
}

/// The PostgREST error body: exactly code, message, details, hint.
pub fn assert_error_body(body: &Value, code: &str) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "details", "hint", "message"], "{body}");
    assert_eq!(obj["code"], code, "{body}");
    assert!(
        obj["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// What most tests start from: a cluster with two seeded tenants (see [`seed_two_tenants`]),
/// a DBA connection, and the edge with a pool of `pool_size`.
pub struct Seeded {
    pub edge: Edge,
    pub members: Vec<Member>,
    pub admin: tokio_postgres::Client,
    pub cluster: Cluster,
}

impl Seeded {
    pub async fn start(prefix: &str, pool_size: usize) -> Seeded {
        let cluster = Cluster::start().await;
        let admin = cluster.admin().await;
        let members = seed_two_tenants(&admin, prefix).await;
        let edge = Edge::start(&cluster, pool_size).await;
        Seeded {
            edge,
            members,
            admin,
            cluster,
        }
    }
}

/// A request to `/auth/v1{path}` (path with its query string) with a JSON body (or none),
/// the anon `apikey` header supabase-js sends, and an optional bearer token; returns
/// (status, headers, body as JSON, or as a string if it is not JSON).
pub async fn auth_call(
    edge: &Edge,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = edge
        .client
        .request(method, format!("{}/auth/v1{path}", edge.url))
        .header("apikey", anon_key())
        .header("x-supabase-api-version", "2024-01-01");
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// POST `/auth/v1{path}` with a JSON body.
pub async fn auth_post(edge: &Edge, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let (status, _, value) = auth_call(edge, reqwest::Method::POST, path, Some(body), token).await;
    (status, value)
}

/// A long-lived key with only a role (Supabase's anon and service_role keys), signed with
/// the test secret.
pub fn role_key(role: &str) -> String {
    sign(
        &json!({"iss": "aura-tests", "role": role, "aud": "authenticated", "iat": now(), "exp": now() + 86400}),
    )
}

pub fn anon_key() -> String {
    role_key("anon")
}

pub fn service_key() -> String {
    role_key("service_role")
}

/// Sets auth settings (`crm_private.auth_settings`), e.g. `[("autoconfirm", "true")]`.
pub async fn auth_settings(admin: &tokio_postgres::Client, settings: &[(&str, &str)]) {
    for (key, value) in settings {
        admin
            .execute(
                "INSERT INTO crm_private.auth_settings (key, value) VALUES ($1, $2::text::jsonb)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[key, value],
            )
            .await
            .expect("auth setting");
    }
}

/// Signs up (auto-confirm must be on) and returns the session reply.
pub async fn sign_up(edge: &Edge, email: &str, password: &str, company: &str) -> Value {
    let (status, session) = auth_post(
        edge,
        "/signup",
        &json!({"email": email, "password": password, "data": {"company_name": company, "full_name": "Test Person"}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "signup {email}: {session}");
    assert!(session["access_token"].is_string(), "{session}");
    session
}

/// A password grant; (status, reply).
pub async fn sign_in(edge: &Edge, email: &str, password: &str) -> (u16, Value) {
    auth_post(
        edge,
        "/token?grant_type=password",
        &json!({"email": email, "password": password}),
        None,
    )
    .await
}

/// The newest email to `to` that contains `marker` in the cluster's mail directory, now:
/// (file name, text). File names sort by the time they were written.
fn newest_mail_now(cluster: &Cluster, to: &str, marker: &str) -> Option<(String, String)> {
    let mut newest: Option<(String, String)> = None;
    for entry in std::fs::read_dir(cluster.mail_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".eml") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if text.contains(&format!("To: {to}\r\n"))
            && text.contains(marker)
            && newest.as_ref().is_none_or(|(n, _)| name > *n)
        {
            newest = Some((name, text));
        }
    }
    newest
}

/// The text of the newest email to `to` that contains `marker` (and is newer than the file
/// `after`, when given), waiting up to 10 s.
async fn newest_mail_after(
    cluster: &Cluster,
    to: &str,
    marker: &str,
    after: Option<&str>,
) -> String {
    for _ in 0..100 {
        if let Some((name, text)) = newest_mail_now(cluster, to, marker) {
            if after.is_none_or(|a| name.as_str() > a) {
                return text;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "no new email to {to} with {marker:?} in {}",
        cluster.mail_dir().display()
    );
}

async fn newest_mail(cluster: &Cluster, to: &str, marker: &str) -> String {
    newest_mail_after(cluster, to, marker, None).await
}

/// The one-time code of an email ("Code: 123456").
fn code_in(mail: &str) -> String {
    mail.split("Code: ")
        .nth(1)
        .map(|r| r.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default()
}

/// The newest email to `to` of `kind` (signup, recovery, invite, ...) written under the
/// cluster's mail directory, waiting up to 10 s: (link token, code).
pub async fn await_mail(cluster: &Cluster, to: &str, kind: &str) -> (String, String) {
    let mail = newest_mail(cluster, to, &format!("&type={kind}&")).await;
    let token = mail
        .split("verify?token=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .unwrap_or_default()
        .to_owned();
    (token, code_in(&mail))
}

/// A reauthentication nonce for a signed-in user: asks `POST /auth/v1/reauthenticate` with
/// their access token, then reads the code from the newest such email to `to` (up to 10 s).
pub async fn reauthenticate(edge: &Edge, cluster: &Cluster, to: &str, token: &str) -> String {
    const MARKER: &str = "Subject: Confirm it is you\r\n";
    let before = newest_mail_now(cluster, to, MARKER).map(|(name, _)| name);
    let (status, _, body) = auth_call(
        edge,
        reqwest::Method::POST,
        "/reauthenticate",
        None,
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "reauthenticate: {body}");
    code_in(&newest_mail_after(cluster, to, MARKER, before.as_deref()).await)
}

/// The access token of a session reply (sign-up, sign-in, refresh).
pub fn token_of(session: &Value) -> String {
    session["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// GoTrue's error body: a `code` string and a `message`, and the API version header.
pub fn assert_gotrue_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want_status: u16,
    code: &str,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        headers
            .get("x-supabase-api-version")
            .and_then(|v| v.to_str().ok()),
        Some("2024-01-01")
    );
}

/// Runs a Python script on `bytes` (written to a temporary file, whose path is the script's
/// `sys.argv[1]`) and returns the JSON it prints: files the edge writes (an export's zip)
/// are read back by an implementation that is not ours.
pub fn python_on_file(script: &str, bytes: &[u8]) -> Value {
    let dir = std::env::temp_dir().join(format!("aura-python-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("input");
    std::fs::write(&path, bytes).expect("write the file");
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3 (make test's prerequisites include it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "python could not read the file: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python's json")
}
