//! The figures behind the edge's hardening: a noisy neighbour and a crowd of slow clients,
//! against the real `aura-edge` binary in its own process (so its memory is its own) and a
//! throwaway cluster with pg_crm.
//!
//!     scripts/hardening-figures.sh          (builds release, installs pg_crm, runs this)
//!
//! 1. Noisy neighbour: tenant A's admin floods `update_workspace` with a timezone from 16, 64
//!    and 320 connections while tenant B reads its workspace one request at a time; prints
//!    B's latency percentiles (and A's throughput and refusals), with the default tenant
//!    share (half the pool) and with share 1.0 (a tenant may take the whole pool). The same
//!    again with A flooding a deliberately slow function (`api.test_sleep(0.05)`, installed
//!    in this throwaway cluster only), where only the share protects B.
//! 2. Slow clients: 8,000 connections each send half a request line and stall; prints the
//!    edge's resident memory before, at the peak, and after they came and went.
//!
//! Environment: `AURA_TEST_PG_CONFIG` (a PostgreSQL tree with pg_crm installed), `AURA_EDGE_BIN`
//! (default `target/release/aura-edge`), `FLOOD_SECONDS` (default 10).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aura_tests::*;
use tokio::io::AsyncWriteExt;

struct EdgeProcess {
    child: Child,
    url: String,
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EdgeProcess {
    async fn start(cluster: &Cluster, extra: &[(&str, &str)]) -> EdgeProcess {
        let bin = std::env::var("AURA_EDGE_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/aura-edge").to_owned()
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(&bin);
        command
            .env(
                "AURA_AUTHENTICATOR_URL",
                cluster.authenticator_url_with("sslmode=disable"),
            )
            .env("AURA_JWT_SECRET", JWT_SECRET)
            .env("AURA_LISTEN", format!("127.0.0.1:{port}"))
            .env("AURA_LOG", "error")
            .stdout(Stdio::null());
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let edge = EdgeProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client
                .get(format!("{}/health", edge.url))
                .send()
                .await
                .is_ok()
            {
                return edge;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the edge did not start");
    }

    /// Resident and peak resident memory, in MB.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// What tenant A floods with.
#[derive(Clone, Copy)]
enum Flood {
    /// `update_workspace` with a timezone (the call that starved others before 0.2.0).
    Timezone,
    /// `test_sleep(0.05)`: 50 ms holding a connection.
    Slow,
}

/// Tenant A floods from `connections` connections while B reads; B's latencies, A's count
/// of (ok, refused, other) responses.
async fn flood(
    edge: &EdgeProcess,
    a: &str,
    b: &str,
    connections: usize,
    seconds: u64,
    kind: Flood,
) -> (Vec<Duration>, [u64; 3]) {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut flooders = Vec::new();
    for i in 0..connections {
        let (url, a, stop, counts) = (edge.url.clone(), a.to_owned(), stop.clone(), counts.clone());
        flooders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            let zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"];
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (function, body) = match kind {
                    Flood::Timezone => (
                        "update_workspace",
                        format!(r#"{{"timezone": "{}"}}"#, zones[n % zones.len()]),
                    ),
                    Flood::Slow => ("test_sleep", r#"{"seconds": 0.05}"#.to_owned()),
                };
                let status = client
                    .post(format!("{url}/rest/v1/rpc/{function}"))
                    .bearer_auth(&a)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                let slot = match status {
                    200 => 0,
                    429 | 503 => 1,
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                if slot == 1 {
                    // What a well-behaved client does with Retry-After, shortened.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    for c in counts.iter() {
        c.store(0, Ordering::Relaxed);
    }
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let status = client
            .get(format!("{}/rest/v1/rpc/get_workspace", edge.url))
            .bearer_auth(b)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 200, "tenant B's read failed");
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.await;
    }
    latencies.sort();
    let counts = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    (latencies, counts)
}

async fn noisy_neighbour(cluster: &Cluster, members: &[Member], seconds: u64) {
    let (a, b) = (members[0].token(), members[3].token());
    for (kind, title) in [
        (
            Flood::Timezone,
            "tenant A floods update_workspace(timezone)",
        ),
        (Flood::Slow, "tenant A floods a 50 ms function (test_sleep)"),
    ] {
        println!("\n## Noisy neighbour: tenant B's one-row read while {title}");
        println!("pool 10; {seconds} s per row after 1 s of warm-up; B reads one request at a time, 10 ms apart\n");
        println!("| tenant share | A connections | B p50 ms | B p95 ms | B max ms | B reads | A ok/s | A 429 | A other |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for (label, share) in [("0.5 (default)", "0.5"), ("1.0 (whole pool)", "1.0")] {
            let edge = EdgeProcess::start(cluster, &[("AURA_TENANT_POOL_SHARE", share)]).await;
            for connections in [0, 16, 64, 320] {
                let (latencies, [ok, refused, other]) =
                    flood(&edge, &a, &b, connections, seconds, kind).await;
                println!(
                    "| {label} | {connections} | {} | {} | {} | {} | {:.0} | {refused} | {other} |",
                    ms(percentile(&latencies, 0.5)),
                    ms(percentile(&latencies, 0.95)),
                    ms(*latencies.last().unwrap_or(&Duration::ZERO)),
                    latencies.len(),
                    ok as f64 / seconds as f64,
                );
            }
        }
    }
}

async fn slow_clients(cluster: &Cluster, count: usize) {
    let edge = EdgeProcess::start(cluster, &[]).await;
    let before = edge.rss();
    let addr = edge.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /health HTTP/1.1\r\n").await;
                held.push(s);
            }
            Err(e) => {
                println!("connect failed after {} connections: {e}", held.len());
                break;
            }
        }
    }
    let opened = started.elapsed();
    let during = edge.rss();
    // Real requests while the crowd is there.
    let client = reqwest::Client::new();
    let probe = Instant::now();
    let status = client
        .get(format!("{}/health", edge.url))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let probe = probe.elapsed();
    tokio::time::sleep(Duration::from_secs(12)).await; // past the 10 s header timeout
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = edge.rss();
    println!("\n## Slow clients: {count} connections sending half a request line, then stalling\n");
    println!(
        "opened in {:.1} s; a normal request meanwhile: {status} in {} ms",
        opened.as_secs_f64(),
        ms(probe)
    );
    println!("| edge RSS | MB |\n|---|---|");
    println!("| before | {:.1} |", before.0);
    println!("| with the {count} open | {:.1} |", during.0);
    println!("| after they came and went | {:.1} |", after.0);
    println!("| peak (VmHWM) | {:.1} |", after.1);
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("FLOOD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    let members = seed_two_tenants(&admin, "noisy").await;
    install_test_sleep(&admin).await;
    noisy_neighbour(&cluster, &members, seconds).await;
    slow_clients(&cluster, 8000).await;
}
