//! The real `@supabase/supabase-js` client against the real edge: `tests/js/journey.mjs`
//! (signup → workspace → sign-in → rpc → refresh → updateUser → signOut → recovery →
//! invitation → the admin API) run by Node, with the edge's URL, keys and mail directory.

use aura_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_journey() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    auth_settings(&admin, &[("autoconfirm", "true")]).await;
    let edge = Edge::start(&cluster, 4).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let script = root.join("tests/js/journey.mjs");
    assert!(
        root.join("tests/js/node_modules/@supabase/supabase-js")
            .exists(),
        "tests/js/node_modules is missing: run scripts/prereqs.sh (npm ci --prefix tests/js)"
    );
    let output = tokio::process::Command::new("node")
        .arg(&script)
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
        "supabase-js journey failed:\n{stdout}\n{stderr}"
    );
    let checks = stdout.lines().filter(|l| l.starts_with("ok - ")).count();
    assert!(checks >= 30, "only {checks} checks ran:\n{stdout}");
}
