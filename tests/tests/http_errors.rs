//! Bad tokens are 401, bad requests 4xx, never a 5xx; and the error body is PostgREST's.

use aura_tests::*;
use base64::Engine as _;
use serde_json::json;

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_requests_are_checked() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("err", 2).await;
    // A function with a typed argument, to see type errors come back as 400.
    admin
        .batch_execute(
            "CREATE FUNCTION api.test_double(n integer, at date DEFAULT NULL) RETURNS integer
               LANGUAGE sql IMMUTABLE AS 'SELECT n * 2';
             REVOKE ALL ON FUNCTION api.test_double(integer, date) FROM PUBLIC;
             GRANT EXECUTE ON FUNCTION api.test_double(integer, date) TO authenticated;",
        )
        .await
        .expect("fixture function");
    let m = &members[0];
    let good = m.claims();

    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    let mut dashless = good.clone();
    dashless["sub"] = json!(m.user_id.replace('-', ""));
    let mut braced = good.clone();
    braced["sub"] = json!(format!("{{{}}}", m.user_id));
    let critical = {
        let header = jsonwebtoken::Header {
            crit: Some(vec!["exp".to_owned()]),
            ..Default::default()
        };
        jsonwebtoken::encode(
            &header,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .expect("sign")
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "PGRST302"),
        ("sub without dashes", Some(sign(&dashless)), "PGRST301"),
        ("braced sub", Some(sign(&braced)), "PGRST301"),
        ("crit header", Some(critical), "PGRST301"),
        (
            "forged signature",
            Some(sign_with(&good, "another-secret-that-is-32-bytes-long!!")),
            "PGRST301",
        ),
        ("expired", Some(sign(&expired)), "PGRST301"),
        ("alg none", Some(alg_none), "PGRST301"),
        ("wrong audience", Some(sign(&wrong_aud)), "PGRST301"),
        ("garbage", Some("not.a.jwt".to_string()), "PGRST301"),
    ];
    for (what, token, code) in cases {
        let (status, headers, body) = rpc(&edge, token.as_deref(), "whoami", "{}").await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_error_body(&body, code);
        assert!(headers.get("www-authenticate").is_some(), "{what}");
    }

    let token = sign(&good);
    let t = Some(token.as_str());
    assert_eq!(
        rpc(&edge, t, "test_double", r#"{"n": 21}"#).await.2,
        json!(42)
    );
    // (what, function, body, status, code, the field a conversion error names)
    type Case<'a> = (&'a str, &'a str, &'a str, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "unknown function",
            "no_such_function",
            "{}",
            404,
            "PGRST202",
            None,
        ),
        ("not in api", "begin_request", "{}", 404, "PGRST202", None),
        (
            "unknown argument",
            "whoami",
            r#"{"x": 1}"#,
            404,
            "PGRST202",
            None,
        ),
        ("malformed JSON", "whoami", "{", 400, "PGRST102", None),
        ("not an object", "whoami", "[1, 2]", 400, "PGRST102", None),
        (
            "wrong type",
            "test_double",
            r#"{"n": "many"}"#,
            400,
            "22P02",
            Some("n"),
        ),
        (
            "wrong type (object)",
            "test_double",
            r#"{"n": {"a": 1}}"#,
            400,
            "22P02",
            Some("n"),
        ),
        (
            "bad date",
            "test_double",
            r#"{"n": 1, "at": "yesterday-ish"}"#,
            400,
            "22007",
            Some("at"),
        ),
        (
            "out of range",
            "test_double",
            r#"{"n": 99999999999}"#,
            400,
            "22003",
            Some("n"),
        ),
        (
            "bad uuid",
            "get_deal",
            r#"{"id": "abc"}"#,
            400,
            "22P02",
            Some("id"),
        ),
        (
            "bad uuid among good arguments",
            "list_deals",
            r#"{"stage": "won", "page_size": 5, "organization_id": "1234"}"#,
            400,
            "22P02",
            Some("organization_id"),
        ),
        (
            "bad integer",
            "list_deals",
            r#"{"min_probability": "high"}"#,
            400,
            "22P02",
            Some("min_probability"),
        ),
        (
            "bad numeric",
            "create_deal",
            r#"{"name": "x", "amount": "lots"}"#,
            400,
            "22P02",
            Some("amount"),
        ),
        (
            "bad boolean",
            "list_contacts",
            r#"{"deleted": "maybe"}"#,
            400,
            "22P02",
            Some("deleted"),
        ),
    ];
    for (what, f, body, want, code, field) in cases {
        let (status, _, res) = rpc(&edge, t, f, body).await;
        assert_eq!(status, want, "{what}: {res}");
        assert!(status < 500, "{what}");
        assert_error_body(&res, code);
        if let Some(field) = field {
            assert_eq!(
                res["details"],
                json!(format!("field: {field}")),
                "{what}: {res}"
            );
            assert!(
                res["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("invalid {field}: "))),
                "{what}: {res}"
            );
        }
    }
    // A value the function itself refuses keeps the function's own error and field.
    let (status, _, res) = rpc(&edge, t, "list_deals", r#"{"min_probability": 101}"#).await;
    assert_eq!(status, 400, "{res}");
    assert_error_body(&res, "22023");
    assert_eq!(res["details"], json!("field: min_probability"), "{res}");
    // GET is for STABLE functions only.
    let (status, body) = get(&edge, t, "/rest/v1/rpc/update_workspace?name=x").await;
    assert_eq!(status, 405, "{body}");

    // Nothing the client sent is echoed back unbounded: a 500 KB argument name, a 500 KB
    // value PostgreSQL cannot convert.
    let huge = "a".repeat(500_000);
    for (f, body, code) in [
        ("whoami", json!({ huge.clone(): 1 }), "PGRST202"),
        // (A date: PostgreSQL converts it and its message quotes the value, cut here. The
        // edge refuses a bad integer itself, without quoting it.)
        (
            "test_double",
            json!({ "n": 1, "at": huge.clone() }),
            "22007",
        ),
    ] {
        let response = edge
            .client
            .post(format!("{}/rest/v1/rpc/{f}", edge.url))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.status().as_u16(),
            if code == "PGRST202" { 404 } else { 400 }
        );
        let text = response.text().await.expect("body");
        assert!(text.len() < 2_000, "{f}: a {} byte error", text.len());
        let res: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_error_body(&res, code);
        assert!(
            res["message"].as_str().is_some_and(|m| m.contains("aaaa")),
            "{res}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_headers_tell_the_truth() {
    let Seeded {
        edge,
        members,
        admin: _admin,
        cluster: _cluster,
    } = Seeded::start("allow", 2).await;
    let token = members[0].token();
    let request = |method: &str, path: &str| {
        edge.client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", edge.url),
            )
            .bearer_auth(&token)
    };
    // (method, function, status, Allow)
    let cases = [
        ("OPTIONS", "update_workspace", 200, "OPTIONS, POST"),
        ("OPTIONS", "get_workspace", 200, "GET, HEAD, OPTIONS, POST"),
        ("PUT", "update_workspace", 405, "OPTIONS, POST"),
        ("DELETE", "get_workspace", 405, "GET, HEAD, OPTIONS, POST"),
        ("GET", "update_workspace", 405, "OPTIONS, POST"),
    ];
    for (method, f, status, allow) in cases {
        let response = request(method, &format!("/rest/v1/rpc/{f}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), status, "{method} {f}");
        assert_eq!(response.headers()["allow"], allow, "{method} {f}");
        if status == 405 {
            let body: serde_json::Value = response.json().await.expect("json");
            assert_error_body(&body, "PGRST101");
            let message = body["message"].as_str().unwrap_or_default();
            assert_eq!(message.contains("GET"), allow.contains("GET"), "{message}");
        }
    }
    let response = request("OPTIONS", "/rest/v1/rpc/no_such_function")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 404);
    let response = request("POST", "/rest/v1/").send().await.expect("send");
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD, OPTIONS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_health() {
    let cluster = Cluster::start().await;
    let edge = Edge::start(&cluster, 1).await;
    assert_eq!(get(&edge, None, "/health").await.0, 200);
    assert_eq!(get(&edge, None, "/ready").await.0, 200);
    let (status, doc) = get(&edge, None, "/rest/v1/").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for f in ["whoami", "get_workspace", "update_workspace"] {
        let p = &paths[&format!("/rpc/{f}")];
        assert!(p["post"].is_object(), "{f}");
        let description = p["post"]["description"].as_str().unwrap_or_default();
        assert!(
            !description.is_empty(),
            "{f} has no description from COMMENT ON FUNCTION"
        );
    }
    assert!(
        paths["/rpc/get_workspace"]["get"].is_object(),
        "STABLE functions also get GET"
    );
    assert!(
        paths["/rpc/update_workspace"].get("get").is_none(),
        "VOLATILE ones do not"
    );
    // Internals are not published.
    assert!(!paths
        .keys()
        .any(|k| k.contains("begin_request") || k.contains("create_tenant")));
}
