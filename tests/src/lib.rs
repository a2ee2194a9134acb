//! Support for the integration tests: a throwaway PostgreSQL cluster with pg_crm (started
//! through `scripts/pgcluster`, from the PostgreSQL tree named by `AURA_TEST_PG_CONFIG`,
//! where `make test` has installed pg_crm), the real edge on a free port, and tokens.
//!
//! Nothing is mocked: requests go over HTTP to the edge, which talks to PostgreSQL as
//! `authenticator`, exactly as in production.

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

/// A PostgreSQL cluster in a temp dir on a free port, database `aura` with pg_crm.
/// Stopped and deleted on drop.
pub struct Cluster {
    pg_config: String,
    dir: PathBuf,
    pub port: u16,
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
        let cluster = Cluster {
            pg_config,
            dir,
            port,
        };
        cluster.start_again();
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
            .batch_execute("CREATE EXTENSION pg_crm")
            .await
            .expect("create extension");
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().expect("utf-8").to_string()
    }

    /// Stop PostgreSQL (fast shutdown: connections are terminated).
    pub fn stop(&self) {
        pgcluster(&["stop", &self.pg_config, &self.data()]);
    }

    /// Start it again on the same port.
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

    /// The edge's connection string (logs in as `authenticator`).
    pub fn authenticator_url(&self) -> String {
        format!("postgresql://authenticator@127.0.0.1:{}/aura", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/pgcluster"))
            .args(["stop", &self.pg_config, &self.data()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The edge, in this process, serving real HTTP on a free port.
pub struct Edge {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Edge {
    pub async fn start(cluster: &Cluster, pool_size: usize) -> Edge {
        let mut config = edge::Config::new(
            cluster.authenticator_url(),
            edge::JwtConfig::hs256(JWT_SECRET),
        );
        config.pool_size = pool_size;
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

/// GoTrue-shaped claims for a user in a tenant, valid for an hour.
pub fn claims(user_id: &str, tenant_id: &str) -> Value {
    json!({
        "iss": "aura-tests", "sub": user_id, "aud": "authenticated", "role": "authenticated",
        "iat": now(), "exp": now() + 3600, "email": format!("{user_id}@example.test"),
        "session_id": uuid::Uuid::new_v4().to_string(),
        "app_metadata": {"tenant_id": tenant_id}, "user_metadata": {}
    })
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
}

impl Member {
    pub fn token(&self) -> String {
        sign(&claims(&self.user_id, &self.tenant_id))
    }
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
        members.push(Member {
            email: format!("admin@{slug}.test"),
            user_id: row.get(1),
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
            members.push(Member {
                email,
                user_id: row.get(0),
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
    let mut req = reqwest::Client::new()
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
    let mut req = reqwest::Client::new().get(format!("{}{path}", edge.url));
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
