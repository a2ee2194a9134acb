//! A client that gives up mid-request leaves no statement running: the edge cancels it in
//! PostgreSQL, rolls back, and the connection serves the next request.

use aura_tests::*;
use std::time::{Duration, Instant};

async fn running_sleeps(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE usename = 'authenticator' AND state = 'active' AND query LIKE '%test_sleep%'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_leaves_no_running_query() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("abandon", 1).await;
    install_test_sleep(&admin).await;
    let token = members[0].token();

    // The client waits 500 ms for a 10 s statement, then hangs up.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let sent = impatient
        .post(format!("{}/rest/v1/rpc/test_sleep", edge.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"seconds": 10}"#)
        .send()
        .await;
    assert!(sent.is_err(), "the client timed out");
    let gave_up = Instant::now();

    let mut gone_after = None;
    while gave_up.elapsed() < Duration::from_secs(5) {
        if running_sleeps(&admin).await == 0 {
            gone_after = Some(gave_up.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = gone_after.expect("the statement was still running 5 s after the client left");
    assert!(
        gone_after < Duration::from_secs(2),
        "canceled after {gone_after:?}"
    );

    // The one pooled connection was rolled back and released: the next request is served
    // at once and sees a clean transaction.
    let started = Instant::now();
    let (status, _, who) = rpc(&edge, Some(&token), "whoami", "{}").await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["user_id"], members[0].user_id.as_str());
    assert!(started.elapsed() < Duration::from_secs(2));
    // Only that one backend, and it is idle.
    let rows = admin
        .query(
            "SELECT state FROM pg_stat_activity WHERE usename = 'authenticator'",
            &[],
        )
        .await
        .expect("activity");
    let states: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(states, ["idle"]);
}
