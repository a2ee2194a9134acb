//! The real `@supabase/supabase-js` client against the real edge, run by Node with the
//! edge's URL, keys and mail directory: `tests/js/journey.mjs` (signup → workspace → sign-in
//! → rpc → refresh → updateUser → signOut → recovery → invitation → the admin API) and
//! `tests/js/crm_journeys.mjs` (PRD journeys 3, a rep's deal lifecycle, and 2, a manager's
//! pipeline review and reassignment).

use aura_tests::*;

/// Runs one journey script against a fresh cluster and edge; returns how many checks passed.
async fn run_journey(script: &str) -> usize {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    auth_settings(&admin, &[("autoconfirm", "true")]).await;
    let edge = Edge::start(&cluster, 4).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        root.join("tests/js/node_modules/@supabase/supabase-js")
            .exists(),
        "tests/js/node_modules is missing: run scripts/prereqs.sh (npm ci --prefix tests/js)"
    );
    let output = tokio::process::Command::new("node")
        .arg(root.join("tests/js").join(script))
        .env("AURA_URL", &edge.url)
        .env("AURA_ANON_KEY", anon_key())
        .env("AURA_SERVICE_ROLE_KEY", service_key())
        .env("AURA_MAIL_DIR", cluster.mail_dir())
        .env("NODE_NO_WARNINGS", "1")
        .output()
        .await
        .expect("node (Node.js 20 or later) must be installed: scripts/prereqs.sh checks it");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("journey complete"),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    stdout.lines().filter(|l| l.starts_with("ok - ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_journey() {
    let checks = run_journey("journey.mjs").await;
    assert!(checks >= 30, "only {checks} checks ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_crm_journeys() {
    let checks = run_journey("crm_journeys.mjs").await;
    assert!(checks >= 14, "only {checks} checks ran");
}
