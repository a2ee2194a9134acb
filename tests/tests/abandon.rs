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
    // The abandoned connection was closed, not reused (a late cancel could hit whatever ran
    // on it next): shortly, only the new one is left, idle.
    let mut states = Vec::new();
    for _ in 0..40 {
        let rows = admin
            .query(
                "SELECT state FROM pg_stat_activity WHERE usename = 'authenticator'",
                &[],
            )
            .await
            .expect("activity");
        states = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        if states == ["idle"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(states, ["idle"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    let members = seed_two_tenants(&admin, "reader").await;
    admin
        .batch_execute(
            "CREATE FUNCTION api.test_big(n integer) RETURNS text LANGUAGE sql STABLE AS $$ SELECT repeat('x', n) $$;
             REVOKE ALL ON FUNCTION api.test_big(integer) FROM PUBLIC;
             GRANT EXECUTE ON FUNCTION api.test_big(integer) TO authenticated;",
        )
        .await
        .expect("test_big");
    let edge = Edge::start_with(&cluster, |c| {
        c.http.body_timeout = Duration::from_secs(1);
    })
    .await;
    let size = 32 << 20;
    let mut stream = tokio::net::TcpStream::connect(edge.url.trim_start_matches("http://"))
        .await
        .expect("connect");
    let request = format!(
        "GET /rest/v1/rpc/test_big?n={size} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        members[0].token()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    // Read nothing while the edge tries to send 32 MB, then take what there is.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut received = 0usize;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    if head.len() < 64 {
                        head.extend_from_slice(&buf[..n.min(64)]);
                    }
                    received += n;
                }
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(drained, "the connection stayed open");
    assert!(
        head.starts_with(b"HTTP/1.1 200") && received > 1 << 16,
        "the big response never started: {}",
        String::from_utf8_lossy(&head)
    );
    assert!(
        received < size,
        "the whole response arrived ({received} bytes): the stalled reader was not cut off"
    );
    // The edge serves others meanwhile and afterwards.
    let (status, _, _) = rpc(&edge, Some(&members[0].token()), "whoami", "{}").await;
    assert_eq!(status, 200);
}
