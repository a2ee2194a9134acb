//! A workspace's deletion through the edge (issue 9, PRD F1.4, NFR-D3): the admin asks with
//! a re-authentication code; every member is locked out at once; the admin, signing in
//! again, can read the settings and cancel, nothing else; after the grace period (here an
//! operator moves it to now) pg_crm's background worker removes every row of the workspace
//! from every tenant table, and nothing of the other workspace.

use aura_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Rows of a workspace per tenant table (from the catalog), as "table:count" for non-empty.
async fn rows_of(admin: &tokio_postgres::Client, tenant: &str) -> Vec<String> {
    let rows = admin
        .query(
            "SELECT t::text FROM crm_private.tenant_tables() t ORDER BY 1",
            &[],
        )
        .await
        .expect("tenant tables");
    let mut out = Vec::new();
    for row in rows {
        let table: String = row.get(0);
        let n: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1::text::uuid"),
                &[&tenant],
            )
            .await
            .expect("count")
            .get(0);
        if n > 0 {
            out.push(format!("{table}:{n}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_locks_members_out_can_be_cancelled_and_removes_every_row() {
    let Seeded {
        edge,
        mut members,
        admin,
        cluster,
    } = Seeded::start("life", 2).await;
    let (admin_a, manager_a, admin_b) =
        (members[0].clone(), members[1].clone(), members[3].clone());
    for body in [r#"{"first_name": "Abe"}"#, r#"{"first_name": "Ada"}"#] {
        let (status, _, reply) = rpc(&edge, Some(&admin_a.token()), "create_contact", body).await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, _, reply) = rpc(
        &edge,
        Some(&admin_b.token()),
        "create_contact",
        r#"{"first_name": "Bea"}"#,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    // (Sealed now, as the worker would by the end: the seals are B's rows too.)
    admin
        .execute("SELECT crm_private.seal_audit_log()", &[])
        .await
        .expect("seal");
    let b_before = rows_of(&admin, &admin_b.tenant_id).await;

    // Without a code: 403. With one: pending, the grace period ahead.
    let (status, _, reply) = rpc(
        &edge,
        Some(&admin_a.token()),
        "request_workspace_deletion",
        "{}",
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    let nonce = reauthenticate(&edge, &cluster, &admin_a.email, &admin_a.token()).await;
    let (status, _, reply) = rpc(
        &edge,
        Some(&admin_a.token()),
        "request_workspace_deletion",
        &json!({ "nonce": nonce }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "pending_deletion");

    // Everyone is out at once: their sessions ended; with a new one, the gate refuses.
    let (status, _, _) = rpc(&edge, Some(&manager_a.token()), "whoami", "{}").await;
    assert_eq!(status, 403);
    members[1].session_id = new_session(&admin, &manager_a.user_id).await;
    let (status, _, reply) = rpc(&edge, Some(&members[1].token()), "whoami", "{}").await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["message"], "this workspace is scheduled for deletion");

    // The admin, signed in again, reads the settings and cancels; nothing else.
    members[0].session_id = new_session(&admin, &admin_a.user_id).await;
    let admin_token = members[0].token();
    let (status, reply) = get(
        &edge,
        Some(&admin_token),
        "/rest/v1/rpc/get_workspace_settings",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "pending_deletion");
    let (status, _, reply) = rpc(&edge, Some(&admin_token), "list_contacts", "{}").await;
    assert_eq!(status, 403, "{reply}");
    let (status, _, reply) =
        rpc(&edge, Some(&admin_token), "cancel_workspace_deletion", "{}").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "active");
    let (status, _, reply) = rpc(&edge, Some(&members[1].token()), "whoami", "{}").await;
    assert_eq!(status, 200, "access is back: {reply}");

    // Again, and an operator moves the deletion to now: the worker deletes everything.
    let nonce = reauthenticate(&edge, &cluster, &admin_a.email, &admin_token).await;
    let (status, _, reply) = rpc(
        &edge,
        Some(&admin_token),
        "request_workspace_deletion",
        &json!({ "nonce": nonce }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    admin
        .execute(
            "SELECT crm_private.schedule_tenant_deletion($1::text::uuid, now())",
            &[&admin_a.tenant_id],
        )
        .await
        .expect("shorten the grace period");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: String = admin
            .query_one(
                "SELECT status FROM core.tenants WHERE id = $1::text::uuid",
                &[&admin_a.tenant_id],
            )
            .await
            .expect("status")
            .get(0);
        if status == "deleted" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker has not deleted the workspace: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What is left: the audit entries of the deletion (requested, cancelled, requested,
    // executed), sealed; and the other workspace exactly as it was.
    assert_eq!(
        rows_of(&admin, &admin_a.tenant_id).await,
        vec![
            "core.audit_log:4",
            "core.audit_sealed:4",
            "core.audit_seals:1"
        ]
    );
    let verified: serde_json::Value = admin
        .query_one(
            "SELECT crm_private.verify_audit_chain($1::text::uuid)",
            &[&admin_a.tenant_id],
        )
        .await
        .expect("verify")
        .get(0);
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(rows_of(&admin, &admin_b.tenant_id).await, b_before);
    let accounts: i64 = admin
        .query_one(
            "SELECT count(*) FROM auth.users WHERE id IN ($1::text::uuid, $2::text::uuid)",
            &[&admin_a.user_id, &manager_a.user_id],
        )
        .await
        .expect("accounts")
        .get(0);
    assert_eq!(accounts, 0);
    let (status, _, reply) = rpc(&edge, Some(&admin_token), "get_workspace_settings", "{}").await;
    assert_eq!(status, 403, "{reply}");
}
