//! Two tenants, three roles, over HTTP: nobody reads or changes another tenant's workspace.

use aura_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_and_change_only_their_own_tenant() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("iso", 4).await;

    for m in &members {
        let token = m.token();
        let (status, _, who) = rpc(&edge, Some(&token), "whoami", "{}").await;
        assert_eq!(status, 200, "{m:?} {who}");
        assert_eq!(who["user_id"], m.user_id.as_str());
        assert_eq!(who["tenant_id"], m.tenant_id.as_str());
        assert_eq!(who["role"], m.role.as_str());
        // The account's email, not the token's claim (`{user_id}@example.test` here).
        assert_eq!(who["email"], m.email.as_str(), "{who}");

        let (status, ws) = get(&edge, Some(&token), "/rest/v1/rpc/get_workspace").await;
        assert_eq!(status, 200, "{ws}");
        assert_eq!(ws["id"], m.tenant_id.as_str(), "{m:?} saw {ws}");

        // Only admins update, and only their own workspace.
        let body = json!({"name": format!("renamed by {}", m.role), "timezone": "Europe/Berlin"})
            .to_string();
        let (status, _, res) = rpc(&edge, Some(&token), "update_workspace", &body).await;
        if m.role == "admin" {
            assert_eq!(status, 200, "{res}");
            assert_eq!(res["id"], m.tenant_id.as_str());
            assert_eq!(res["timezone"], "Europe/Berlin");
        } else {
            assert_eq!(status, 403, "{m:?} {res}");
            assert_error_body(&res, "42501");
        }
    }

    // A token naming a tenant the user does not belong to: 403, nothing set, nothing read.
    let (a_admin, b) = (&members[0], &members[3]);
    let forged = sign(&claims_with_session(
        &a_admin.user_id,
        &b.tenant_id,
        &a_admin.session_id,
    ));
    for f in ["whoami", "get_workspace"] {
        let (status, _, body) = rpc(&edge, Some(&forged), f, "{}").await;
        assert_eq!(status, 403, "{f}: {body}");
        assert_error_body(&body, "42501");
    }
    let (status, _, body) = rpc(
        &edge,
        Some(&forged),
        "update_workspace",
        r#"{"name": "pwned"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // No tenant in the token at all.
    let mut no_tenant = a_admin.claims();
    no_tenant["app_metadata"] = json!({});
    let (status, _, body) = rpc(&edge, Some(&sign(&no_tenant)), "whoami", "{}").await;
    assert_eq!(status, 403, "{body}");

    // In the database: each tenant was renamed by its own admin only.
    let rows = admin
        .query("SELECT id::text, name FROM core.tenants ORDER BY slug", &[])
        .await
        .expect("tenants");
    let names: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        names,
        vec![
            (members[0].tenant_id.clone(), "renamed by admin".to_string()),
            (members[3].tenant_id.clone(), "renamed by admin".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_workspace_values_are_400_and_change_nothing() {
    let Seeded {
        edge,
        members,
        admin: _admin,
        cluster: _cluster,
    } = Seeded::start("val", 2).await;
    let token = members[0].token();
    for body in [
        r#"{"name": ""}"#,
        r#"{"timezone": "Mars/Base"}"#,
        r#"{"logo_url": "javascript:alert(1)"}"#,
        r#"{"name": "ok", "timezone": "Nowhere/Town"}"#,
    ] {
        let (status, _, res) = rpc(&edge, Some(&token), "update_workspace", body).await;
        assert_eq!(status, 400, "{body}: {res}");
        assert_error_body(&res, "22023");
    }
    let (_, ws) = get(&edge, Some(&token), "/rest/v1/rpc/get_workspace").await;
    assert_eq!(ws["name"], "Tenant A");
    assert_eq!(ws["timezone"], "UTC");
}
