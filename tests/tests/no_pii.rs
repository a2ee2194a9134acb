//! NFR-S9: the logs carry ids, never personal data. A workspace's life through the edge,
//! including the refusals whose messages are most tempted to quote what was sent, with
//! distinctive emails, names, a phone number, a password and tokens; then neither the edge's
//! log (captured as it writes it, at its default level, info) nor PostgreSQL's server log
//! may contain any of them. Audit and security tables may hold personal data (the PRD
//! allows it); logs may not.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aura_tests::*;
use serde_json::json;

const PASSWORD: &str = "Zq81-secret-horse";

/// The edge's log lines, as its JSON subscriber writes them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_personal_data() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(captured.clone())
        .init();
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    auth_settings(&admin, &[("autoconfirm", "true")]).await;
    let edge = Edge::start(&cluster, 4).await;

    let owner_email = "zq81.owner@piicheck.test";
    let invitee_email = "zq81.invitee@piicheck.test";
    let contact_email = "zq81.ada@piicheck.test";
    let (first, last, phone) = ("Zqadalove", "Zqlovelace", "+1 (555) 867-5309");

    let session = sign_up(&edge, owner_email, PASSWORD, "Zq81 Widgets").await;
    let token = token_of(&session);
    let refresh = session["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    // Sign-in failures: a wrong password, an unknown address, a malformed one.
    assert_eq!(sign_in(&edge, owner_email, "Zq81-wrong-horse").await.0, 400);
    assert_eq!(
        sign_in(&edge, "zq81.nobody@piicheck.test", PASSWORD)
            .await
            .0,
        400
    );
    assert_eq!(sign_in(&edge, "zq81 not an email", PASSWORD).await.0, 400);
    for email in [owner_email, "zq81.nobody@piicheck.test"] {
        let (status, _) = auth_post(&edge, "/recover", &json!({ "email": email }), None).await;
        assert_eq!(status, 200);
    }
    // A contact, its duplicate, bad input that quotes personal data, searches by each part.
    let contact =
        json!({ "first_name": first, "last_name": last, "email": contact_email, "phone": phone });
    let (status, _, created) =
        rpc(&edge, Some(&token), "create_contact", &contact.to_string()).await;
    assert_eq!(status, 200, "{created}");
    let (status, _, _) = rpc(&edge, Some(&token), "create_contact", &contact.to_string()).await;
    assert_eq!(status, 409);
    let bad = json!({ "first_name": first, "email": "zq81.ada-at-piicheck.test" });
    assert_eq!(
        rpc(&edge, Some(&token), "create_contact", &bad.to_string())
            .await
            .0,
        400
    );
    let path = format!("/rest/v1/rpc/get_contact?id={contact_email}");
    assert_eq!(get(&edge, Some(&token), &path).await.0, 400);
    for q in [contact_email, "867-5309", first] {
        let path = format!("/rest/v1/rpc/search_contacts?q={q}");
        assert_eq!(get(&edge, Some(&token), &path).await.0, 200);
    }
    let (status, _, invited) = rpc(
        &edge,
        Some(&token),
        "invite_user",
        &json!({ "email": invitee_email, "role": "rep" }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{invited}");
    let (status, _, _) = rpc(
        &edge,
        Some(&token),
        "invite_user",
        &json!({ "email": invitee_email, "role": "rep" }).to_string(),
    )
    .await;
    assert!(status >= 400, "a second invitation to the same address");
    let nonce = reauthenticate(&edge, &cluster, owner_email, &token).await;
    let (status, _) = auth_post(
        &edge,
        "/token?grant_type=refresh_token",
        &json!({ "refresh_token": refresh }),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The emails have gone out (each delivery is logged, with the address redacted).
    await_mail(&cluster, invitee_email, "invite").await;

    let edge_log = String::from_utf8_lossy(&captured.0.lock().expect("log buffer")).to_string();
    let server_log = cluster.server_log();
    assert!(
        edge_log.contains("\"request\""),
        "the edge's request log was captured: {edge_log}"
    );
    assert!(!server_log.is_empty(), "PostgreSQL's log was read");
    let needles = [
        owner_email,
        invitee_email,
        contact_email,
        "zq81.nobody@piicheck.test",
        "zq81.ada-at-piicheck.test",
        "zq81 not an email",
        first,
        last,
        "867-5309",
        "5558675309",
        PASSWORD,
        "Zq81-wrong-horse",
        &token,
        &refresh,
        &nonce,
    ];
    let mut found = Vec::new();
    for (name, log) in [("edge", &edge_log), ("PostgreSQL", &server_log)] {
        for line in log.lines() {
            for needle in &needles {
                if line.to_lowercase().contains(&needle.to_lowercase()) {
                    found.push(format!("{name} log has {needle:?}: {line}"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "personal data in the logs:\n{}",
        found.join("\n")
    );
    drop(edge);
    cluster.stop();
}
