//! No tenant context leaks across pooled connections: one connection, two tenants in turn.

use aura_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pooled_connection_alternating_tenants_never_leaks() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("pool", 1).await;
    let (a, b) = (&members[1], &members[5]);
    let (ta, tb) = (a.token(), b.token());
    let mut foreign = 0;
    for i in 0..1000 {
        let (m, t) = if i % 2 == 0 { (a, &ta) } else { (b, &tb) };
        let (status, ws) = get(&edge, Some(t), "/rest/v1/rpc/get_workspace").await;
        assert_eq!(status, 200, "request {i}: {ws}");
        if ws["id"] != m.tenant_id.as_str() {
            foreign += 1;
        }
    }
    assert_eq!(foreign, 0, "rows of the other tenant were returned");
    // And the one backend the edge used holds no leftover context or role.
    let leftovers = admin
        .query(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'authenticator'",
            &[],
        )
        .await
        .expect("activity");
    let n: i64 = leftovers[0].get(0);
    assert_eq!(n, 1, "pool of one used one backend");
}
