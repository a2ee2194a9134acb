//! `/auth/v1` over HTTP against the real edge and a real cluster: sessions, refresh-token
//! rotation and reuse, the gate's live session check, refusals of deactivated, banned and
//! suspended accounts, logout scopes, throttling shared by two edges, no user enumeration,
//! GoTrue's 4xx for bad input, redirects, CORS and ES256 signing.

use aura_tests::*;
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "correct-horse-9";

async fn start(pool: usize) -> (Cluster, tokio_postgres::Client, Edge) {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    auth_settings(&admin, &[("autoconfirm", "true")]).await;
    let edge = Edge::start(&cluster, pool).await;
    (cluster, admin, edge)
}

fn refresh_of(session: &Value) -> String {
    session["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

async fn whoami_status(edge: &Edge, token: &str) -> u16 {
    rpc(edge, Some(token), "whoami", "{}").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_creates_the_workspace_and_a_session_the_gate_accepts() {
    let (_cluster, admin, edge) = start(4).await;
    let session = sign_up(&edge, "Founder@Example.test", PASSWORD, "Founders Inc").await;
    assert_eq!(session["token_type"], "bearer");
    assert!(session["expires_in"].as_u64().is_some_and(|s| s > 90));
    assert_eq!(session["user"]["email"], "founder@example.test");
    assert_eq!(session["user"]["phone"], "");
    assert_eq!(session["user"]["app_metadata"]["provider"], "email");
    assert_eq!(session["user"]["app_metadata"]["tenant_role"], "admin");
    assert_eq!(session["user"]["identities"][0]["provider"], "email");
    let (status, _, who) = rpc(&edge, Some(&token_of(&session)), "whoami", "{}").await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["role"], "admin");
    let row = admin
        .query_one(
            "SELECT t.name, m.role, m.display_name FROM core.tenants t JOIN core.memberships m ON m.tenant_id = t.id
              JOIN auth.users u ON u.id = m.user_id WHERE u.email = 'founder@example.test'",
            &[],
        )
        .await
        .expect("workspace");
    assert_eq!(row.get::<_, String>(0), "Founders Inc");
    assert_eq!(row.get::<_, String>(1), "admin");
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("Test Person")
    );
    let hash: String = admin
        .query_one(
            "SELECT encrypted_password FROM auth.users WHERE email = 'founder@example.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        hash.starts_with("$2a$10$"),
        "GoTrue-readable bcrypt: {hash}"
    );

    // Without company_name the workspace gets a name anyway.
    let (status, solo) = auth_post(
        &edge,
        "/signup",
        &json!({"email": "solo@example.test", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{solo}");
    let name: String = admin
        .query_one(
            "SELECT t.name FROM core.tenants t JOIN core.memberships m ON m.tenant_id = t.id
              JOIN auth.users u ON u.id = m.user_id WHERE u.email = 'solo@example.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "solo's workspace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_reuse_ends_the_session() {
    let (_cluster, admin, edge) = start(4).await;
    let s1 = sign_up(&edge, "rotate@example.test", PASSWORD, "Rotate").await;
    let rt1 = refresh_of(&s1);
    let refresh = |rt: String| {
        let edge = &edge;
        async move {
            auth_post(
                edge,
                "/token?grant_type=refresh_token",
                &json!({"refresh_token": rt}),
                None,
            )
            .await
        }
    };
    let (status, s2) = refresh(rt1.clone()).await;
    assert_eq!(status, 200, "{s2}");
    let rt2 = refresh_of(&s2);
    assert_ne!(rt1, rt2);
    assert_eq!(whoami_status(&edge, &token_of(&s2)).await, 200);
    // Within the reuse interval (concurrent refreshes by one client) the old token still
    // gets a session.
    let (status, again) = refresh(rt1.clone()).await;
    assert_eq!(status, 200, "{again}");
    // Past it, reuse is theft: the whole session ends.
    auth_settings(&admin, &[("refresh_token_reuse_interval", "0")]).await;
    let (status, headers, body) = auth_call(
        &edge,
        Method::POST,
        "/token?grant_type=refresh_token",
        Some(&json!({"refresh_token": rt1})),
        None,
    )
    .await;
    assert_gotrue_error(status, &headers, &body, 400, "refresh_token_already_used");
    let (status, body) = refresh(rt2).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("refresh_token_not_found")),
        "{body}"
    );
    assert_eq!(
        whoami_status(&edge, &token_of(&s2)).await,
        403,
        "the session's access token died with it"
    );
    let (status, body) = refresh("not-a-token".into()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("refresh_token_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_days_without_a_refresh_end_a_session() {
    let (_cluster, admin, edge) = start(4).await;
    let s = sign_up(&edge, "idle@example.test", PASSWORD, "Idle").await;
    let fresh = sign_in(&edge, "idle@example.test", PASSWORD).await.1;
    assert_eq!(whoami_status(&edge, &token_of(&s)).await, 200);
    // The tests' clock: the first session was last used 30 days and a minute ago.
    admin
        .execute(
            "UPDATE auth.sessions SET created_at = now() - interval '30 days 1 minute',
                    updated_at = now() - interval '30 days 1 minute' WHERE id = $1::text::uuid",
            &[&session_id_of(&s)],
        )
        .await
        .unwrap();
    assert_eq!(whoami_status(&edge, &token_of(&s)).await, 403);
    let (status, body) = auth_post(
        &edge,
        "/token?grant_type=refresh_token",
        &json!({"refresh_token": refresh_of(&s)}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("session_expired")),
        "{body}"
    );
    // 29 days is fine, and the other session is untouched.
    admin
        .execute(
            "UPDATE auth.sessions SET updated_at = now() - interval '29 days' WHERE id = $1::text::uuid",
            &[&session_id_of(&fresh)],
        )
        .await
        .unwrap();
    assert_eq!(whoami_status(&edge, &token_of(&fresh)).await, 200);
    let (status, refreshed) = auth_post(
        &edge,
        "/token?grant_type=refresh_token",
        &json!({"refresh_token": refresh_of(&fresh)}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
}

/// The session id inside an access token (its claims, unverified).
fn session_id_of(session: &Value) -> String {
    use base64::Engine;
    let token = token_of(session);
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    let claims: Value = serde_json::from_slice(&bytes).expect("json");
    claims["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivated_banned_and_suspended_are_refused_at_login_and_next_call() {
    let (_cluster, admin, edge) = start(4).await;
    let owner = sign_up(&edge, "owner@refuse.test", PASSWORD, "Refuse").await;
    let owner_token = token_of(&owner);
    // Two members, made by an operator through the admin API and invited into the workspace
    // by the owner (accepting sets up their membership).
    let mut members = Vec::new();
    for (email, role) in [("rep@refuse.test", "rep"), ("mgr@refuse.test", "manager")] {
        let (status, _, invited) = rpc(
            &edge,
            Some(&owner_token),
            "invite_user",
            &json!({"email": email, "role": role}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{invited}");
        let (link, _) = await_mail(&_cluster, email, "invite").await;
        let (status, accepted) = auth_post(
            &edge,
            "/verify",
            &json!({"type": "invite", "token_hash": link}),
            None,
        )
        .await;
        assert_eq!(status, 200, "{accepted}");
        let (status, _, user) = auth_call(
            &edge,
            Method::PUT,
            "/user",
            Some(&json!({"password": PASSWORD})),
            Some(&token_of(&accepted)),
        )
        .await;
        assert_eq!(status, 200, "{user}");
        let (status, session) = sign_in(&edge, email, PASSWORD).await;
        assert_eq!(status, 200, "{session}");
        members.push((email, session));
    }
    let (rep_email, rep) = &members[0];
    let (mgr_email, mgr) = &members[1];
    assert_eq!(whoami_status(&edge, &token_of(rep)).await, 200);

    // Deactivated by the admin: the next call fails, and so does signing in. Removing a
    // member is sensitive (NFR-S8): refused without a reauthentication code and with a
    // wrong one; the code emailed by POST /reauthenticate works once.
    let rep_id = rep["user"]["id"].as_str().unwrap();
    for body in [
        json!({"user_id": rep_id}),
        json!({"user_id": rep_id, "nonce": "000000"}),
    ] {
        let (status, _, refused) = rpc(
            &edge,
            Some(&owner_token),
            "deactivate_member",
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 403, "{refused}");
        assert_error_body(&refused, "42501");
    }
    assert_eq!(whoami_status(&edge, &token_of(rep)).await, 200);
    let nonce = reauthenticate(&edge, &_cluster, "owner@refuse.test", &owner_token).await;
    let (status, _, _) = rpc(
        &edge,
        Some(&owner_token),
        "deactivate_member",
        &json!({"user_id": rep_id, "nonce": nonce}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(whoami_status(&edge, &token_of(rep)).await, 403);
    let (status, body) = sign_in(&edge, rep_email, PASSWORD).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("user_banned")),
        "{body}"
    );
    let (status, _, _) = rpc(
        &edge,
        Some(&owner_token),
        "reactivate_member",
        &json!({"user_id": rep_id}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sign_in(&edge, rep_email, PASSWORD).await.0, 200);
    let (status, _, refused) = rpc(
        &edge,
        Some(&owner_token),
        "deactivate_member",
        &json!({"user_id": rep_id, "nonce": nonce}).to_string(),
    )
    .await;
    assert_eq!(status, 403, "a used code: {refused}");

    // Banned by an operator: refused at once and at login.
    let mgr_id = mgr["user"]["id"].as_str().unwrap();
    let (status, _, banned) = auth_call(
        &edge,
        Method::PUT,
        &format!("/admin/users/{mgr_id}"),
        Some(&json!({"ban_duration": "24h"})),
        Some(&service_key()),
    )
    .await;
    assert_eq!(status, 200, "{banned}");
    assert!(banned["banned_until"].is_string());
    assert_eq!(whoami_status(&edge, &token_of(mgr)).await, 403);
    let (status, body) = sign_in(&edge, mgr_email, PASSWORD).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("user_banned")),
        "{body}"
    );

    // The workspace suspended by an operator: everyone out, at once and at login.
    admin
        .execute(
            "SELECT crm_private.suspend_tenant(tenant_id) FROM core.memberships m JOIN auth.users u ON u.id = m.user_id
              WHERE u.email = 'owner@refuse.test'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(whoami_status(&edge, &owner_token).await, 403);
    let (status, body) = sign_in(&edge, "owner@refuse.test", PASSWORD).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("user_banned")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_scopes_end_exactly_their_sessions() {
    let (_cluster, _admin, edge) = start(4).await;
    let first = sign_up(&edge, "scopes@example.test", PASSWORD, "Scopes").await;
    let second = sign_in(&edge, "scopes@example.test", PASSWORD).await.1;
    let third = sign_in(&edge, "scopes@example.test", PASSWORD).await.1;
    for s in [&first, &second, &third] {
        assert_eq!(whoami_status(&edge, &token_of(s)).await, 200);
    }
    let (status, _, _) = auth_call(
        &edge,
        Method::POST,
        "/logout?scope=others",
        None,
        Some(&token_of(&first)),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(whoami_status(&edge, &token_of(&first)).await, 200);
    assert_eq!(whoami_status(&edge, &token_of(&second)).await, 403);
    assert_eq!(whoami_status(&edge, &token_of(&third)).await, 403);
    let (status, _, _) =
        auth_call(&edge, Method::GET, "/user", None, Some(&token_of(&second))).await;
    assert_eq!(status, 403);

    let fourth = sign_in(&edge, "scopes@example.test", PASSWORD).await.1;
    let (status, _, _) = auth_call(
        &edge,
        Method::POST,
        "/logout?scope=local",
        None,
        Some(&token_of(&first)),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(whoami_status(&edge, &token_of(&first)).await, 403);
    assert_eq!(whoami_status(&edge, &token_of(&fourth)).await, 200);
    let (status, _, _) = auth_call(
        &edge,
        Method::POST,
        "/logout",
        None,
        Some(&token_of(&fourth)),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(whoami_status(&edge, &token_of(&fourth)).await, 403);
    let (status, body) = auth_post(
        &edge,
        "/token?grant_type=refresh_token",
        &json!({"refresh_token": refresh_of(&fourth)}),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_across_two_edges() {
    let (cluster, admin, edge_a) = start(4).await;
    let edge_b = Edge::start(&cluster, 4).await;
    sign_up(&edge_a, "target@example.test", PASSWORD, "Target").await;
    auth_settings(
        &admin,
        &[("login_failures_per_email", "4"), ("login_window", "600")],
    )
    .await;
    for i in 0..4 {
        let edge = if i % 2 == 0 { &edge_a } else { &edge_b };
        let (status, body) = sign_in(edge, "target@example.test", "wrong-password").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_credentials")),
            "{i}: {body}"
        );
    }
    for edge in [&edge_a, &edge_b] {
        let (status, headers, body) = auth_call(
            edge,
            Method::POST,
            "/token?grant_type=password",
            Some(&json!({"email": "target@example.test", "password": PASSWORD})),
            None,
        )
        .await;
        assert_gotrue_error(status, &headers, &body, 429, "over_request_rate_limit");
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=600).contains(&wait), "{wait}");
    }
    // Another address is not affected.
    sign_up(&edge_b, "other@example.test", PASSWORD, "Other").await;
    assert_eq!(
        sign_in(&edge_b, "other@example.test", PASSWORD).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_do_not_tell_whether_an_account_exists() {
    let (_cluster, admin, edge) = start(4).await;
    sign_up(&edge, "known@example.test", PASSWORD, "Known").await;
    let (s1, wrong_password) = sign_in(&edge, "known@example.test", "not-the-password").await;
    let (s2, unknown) = sign_in(&edge, "unknown@example.test", "not-the-password").await;
    assert_eq!((s1, &wrong_password), (s2, &unknown));
    let (s1, known) = auth_post(
        &edge,
        "/recover",
        &json!({"email": "known@example.test"}),
        None,
    )
    .await;
    let (s2, nobody) = auth_post(
        &edge,
        "/recover",
        &json!({"email": "nobody@example.test"}),
        None,
    )
    .await;
    assert_eq!((s1, &known), (200, &nobody));
    assert_eq!(s2, 200);
    // Without auto-confirm, signing up with a taken address looks like a new signup.
    auth_settings(&admin, &[("autoconfirm", "false")]).await;
    let (status, taken) = auth_post(
        &edge,
        "/signup",
        &json!({"email": "known@example.test", "password": PASSWORD}),
        None,
    )
    .await;
    let (status2, fresh) = auth_post(
        &edge,
        "/signup",
        &json!({"email": "fresh@example.test", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!((status, status2), (200, 200), "{taken} {fresh}");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert!(taken.get("access_token").is_none() && fresh.get("access_token").is_none());
    assert_eq!(taken["email"], "known@example.test");
    for k in [
        "id",
        "email",
        "confirmation_sent_at",
        "app_metadata",
        "user_metadata",
        "identities",
    ] {
        assert!(
            keys(&taken).contains(&k.to_owned()) && keys(&fresh).contains(&k.to_owned()),
            "{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_resets_the_password_and_ends_other_sessions() {
    let (cluster, _admin, edge) = start(4).await;
    let old = sign_up(&edge, "forgot@example.test", PASSWORD, "Forgot").await;
    let (status, _) = auth_post(
        &edge,
        "/recover",
        &json!({"email": "forgot@example.test"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, code) = await_mail(&cluster, "forgot@example.test", "recovery").await;
    assert_eq!(code.len(), 6);
    // The code with the email (what verifyOtp({email, token}) sends) works once.
    let (status, session) = auth_post(
        &edge,
        "/verify",
        &json!({"type": "recovery", "email": "Forgot@Example.test", "token": code}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let (status, body) = auth_post(
        &edge,
        "/verify",
        &json!({"type": "recovery", "email": "forgot@example.test", "token": code}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("otp_expired")),
        "{body}"
    );
    let (status, _, user) = auth_call(
        &edge,
        Method::PUT,
        "/user",
        Some(&json!({"password": "brand-new-password"})),
        Some(&token_of(&session)),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(
        whoami_status(&edge, &token_of(&old)).await,
        403,
        "the old session ended"
    );
    assert_eq!(whoami_status(&edge, &token_of(&session)).await, 200);
    assert_eq!(sign_in(&edge, "forgot@example.test", PASSWORD).await.0, 400);
    assert_eq!(
        sign_in(&edge, "forgot@example.test", "brand-new-password")
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_verify_redirects_only_to_allowed_urls() {
    let (cluster, admin, edge) = start(4).await;
    auth_settings(
        &admin,
        &[
            ("site_url", "\"https://app.example\""),
            ("uri_allow_list", "[\"https://ok.example/cb\"]"),
        ],
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut located = Vec::new();
    for (email, target) in [
        ("r1@example.test", "https://evil.example/"),
        ("r2@example.test", "https://ok.example/cb/x"),
    ] {
        sign_up(&edge, email, PASSWORD, "Redirect").await;
        auth_post(&edge, "/recover", &json!({"email": email}), None).await;
        let (link, _) = await_mail(&cluster, email, "recovery").await;
        let resp = client
            .get(format!(
                "{}/auth/v1/verify?token={link}&type=recovery&redirect_to={}",
                edge.url,
                url_encode(target)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303);
        located.push(resp.headers()["location"].to_str().unwrap().to_owned());
    }
    assert!(
        located[0].starts_with("https://app.example#access_token="),
        "{}",
        located[0]
    );
    assert!(
        located[1].starts_with("https://ok.example/cb/x#access_token="),
        "{}",
        located[1]
    );
    assert!(located[1].contains("&refresh_token=") && located[1].contains("&type=recovery"));
    // A used link: back to the site with the error, never a 5xx.
    let resp = client
        .get(format!(
            "{}/auth/v1/verify?token=deadbeef&type=recovery",
            edge.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://app.example#error=access_denied&error_code=otp_expired"),
        "{location}"
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// method, path, body, bearer token, expected status and GoTrue code.
type Case<'a> = (
    Method,
    &'a str,
    Option<Value>,
    Option<&'a str>,
    u16,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_gotrue_4xx_never_5xx() {
    let (_cluster, _admin, edge) = start(4).await;
    let good = sign_up(&edge, "valid@example.test", PASSWORD, "Valid").await;
    let token = token_of(&good);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/signup",
            Some(json!({})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!({"email": "x@example.test"})),
            None,
            422,
            "validation_failed",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!({"email": "not-an-email", "password": PASSWORD})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!({"email": 42, "password": PASSWORD})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!({"email": "a@example.test", "password": PASSWORD, "data": "x"})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!({"email": "a@example.test", "password": "short"})),
            None,
            422,
            "weak_password",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!({"email": "a@example.test", "password": "x".repeat(73)})),
            None,
            422,
            "validation_failed",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!({"email": "valid@example.test", "password": PASSWORD})),
            None,
            422,
            "user_already_exists",
        ),
        (
            Method::POST,
            "/signup",
            Some(json!([1, 2])),
            None,
            400,
            "bad_json",
        ),
        (
            Method::POST,
            "/token?grant_type=password",
            Some(json!({"email": "valid@example.test"})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/token?grant_type=password",
            Some(json!({"email": ["x"], "password": "y"})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/token?grant_type=magic",
            Some(json!({})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/token",
            Some(json!({})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/token?grant_type=refresh_token",
            Some(json!({})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/token?grant_type=refresh_token",
            Some(json!({"refresh_token": 5})),
            None,
            400,
            "validation_failed",
        ),
        (Method::GET, "/user", None, None, 401, "no_authorization"),
        (
            Method::GET,
            "/user",
            None,
            Some("not.a.jwt"),
            403,
            "bad_jwt",
        ),
        (
            Method::PUT,
            "/user",
            Some(json!({"password": "short"})),
            Some(&token),
            422,
            "weak_password",
        ),
        (
            Method::PUT,
            "/user",
            Some(json!({"password": PASSWORD})),
            Some(&token),
            422,
            "same_password",
        ),
        (
            Method::PUT,
            "/user",
            Some(json!({"email": "nope"})),
            Some(&token),
            400,
            "validation_failed",
        ),
        (
            Method::PUT,
            "/user",
            Some(json!({"data": [1]})),
            Some(&token),
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/logout?scope=everything",
            None,
            Some(&token),
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/recover",
            Some(json!({})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/recover",
            Some(json!({"email": "bad"})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/verify",
            Some(json!({"type": "signup"})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/verify",
            Some(json!({"type": "bogus", "token_hash": "x"})),
            None,
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/verify",
            Some(json!({"type": "recovery", "token_hash": "0000"})),
            None,
            403,
            "otp_expired",
        ),
        (
            Method::POST,
            "/verify",
            Some(json!({"type": "invite", "token_hash": "0000"})),
            None,
            403,
            "otp_expired",
        ),
        (
            Method::POST,
            "/verify",
            Some(json!({"type": "signup", "email": "valid@example.test", "token": "123456"})),
            None,
            403,
            "otp_expired",
        ),
        (
            Method::GET,
            "/admin/users",
            None,
            None,
            401,
            "no_authorization",
        ),
        (
            Method::GET,
            "/admin/users",
            None,
            Some(&token),
            403,
            "not_admin",
        ),
        (
            Method::POST,
            "/invite",
            Some(json!({"email": "x@example.test"})),
            Some(&token),
            403,
            "not_admin",
        ),
        (Method::GET, "/nowhere", None, None, 404, "not_found"),
        (
            Method::DELETE,
            "/signup",
            None,
            None,
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, bearer, want, code) in cases {
        let (status, headers, reply) =
            auth_call(&edge, method.clone(), path, body.as_ref(), bearer).await;
        assert!(status < 500, "{method} {path}: {status} {reply}");
        assert_gotrue_error(status, &headers, &reply, want, code);
    }
    // Operator endpoints with the service key, bad input.
    let service = service_key();
    for (method, path, body, want, code) in [
        (
            Method::GET,
            "/admin/users?page=x",
            None,
            400,
            "validation_failed",
        ),
        (
            Method::GET,
            "/admin/users/not-a-uuid",
            None,
            404,
            "user_not_found",
        ),
        (
            Method::GET,
            "/admin/users/00000000-0000-4000-8000-000000000000",
            None,
            404,
            "user_not_found",
        ),
        (
            Method::POST,
            "/admin/users",
            Some(json!({"email": "valid@example.test", "password": PASSWORD})),
            422,
            "email_exists",
        ),
        (
            Method::POST,
            "/admin/users",
            Some(json!({"email": "x@example.test", "ban_duration": "forever"})),
            400,
            "validation_failed",
        ),
        (
            Method::POST,
            "/invite",
            Some(json!({"email": "x@example.test"})),
            400,
            "validation_failed",
        ),
    ] {
        let (status, headers, reply) =
            auth_call(&edge, method.clone(), path, body.as_ref(), Some(&service)).await;
        assert_gotrue_error(status, &headers, &reply, want, code);
    }
    // Bodies that are not JSON, not UTF-8, or too large.
    for raw in [b"{not json".to_vec(), vec![0xff, 0xfe, b'{', b'}']] {
        let resp = edge
            .client
            .post(format!("{}/auth/v1/signup", edge.url))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "bad_json");
    }
    // A body over the limit: the edge answers 413 from the declared length and closes,
    // without waiting for the rest (so this speaks raw HTTP: a client still writing the body
    // would see the closed connection rather than the reply).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = edge.url.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /auth/v1/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"email\": \"",
            2 << 20
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reply = vec![0u8; 4096];
        let n = stream.read(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains("request_too_large"), "{reply}");
    }
    // A failed admin create leaves no user behind.
    let (status, _) = auth_post(
        &edge,
        "/signup",
        &json!({"email": "x@example.test", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the address of the refused admin create is still free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_allowed_origins() {
    let cluster = Cluster::start().await;
    let any = Edge::start(&cluster, 2).await;
    let strict = Edge::start_with(&cluster, |c| {
        c.auth.cors_origins = vec!["https://app.example".into()]
    })
    .await;
    let preflight = |edge: &Edge, origin: &str| {
        edge.client
            .request(
                Method::OPTIONS,
                format!("{}/auth/v1/token?grant_type=password", edge.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "apikey, content-type, x-client-info",
            )
            .send()
    };
    let resp = preflight(&any, "https://elsewhere.example").await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://elsewhere.example"
    );
    assert!(resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("apikey"));
    let resp = preflight(&strict, "https://elsewhere.example")
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = preflight(&strict, "https://app.example").await.unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let resp = strict
        .client
        .get(format!("{}/auth/v1/health", strict.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-total-count"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_signing_publishes_its_jwks() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    auth_settings(&admin, &[("autoconfirm", "true")]).await;
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let dir = std::env::temp_dir().join(format!("aura-es256-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem_path = dir.join("signing.pem");
    std::fs::write(&pem_path, key.serialize_pem()).unwrap();
    let mut vars = std::collections::HashMap::new();
    vars.insert("AURA_AUTHENTICATOR_URL", cluster.authenticator_url());
    vars.insert("AURA_JWT_SIGNING_KEY", pem_path.display().to_string());
    vars.insert("AURA_JWT_SIGNING_KID", "test-key-1".to_owned());
    vars.insert("AURA_MAIL_DIR", cluster.mail_dir().display().to_string());
    let mut config = edge::Config::from_vars(|name| vars.get(name).cloned()).expect("config");
    config.pool_size = 2;
    let edge = Edge::start_config(config).await;
    let (status, jwks) = get(&edge, None, "/auth/v1/.well-known/jwks.json").await;
    assert_eq!(status, 200, "{jwks}");
    assert_eq!(jwks["keys"][0]["kid"], "test-key-1");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private part");
    let session = sign_up(&edge, "es@example.test", PASSWORD, "ES").await;
    let header = jsonwebtoken::decode_header(token_of(&session)).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("test-key-1"));
    assert_eq!(whoami_status(&edge, &token_of(&session)).await, 200);
    // An HS256 token signed with some secret means nothing to this edge.
    assert_eq!(whoami_status(&edge, &sign(&json!({"sub": "x"}))).await, 401);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_autoconfirm_signup_sends_a_confirmation_link() {
    let (cluster, admin, edge) = start(4).await;
    auth_settings(&admin, &[("autoconfirm", "false")]).await;
    let (status, user) = auth_post(
        &edge,
        "/signup",
        &json!({"email": "confirm@example.test", "password": PASSWORD, "data": {"company_name": "Confirm Co"}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert!(
        user.get("access_token").is_none(),
        "no session before confirmation: {user}"
    );
    assert!(user["confirmation_sent_at"].is_string());
    let (status, body) = sign_in(&edge, "confirm@example.test", PASSWORD).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("email_not_confirmed")),
        "{body}"
    );
    let (link, _) = await_mail(&cluster, "confirm@example.test", "signup").await;
    let (status, session) = auth_post(
        &edge,
        "/verify",
        &json!({"type": "signup", "token_hash": link}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert!(session["user"]["email_confirmed_at"].is_string());
    let (_, _, who) = rpc(&edge, Some(&token_of(&session)), "whoami", "{}").await;
    assert_eq!(who["role"], "admin");
    assert_eq!(
        sign_in(&edge, "confirm@example.test", PASSWORD).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_change_is_confirmed_through_the_new_address() {
    let (cluster, _admin, edge) = start(4).await;
    let s = sign_up(&edge, "old@example.test", PASSWORD, "Mover").await;
    let (status, _, user) = auth_call(
        &edge,
        Method::PUT,
        "/user",
        Some(&json!({"email": "New@Example.test"})),
        Some(&token_of(&s)),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["email"], "old@example.test");
    assert_eq!(user["new_email"], "new@example.test");
    let (link, _) = await_mail(&cluster, "new@example.test", "email_change").await;
    let (status, session) = auth_post(
        &edge,
        "/verify",
        &json!({"type": "email_change", "token_hash": link}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["email"], "new@example.test");
    assert_eq!(sign_in(&edge, "old@example.test", PASSWORD).await.0, 400);
    assert_eq!(sign_in(&edge, "new@example.test", PASSWORD).await.0, 200);
    let (_, _, who) = rpc(&edge, Some(&token_of(&session)), "whoami", "{}").await;
    assert_eq!(who["email"], "new@example.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_deliver_each_email_once() {
    let (cluster, admin, edge_a) = start(4).await;
    let edge_b = Edge::start(&cluster, 4).await;
    for i in 0..12 {
        let email = format!("mail{i}@example.test");
        sign_up(&edge_a, &email, PASSWORD, "Mail").await;
        let edge = if i % 2 == 0 { &edge_a } else { &edge_b };
        let (status, _) = auth_post(edge, "/recover", &json!({"email": email}), None).await;
        assert_eq!(status, 200);
    }
    let mut sent = 0i64;
    for _ in 0..100 {
        sent = admin
            .query_one(
                "SELECT count(*) FROM core.email_outbox WHERE sent_at IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if sent == 12 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sent, 12);
    let row = admin
        .query_one("SELECT count(*), max(attempts) FROM core.email_outbox", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i32>(1)),
        (12, 1),
        "each message claimed once"
    );
    let files = std::fs::read_dir(cluster.mail_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .count();
    assert_eq!(files, 12);
}

/// A minimal SMTP server that accepts every message and hands each one's DATA over.
async fn smtp_sink() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(body) = data.as_mut() {
                        if line == "." {
                            let _ = tx.send(std::mem::take(body));
                            data = None;
                            let _ = write.write_all(b"250 queued\r\n").await;
                        } else {
                            body.push_str(&line);
                            body.push('\n');
                        }
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_smtp_when_configured() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    auth_settings(&admin, &[("autoconfirm", "true")]).await;
    let (port, mut received) = smtp_sink().await;
    let edge = Edge::start_with(&cluster, |c| {
        c.auth.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.auth.mail_from = "Aura <noreply@aura.test>".into();
    })
    .await;
    sign_up(&edge, "smtp@example.test", PASSWORD, "SMTP").await;
    let (status, _) = auth_post(
        &edge,
        "/recover",
        &json!({"email": "smtp@example.test"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("an email within 10 s")
        .expect("a message");
    // lettre may send the body quoted-printable: undo its soft line breaks and escapes.
    let message = message.replace("=\n", "").replace("=3D", "=");
    assert!(message.contains("To: smtp@example.test"), "{message}");
    assert!(
        message.contains("Subject: Reset your password"),
        "{message}"
    );
    assert!(message.contains("type=recovery"), "{message}");
    let mut sent = 0i64;
    for _ in 0..50 {
        sent = admin
            .query_one(
                "SELECT count(*) FROM core.email_outbox WHERE sent_at IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if sent == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sent, 1);
    assert!(
        !cluster.mail_dir().exists()
            || std::fs::read_dir(cluster.mail_dir())
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_and_recovery_emails_are_limited_per_address_and_client() {
    let (_cluster, admin, edge) = start(4).await;
    auth_settings(
        &admin,
        &[("signups_per_ip", "3"), ("recovers_per_email", "2")],
    )
    .await;
    for i in 0..3 {
        sign_up(&edge, &format!("burst{i}@example.test"), PASSWORD, "Burst").await;
    }
    let (status, headers, body) = auth_call(
        &edge,
        Method::POST,
        "/signup",
        Some(&json!({"email": "burst9@example.test", "password": PASSWORD})),
        None,
    )
    .await;
    assert_gotrue_error(status, &headers, &body, 429, "over_request_rate_limit");
    assert!(headers.contains_key("retry-after"));
    for _ in 0..2 {
        let (status, _) = auth_post(
            &edge,
            "/recover",
            &json!({"email": "burst0@example.test"}),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) = auth_call(
        &edge,
        Method::POST,
        "/recover",
        Some(&json!({"email": "burst0@example.test"})),
        None,
    )
    .await;
    assert_gotrue_error(status, &headers, &body, 429, "over_email_send_rate_limit");
    // The same reply for an address without an account, so the limit tells nothing either.
    for _ in 0..3 {
        auth_post(
            &edge,
            "/recover",
            &json!({"email": "ghost@example.test"}),
            None,
        )
        .await;
    }
    let (status, body) = auth_post(
        &edge,
        "/recover",
        &json!({"email": "ghost@example.test"}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("over_email_send_rate_limit"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_with_backoff() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    auth_settings(&admin, &[("autoconfirm", "true")]).await;
    // Nothing listens there: every delivery fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let edge = Edge::start_with(&cluster, |c| {
        c.auth.smtp_url = Some(format!("smtp://127.0.0.1:{closed}"))
    })
    .await;
    sign_up(&edge, "retry@example.test", PASSWORD, "Retry").await;
    auth_post(
        &edge,
        "/recover",
        &json!({"email": "retry@example.test"}),
        None,
    )
    .await;
    let mut row = None;
    for _ in 0..100 {
        let r = admin
            .query_one(
                "SELECT attempts, last_error IS NOT NULL, sent_at IS NULL,
                        extract(epoch FROM next_attempt_at - now())::float8
                   FROM core.email_outbox WHERE recipient = 'retry@example.test'",
                &[],
            )
            .await
            .unwrap();
        if r.get::<_, bool>(1) {
            row = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let row = row.expect("the failed delivery is recorded");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, bool>(2), "not marked sent");
    let wait: f64 = row.get(3);
    assert!(
        wait > 1.0 && wait <= 10.0,
        "retried later, with backoff: {wait}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_codes_cannot_be_guessed() {
    let (cluster, _admin, edge) = start(4).await;
    sign_up(&edge, "guess@example.test", PASSWORD, "Guess").await;
    auth_post(
        &edge,
        "/recover",
        &json!({"email": "guess@example.test"}),
        None,
    )
    .await;
    let (link, code) = await_mail(&cluster, "guess@example.test", "recovery").await;
    // The link token is random, not derived from the email and the code.
    assert_eq!(link.len(), 56);
    assert!(!link.contains(&code));
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, body) = auth_post(
            &edge,
            "/verify",
            &json!({"type": "recovery", "email": "guess@example.test", "token": wrong}),
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("otp_expired")),
            "{body}"
        );
    }
    // Five wrong codes: even the right one is refused now, for this email.
    let (status, body) = auth_post(
        &edge,
        "/verify",
        &json!({"type": "recovery", "email": "guess@example.test", "token": code}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("over_request_rate_limit")),
        "{body}"
    );
    // The emailed link still works.
    let (status, session) = auth_post(
        &edge,
        "/verify",
        &json!({"type": "recovery", "token_hash": link}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
}
