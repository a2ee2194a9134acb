//! Two edges on one database: the edge keeps no state of its own that matters. A session
//! ended through one is refused by the other, a deactivation made through one holds on the
//! other, and a user's rate limit counts their requests on both (each edge counts in memory
//! and shares its counts through the database every `rate_limit_sync`).

use aura_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LIMIT: u32 = 10;
const SYNC: Duration = Duration::from_millis(200);

async fn start_edge(cluster: &Cluster) -> Edge {
    Edge::start_with(cluster, |c| {
        c.pool_size = 4;
        c.rate_limit = LIMIT;
        c.rate_limit_sync = SYNC;
    })
    .await
}

/// GET whoami: status, headers, body.
async fn whoami(edge: &Edge, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = edge
        .client
        .get(format!("{}/rest/v1/rpc/whoami", edge.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_deactivation_and_rate_limits_hold_across_two_edges() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    let members = seed_two_tenants(&admin, "two").await;
    let (a, b) = (start_edge(&cluster).await, start_edge(&cluster).await);
    let (admin_a, manager_a, rep_a, admin_b) = (&members[0], &members[1], &members[2], &members[3]);

    // A session ended through edge A (logout) is refused by edge B.
    let session = new_session(&admin, &admin_b.user_id).await;
    let token = sign(&claims_with_session(
        &admin_b.user_id,
        &admin_b.tenant_id,
        &session,
    ));
    assert_eq!(whoami(&b, &token).await.0, 200);
    let (status, _, _) = auth_call(&a, reqwest::Method::POST, "/logout", None, Some(&token)).await;
    assert_eq!(status, 204);
    let (status, _, body) = whoami(&b, &token).await;
    assert_eq!(status, 403, "{body}");
    assert_error_body(&body, "42501");

    // A member deactivated through edge A is refused by edge B at once. The admin confirms
    // it with a reauthentication code asked for through edge B.
    assert_eq!(whoami(&b, &rep_a.token()).await.0, 200);
    let nonce = reauthenticate(&b, &cluster, &admin_a.email, &admin_a.token()).await;
    let (status, _, body) = rpc(
        &a,
        Some(&admin_a.token()),
        "deactivate_member",
        &json!({ "user_id": rep_a.user_id, "nonce": nonce }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = whoami(&b, &rep_a.token()).await;
    assert_eq!(status, 403, "{body}");

    // Rate limits: LIMIT requests a minute for the manager, on both edges together. The
    // window is the clock's minute: start early in one, so the test's requests share it.
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 40 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
    let token = manager_a.token();
    let half = LIMIT / 2;
    for i in 0..half {
        let (status, headers, body) = whoami(&a, &token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "ratelimit-limit"), Some(LIMIT.into()));
        assert_eq!(
            header(&headers, "ratelimit-remaining"),
            Some((LIMIT - i - 1).into())
        );
        assert!(header(&headers, "ratelimit-reset").is_some_and(|s| (1..=60).contains(&s)));
    }
    // Both edges report and learn within a few sync intervals.
    tokio::time::sleep(SYNC * 4).await;
    for i in 0..half {
        let (status, headers, body) = whoami(&b, &token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            header(&headers, "ratelimit-remaining"),
            Some((LIMIT - half - i - 1).into()),
            "edge B counts edge A's requests too"
        );
    }
    tokio::time::sleep(SYNC * 4).await;
    for edge in [&a, &b] {
        let (status, headers, body) = whoami(edge, &token).await;
        assert_eq!(status, 429, "request {} in the minute: {body}", LIMIT + 1);
        assert_error_body(&body, "53400");
        assert_eq!(header(&headers, "ratelimit-remaining"), Some(0));
        assert!(header(&headers, "retry-after").is_some_and(|s| (1..=60).contains(&s)));
    }
    // Per user: someone else, with no request yet, is not affected.
    let (status, headers, _) = whoami(&a, &members[4].token()).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "ratelimit-remaining"),
        Some((LIMIT - 1).into())
    );

    // An operator's limit for the tenant reaches both edges within a sync.
    admin
        .execute(
            "SELECT crm_private.set_rate_limit($1::text::uuid, $2)",
            &[&manager_a.tenant_id, &(LIMIT as i32 * 3)],
        )
        .await
        .expect("set_rate_limit");
    tokio::time::sleep(SYNC * 4).await;
    for edge in [&a, &b] {
        let (status, headers, body) = whoami(edge, &token).await;
        assert_eq!(status, 200, "the tenant's own limit: {body}");
        assert_eq!(
            header(&headers, "ratelimit-limit"),
            Some((LIMIT * 3).into())
        );
    }
}
