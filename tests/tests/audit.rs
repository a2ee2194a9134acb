//! The audit log through the edge (issue 9): an entry carries the request's `x-request-id`
//! and client address; pg_crm's background worker seals it within seconds (no caller
//! does); admins read and verify their own trail, other roles get 403, another
//! workspace's admin sees none of it; a superuser's edit is named by the verification.

use aura_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn rpc_with_request_id(
    edge: &Edge,
    token: &str,
    function: &str,
    body: &Value,
    id: &str,
) -> (u16, Value) {
    let resp = edge
        .client
        .post(format!("{}/rest/v1/rpc/{function}", edge.url))
        .bearer_auth(token)
        .header("x-request-id", id)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_carry_the_request_and_are_sealed_by_the_worker() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("aud", 2).await;
    let (admin_a, rep_a, admin_b) = (&members[0], &members[2], &members[3]);

    let (status, body) = rpc_with_request_id(
        &edge,
        &admin_a.token(),
        "set_member_role",
        &json!({"user_id": rep_a.user_id, "role": "manager"}),
        "audit-it-1",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The admin's trail: newest first, the change with its request id and address.
    let (status, body) = get(
        &edge,
        Some(&admin_a.token()),
        "/rest/v1/rpc/list_audit_events?action=member.role_changed",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let entries = body["data"].as_array().expect("data");
    assert_eq!(entries.len(), 1, "{body}");
    let entry = &entries[0];
    assert_eq!(entry["object_id"], rep_a.user_id.as_str());
    assert_eq!(entry["actor_id"], admin_a.user_id.as_str());
    assert_eq!(entry["actor_role"], "admin");
    assert_eq!(
        entry["changes"],
        json!({"before": {"role": "rep"}, "after": {"role": "manager"}})
    );
    assert_eq!(entry["request_id"], "audit-it-1");
    assert_eq!(entry["client_ip"], "127.0.0.1");

    // Nobody seals but the worker: within a few seconds everything written is sealed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let verified = loop {
        let (status, body) = get(
            &edge,
            Some(&admin_a.token()),
            "/rest/v1/rpc/verify_audit_log",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["entries_not_sealed_yet"] == 0 && body["seals"].as_i64().unwrap_or(0) > 0 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the worker has not sealed the log: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(verified["valid"], true, "{verified}");
    assert!(
        verified["entries_verified"].as_i64().unwrap_or(0) >= 2,
        "{verified}"
    );
    // ... and has made this month's and the next two months' partitions.
    let partitions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'core.audit_log'::regclass",
            &[],
        )
        .await
        .expect("partitions")
        .get(0);
    assert!(partitions >= 4, "{partitions} partitions");

    // Other roles: 403. Another workspace's admin: their own trail only.
    for (token, function) in [
        (rep_a.token(), "list_audit_events"),
        (members[1].token(), "list_audit_events"),
        (rep_a.token(), "verify_audit_log"),
    ] {
        let (status, body) = get(&edge, Some(&token), &format!("/rest/v1/rpc/{function}")).await;
        assert_eq!(status, 403, "{function}: {body}");
        assert_error_body(&body, "42501");
    }
    let (status, body) = get(
        &edge,
        Some(&admin_b.token()),
        "/rest/v1/rpc/list_audit_events?page_size=100",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let theirs = body["data"].as_array().expect("data");
    assert!(!theirs.is_empty());
    assert!(
        theirs
            .iter()
            .all(|e| e["object_id"] != rep_a.user_id.as_str() && e["request_id"] != "audit-it-1"),
        "{body}"
    );

    // A superuser rewrites the entry behind pg_crm's back: the admin's verification names it.
    let id: i64 = entry["id"].as_i64().expect("id");
    admin
        .batch_execute(&format!(
            "BEGIN; SET LOCAL session_replication_role = replica;
             UPDATE core.audit_log SET changes = '{{\"after\": {{\"role\": \"admin\"}}}}' WHERE id = {id}; COMMIT"
        ))
        .await
        .expect("tamper");
    let (status, body) = get(
        &edge,
        Some(&admin_a.token()),
        "/rest/v1/rpc/verify_audit_log",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["valid"], false, "{body}");
    assert_eq!(
        body["first_broken"],
        json!({"entry_id": id, "problem": "altered"}),
        "{body}"
    );
    let (_, body) = get(
        &edge,
        Some(&admin_b.token()),
        "/rest/v1/rpc/verify_audit_log",
    )
    .await;
    assert_eq!(body["valid"], true, "{body}");
}
