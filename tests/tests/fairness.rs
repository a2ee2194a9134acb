//! One tenant flooding a slow function cannot starve another: it holds at most its share of
//! the pool, its excess waits in its own queue or gets 429, and the other tenant is served.

use aura_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_does_not_starve_another() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("fair", 4).await; // a pool of 4: each tenant may hold 2
    install_test_sleep(&admin).await;
    let (a, b) = (members[0].token(), members[3].token());
    let edge = Arc::new(edge);

    // Tenant A: 12 connections (three times the pool) calling a 300 ms function in a loop.
    let flooding_until = Instant::now() + Duration::from_secs(4);
    let mut flood = Vec::new();
    for _ in 0..12 {
        let (edge, a) = (edge.clone(), a.clone());
        flood.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while Instant::now() < flooding_until {
                let started = Instant::now();
                let status = client
                    .post(format!("{}/rest/v1/rpc/test_sleep", edge.url))
                    .bearer_auth(&a)
                    .header("content-type", "application/json")
                    .body(r#"{"seconds": 0.3}"#)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                assert!(matches!(status, 200 | 429), "flood got {status}");
                if status == 200 {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Tenant B meanwhile: one request after another, each served without waiting for A.
    let mut b_latencies = Vec::new();
    while Instant::now() + Duration::from_millis(500) < flooding_until {
        let started = Instant::now();
        let (status, _, who) = rpc(&edge, Some(&b), "whoami", "{}").await;
        b_latencies.push(started.elapsed());
        assert_eq!(status, 200, "tenant B refused during A's flood: {who}");
        assert_eq!(who["tenant_id"], members[3].tenant_id.as_str());
    }
    let mut a_latencies = Vec::new();
    for task in flood {
        a_latencies.extend(task.await.expect("flood task"));
    }
    let (a_p50, b_p50) = (median(a_latencies.clone()), median(b_latencies.clone()));
    let b_max = *b_latencies.iter().max().expect("B made requests");
    println!(
        "fairness: A {} calls p50 {a_p50:?}; B {} calls p50 {b_p50:?} max {b_max:?}",
        a_latencies.len(),
        b_latencies.len()
    );
    // A's calls queue behind each other (12 callers, 2 at a time, 300 ms each: ~1.8 s);
    // B's never queue behind A's. Generous bounds: this machine is shared and noisy.
    assert!(
        a_p50 >= Duration::from_millis(900),
        "A's flood did not queue: {a_p50:?}"
    );
    assert!(
        b_max < Duration::from_millis(600),
        "B waited {b_max:?} (A's p50 {a_p50:?})"
    );
    assert!(b_p50 * 10 < a_p50, "B p50 {b_p50:?} vs A p50 {a_p50:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_queue_gets_429_with_retry_after() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    let members = seed_two_tenants(&admin, "queue").await;
    install_test_sleep(&admin).await;
    let edge = Arc::new(
        Edge::start_with(&cluster, |c| {
            c.pool_size = 2;
            c.tenant_queue = 1;
        })
        .await,
    );
    let a = members[0].token();
    // A's share is 1 connection and its queue 1 request: of 4 at once, 2 are refused.
    let mut calls = Vec::new();
    for _ in 0..4 {
        let (edge, a) = (edge.clone(), a.clone());
        calls.push(tokio::spawn(async move {
            rpc(&edge, Some(&a), "test_sleep", r#"{"seconds": 1}"#).await
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = 0;
    for call in calls {
        let (status, headers, body) = call.await.expect("call");
        match status {
            200 => assert_eq!(body, serde_json::json!("slept")),
            429 => {
                refused += 1;
                assert_error_body(&body, "53300");
                assert_eq!(headers["retry-after"], "1");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(refused, 2);
    // The other tenant was never affected.
    let (status, _, _) = rpc(&edge, Some(&members[3].token()), "whoami", "{}").await;
    assert_eq!(status, 200);
}
