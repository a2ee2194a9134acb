//! Keys rotate without a restart: the edge reads its JWKS from a URL (as from a Supabase
//! project's `/auth/v1/.well-known/jwks.json`) and reads it again when a token names a key
//! id it does not hold.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aura_tests::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// Two P-256 key pairs made for these tests only.
const OLD_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgStgMVn1qbnh/DBla
33qGWpPqkZV4KUk6zDyriDMjzYyhRANCAASkg7AQwdg/Rg2jYIgY/YYDls1YWtQR
qhq/uR8AxKJjEIisSkTWSnfe6AIGhUPozqVgJ0ushn0635GCGBCAakj5
-----END PRIVATE KEY-----
";
const OLD_XY: (&str, &str) = (
    "pIOwEMHYP0YNo2CIGP2GA5bNWFrUEaoav7kfAMSiYxA",
    "iKxKRNZKd97oAgaFQ-jOpWAnS6yGfTrfkYIYEIBqSPk",
);
const NEW_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgL528cEbM3qDxhSaW
5mT7POg87L1rwPV1O1iu+6iJDayhRANCAAR9J0cUzCIO6eprNwpxWTz9CRv3dppJ
NFtyDabrJoxJD36GmSKM2TK5t6zkvgIv9cbzmLNYQLFzGO6G3dBImzYf
-----END PRIVATE KEY-----
";
const NEW_XY: (&str, &str) = (
    "fSdHFMwiDunqazcKcVk8_Qkb93aaSTRbcg2m6yaMSQ8",
    "foaZIozZMrm3rOS-Ai_1xvOYs1hAsXMY7obd0EibNh8",
);

fn jwks(kid: &str, (x, y): (&str, &str)) -> String {
    json!({"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}]})
        .to_string()
}

fn es256(kid: &str, pem: &str, member: &Member) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).expect("pem");
    encode(&header, &member.claims(), &key).expect("sign")
}

/// Serves `document` at any path over plain HTTP; counts the requests.
async fn jwks_server(document: Arc<Mutex<String>>, hits: Arc<Mutex<usize>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/auth/v1/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (document, hits) = (document.clone(), hits.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                *hits.lock().expect("hits") += 1;
                let body = document.lock().expect("document").clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    let members = seed_two_tenants(&admin, "jwks").await;
    let member = &members[1];
    let document = Arc::new(Mutex::new(jwks("old", OLD_XY)));
    let hits = Arc::new(Mutex::new(0));
    let url = jwks_server(document.clone(), hits.clone()).await;
    let edge = Edge::start_with(&cluster, |c| {
        c.jwt = edge::JwtConfig {
            hs256_secret: None,
            jwks: Some(edge::JwksSource::Url(url.clone())),
            algorithms: vec![Algorithm::ES256],
            jwks_refresh: Duration::from_secs(3600),
            jwks_cooldown: Duration::from_millis(200),
            ..edge::JwtConfig::hs256(JWT_SECRET)
        };
    })
    .await;

    let old_token = es256("old", OLD_PEM, member);
    let (status, _, who) = rpc(&edge, Some(&old_token), "whoami", "{}").await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(*hits.lock().expect("hits"), 1, "fetched once, at startup");

    // The issuer rotates: it publishes the new key and withdraws the old one.
    *document.lock().expect("document") = jwks("new", NEW_XY);
    tokio::time::sleep(Duration::from_millis(250)).await; // past the cooldown
    let new_token = es256("new", NEW_PEM, member);
    let (status, _, who) = rpc(&edge, Some(&new_token), "whoami", "{}").await;
    assert_eq!(status, 200, "the new key was not fetched: {who}");
    assert_eq!(who["user_id"], member.user_id.as_str());
    let (status, _, body) = rpc(&edge, Some(&old_token), "whoami", "{}").await;
    assert_eq!(status, 401, "a withdrawn key still verifies: {body}");
    assert_error_body(&body, "PGRST301");

    // Made-up key ids do not turn into a stream of fetches: at most one per cooldown.
    let before = *hits.lock().expect("hits");
    for i in 0..20 {
        let forged = es256(&format!("made-up-{i}"), NEW_PEM, member);
        assert_eq!(rpc(&edge, Some(&forged), "whoami", "{}").await.0, 401);
    }
    let fetched = *hits.lock().expect("hits") - before;
    assert!(fetched <= 3, "{fetched} fetches for 20 unknown key ids");
}
