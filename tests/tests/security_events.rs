//! Security events and the access log through the edge (issue 9): a refused request, a
//! cross-tenant probe by GET (a READ ONLY transaction) and a row-level security `WITH
//! CHECK` failure each leave a security event although the request failed; a record view
//! leaves an access event. pg_crm's background worker stores them (nobody else does here),
//! and logs each security event as one WARNING line. Admins read their own workspace's.

use aura_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn get_with_request_id(edge: &Edge, token: &str, path: &str, id: &str) -> (u16, Value) {
    let resp = edge
        .client
        .get(format!("{}{path}", edge.url))
        .bearer_auth(token)
        .header("x-request-id", id)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The admin's list (security or access events), once it holds `n` entries.
async fn await_events(edge: &Edge, token: &str, function: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(
            edge,
            Some(token),
            &format!("/rest/v1/rpc/{function}?page_size=100"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "{function}: {} of {n} events: {body}",
            data.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_probes_and_reads_outlive_their_requests() {
    let Seeded {
        edge,
        members,
        admin,
        cluster,
    } = Seeded::start("sec", 2).await;
    let (admin_a, manager_a, rep_a, admin_b) = (&members[0], &members[1], &members[2], &members[3]);

    let (status, _, body) = rpc(
        &edge,
        Some(&admin_b.token()),
        "create_contact",
        r#"{"first_name": "Bea"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let theirs = body["contact"]["id"].as_str().expect("id").to_owned();
    let (status, _, body) = rpc(
        &edge,
        Some(&admin_a.token()),
        "create_contact",
        r#"{"first_name": "Abe"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ours = body["contact"]["id"].as_str().expect("id").to_owned();

    // 1. A refused request: the rep's membership is deactivated; the gate refuses and rolls back.
    admin
        .execute(
            "SELECT crm_private.set_member_status($1::text::uuid, $2::text::uuid, 'deactivated')",
            &[&rep_a.tenant_id, &rep_a.user_id],
        )
        .await
        .expect("deactivate");
    let (status, body) =
        get_with_request_id(&edge, &rep_a.token(), "/rest/v1/rpc/whoami", "sec-refused").await;
    assert_eq!(status, 403, "{body}");

    // 2. A probe by GET (a READ ONLY transaction) for an id another workspace holds: 404,
    // exactly as for an id nobody holds.
    let (status, body) = get_with_request_id(
        &edge,
        &admin_a.token(),
        &format!("/rest/v1/rpc/get_contact?id={theirs}"),
        "sec-probe",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, unknown) = get_with_request_id(
        &edge,
        &admin_a.token(),
        &format!("/rest/v1/rpc/get_contact?id={}", uuid::Uuid::new_v4()),
        "sec-unknown",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], unknown["message"]);

    // 3. A WITH CHECK failure: the manager, in SQL as the edge would run it, inserts a row
    // into the other workspace.
    admin
        .batch_execute("BEGIN; SET LOCAL ROLE authenticated")
        .await
        .expect("begin");
    admin
        .execute(
            "SELECT crm_private.begin_request($1::text::jsonb, $2::text::uuid)",
            &[&manager_a.claims().to_string(), &manager_a.tenant_id],
        )
        .await
        .expect("gate");
    let refused = admin
        .execute(
            "INSERT INTO crm.contacts (tenant_id, first_name) VALUES ($1::text::uuid, 'Mallory')",
            &[&admin_b.tenant_id],
        )
        .await
        .expect_err("WITH CHECK refuses");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    admin.batch_execute("ROLLBACK").await.expect("rollback");

    // 4. A read.
    let (status, body) = get_with_request_id(
        &edge,
        &admin_a.token(),
        &format!("/rest/v1/rpc/get_contact?id={ours}"),
        "sec-read",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The worker stores them; the admin of A reads them.
    let events = await_events(&edge, &admin_a.token(), "list_security_events", 3).await;
    let summary: Vec<(String, String, String)> = events
        .iter()
        .rev()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["user_id"].as_str().unwrap_or("").to_owned(),
                e["request_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "gate_refused".into(),
                rep_a.user_id.clone(),
                "sec-refused".into()
            ),
            (
                "cross_tenant_probe".into(),
                admin_a.user_id.clone(),
                "sec-probe".into()
            ),
            (
                "policy_violation".into(),
                manager_a.user_id.clone(),
                String::new()
            ),
        ],
        "{events:?}"
    );
    assert_eq!(events[1]["details"]["object_id"], theirs.as_str());
    // (Deactivation also ended the rep's sessions: the gate says so first.)
    assert!(
        [
            "this session has ended",
            "your membership of this workspace is deactivated"
        ]
        .contains(&events[2]["details"]["reason"].as_str().unwrap_or("")),
        "{events:?}"
    );

    let reads = await_events(&edge, &admin_a.token(), "list_access_events", 1).await;
    let viewed: Vec<&Value> = reads
        .iter()
        .filter(|e| e["action"] == "contact.viewed")
        .collect();
    assert_eq!(viewed.len(), 1, "{reads:?}");
    assert_eq!(viewed[0]["object_id"], ours.as_str());
    assert_eq!(viewed[0]["user_id"], admin_a.user_id.as_str());
    assert_eq!(viewed[0]["request_id"], "sec-read");

    // Workspace B's admin sees none of A's; A's manager may not look.
    let (status, body) = get(
        &edge,
        Some(&admin_b.token()),
        "/rest/v1/rpc/list_security_events",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], serde_json::json!([]), "{body}");
    let (status, body) = get(
        &edge,
        Some(&manager_a.token()),
        "/rest/v1/rpc/list_access_events",
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // Each security event is one WARNING line in PostgreSQL's log.
    let log = cluster.server_log();
    for kind in ["gate_refused", "cross_tenant_probe", "policy_violation"] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARNING:  pg_crm security event:")
                    && l.contains(&format!("\"kind\": \"{kind}\""))),
            "no WARNING line for {kind}"
        );
    }
}
