//! The database goes away mid-run: 503 with Retry-After; when it is back, requests succeed
//! again without restarting the edge.

use aura_tests::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_503_and_recovers_without_restart() {
    let Seeded {
        edge,
        members,
        admin,
        cluster,
    } = Seeded::start("out", 4).await;
    drop(admin);
    let token = members[0].token();
    assert_eq!(rpc(&edge, Some(&token), "whoami", "{}").await.0, 200);

    cluster.stop();
    for _ in 0..3 {
        let (status, headers, body) = rpc(&edge, Some(&token), "whoami", "{}").await;
        assert_eq!(status, 503, "{body}");
        assert!(headers.get("retry-after").is_some());
        assert_error_body(&body, "PGRST001");
        let text = body.to_string();
        assert!(
            !text.contains("authenticator") && !text.contains("127.0.0.1"),
            "leaks internals: {text}"
        );
    }
    assert_eq!(get(&edge, None, "/ready").await.0, 503);
    assert_eq!(
        get(&edge, None, "/health").await.0,
        200,
        "the process itself is fine"
    );

    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = (0, serde_json::Value::Null);
    while Instant::now() < deadline {
        let (status, _, body) = rpc(&edge, Some(&token), "whoami", "{}").await;
        last = (status, body);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while reconnecting: {}", last.1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last.0, 200, "the edge did not recover: {}", last.1);
    assert_eq!(last.1["user_id"], members[0].user_id.as_str());
    assert_eq!(get(&edge, None, "/ready").await.0, 200);
}
