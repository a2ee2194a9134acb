//! Access ends on the next request when a membership is deactivated or a tenant suspended,
//! although the token is still valid: the claims alone never grant access.

use aura_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_and_suspension_take_effect_on_the_next_request() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("rev", 2).await;
    let rep_a = &members[2];
    let admin_b = &members[3];
    let (rep_token, b_token) = (rep_a.token(), admin_b.token());

    assert_eq!(rpc(&edge, Some(&rep_token), "whoami", "{}").await.0, 200);
    assert_eq!(rpc(&edge, Some(&b_token), "whoami", "{}").await.0, 200);

    admin
        .execute(
            "SELECT crm_private.set_member_status($1::text::uuid, $2::text::uuid, 'deactivated')",
            &[&rep_a.tenant_id, &rep_a.user_id],
        )
        .await
        .expect("deactivate");
    let (status, _, body) = rpc(&edge, Some(&rep_token), "whoami", "{}").await;
    assert_eq!(status, 403, "{body}");
    assert_error_body(&body, "42501");
    // Colleagues are unaffected.
    assert_eq!(
        rpc(&edge, Some(&members[0].token()), "whoami", "{}")
            .await
            .0,
        200
    );

    admin
        .execute(
            "SELECT crm_private.suspend_tenant($1::text::uuid)",
            &[&admin_b.tenant_id],
        )
        .await
        .expect("suspend");
    let (status, _, body) = rpc(&edge, Some(&b_token), "get_workspace", "{}").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "this workspace is suspended");

    admin
        .execute(
            "SELECT crm_private.reactivate_tenant($1::text::uuid)",
            &[&admin_b.tenant_id],
        )
        .await
        .expect("reactivate");
    assert_eq!(
        rpc(&edge, Some(&b_token), "get_workspace", "{}").await.0,
        200
    );
}
