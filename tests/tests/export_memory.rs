//! A 50,000-contact export streams (issue 10, NFR-D2): while the download runs, this
//! process (the edge runs in it) grows by a few MB at most although the export is many
//! times that, and the first bytes arrive before the contacts are read. Alone in its test
//! binary, so no other test's allocations blur the measurement.

use aura_tests::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This process's resident set, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Downloads an export, reading chunk by chunk and keeping nothing but counts:
/// (bytes, lines, time to the first chunk, total time).
async fn download(edge: &Edge, token: &str, nonce: &str) -> (u64, u64, Duration, Duration) {
    let started = Instant::now();
    let mut resp = edge
        .client
        .get(format!(
            "{}/rest/v1/export?format=json&nonce={nonce}",
            edge.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let (mut bytes, mut lines, mut first) = (0u64, 0u64, None);
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        first.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    (bytes, lines, first.unwrap_or_default(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50000_contact_export_keeps_memory_flat() {
    const CONTACTS: i64 = 50_000;
    let Seeded {
        edge,
        members,
        admin,
        cluster,
    } = Seeded::start("expmem", 4).await;
    let admin_a = &members[0];
    // Written by the DBA in one statement (no request context: the operator's path).
    admin
        .execute(
            "INSERT INTO crm.contacts (tenant_id, first_name, last_name, email, phone, title, assigned_to)
             SELECT $1::text::uuid, 'First' || i, 'Last name number ' || i, 'person' || i || '@example.test',
                    '+1 555 ' || lpad(i::text, 7, '0'), repeat('Vice president of things ', 6), $2::text::uuid
               FROM generate_series(1, $3::bigint) i",
            &[&admin_a.tenant_id, &admin_a.user_id, &CONTACTS],
        )
        .await
        .expect("contacts");

    // Warm up (pool, catalog, allocator), then measure idle.
    let nonce = reauthenticate(&edge, &cluster, &admin_a.email, &admin_a.token()).await;
    download(&edge, &admin_a.token(), &nonce).await;
    let nonce = reauthenticate(&edge, &cluster, &admin_a.email, &admin_a.token()).await;
    let idle = rss_kib();
    let peak = Arc::new(AtomicU64::new(idle));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let (bytes, lines, first, total) = download(&edge, &admin_a.token(), &nonce).await;
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let grown_kib = peak.load(Ordering::Relaxed).saturating_sub(idle);
    println!(
        "export of {CONTACTS} contacts: {bytes} bytes, {lines} lines, first byte after {first:?}, \
         all in {total:?} ({:.0} rows/s); this process grew by {grown_kib} KiB over {idle} KiB idle",
        lines as f64 / total.as_secs_f64()
    );
    assert!(lines > CONTACTS as u64, "every contact: {lines} lines");
    assert!(
        bytes > 25 << 20,
        "the export is large enough to show buffering: {bytes} bytes"
    );
    // Generous: buffering the export would take all of it (over 25 MiB).
    assert!(
        grown_kib < 12 * 1024,
        "memory grew by {grown_kib} KiB during a {bytes}-byte export"
    );
    assert!(first < Duration::from_secs(1), "first byte after {first:?}");
}
