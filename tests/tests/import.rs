//! The CSV import through the edge (issue 10, journey 1.7): a file with bad rows gets a
//! per-row report and writes nothing in a dry run and in an all-or-nothing run (400);
//! skip_bad_rows writes exactly the good rows; a reference to another workspace's
//! organization is "not found" and a recorded probe; files that cannot be read (bad
//! quoting, not UTF-8, a 10 MB line) are 400s naming the line, never 5xx; only admins
//! import; and the export's own CSV files import into a fresh workspace with every field
//! as it was.

use aura_tests::*;
use serde_json::{json, Value};

/// POST /rest/v1/import/{entity}{query} with a body: (status, body as JSON or text).
async fn import(
    edge: &Edge,
    token: Option<&str>,
    entity: &str,
    query: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = edge
        .client
        .post(format!("{}/rest/v1/import/{entity}{query}", edge.url))
        .header("content-type", "text/csv")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn call(edge: &Edge, token: &str, function: &str, body: Value) -> Value {
    let (status, _, reply) = rpc(edge, Some(token), function, &body.to_string()).await;
    assert_eq!(status, 200, "{function}: {reply}");
    reply
}

async fn count(admin: &tokio_postgres::Client, sql: &str, tenant: &str) -> i64 {
    admin
        .query_one(sql, &[&tenant])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

const CONTACTS_OF: &str = "SELECT count(*) FROM crm.contacts WHERE tenant_id = $1::text::uuid";

/// The report's errors as `line field code`.
fn errors(report: &Value) -> Vec<String> {
    report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["line"],
                e["field"].as_str().unwrap_or("?"),
                e["code"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_and_only_good_rows_written() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("imp", 2).await;
    let (admin_a, manager_a, admin_b) = (&members[0], &members[1], &members[3]);
    let a = admin_a.token();
    call(
        &edge,
        &a,
        "define_custom_field",
        json!({"entity": "contact", "key": "tier", "label": "Tier", "type": "select", "options": ["gold", "silver"]}),
    )
    .await;
    let org = call(&edge, &a, "create_organization", json!({"name": "Initech"})).await;
    let org_id = org["organization"]["id"].as_str().expect("id").to_owned();
    call(
        &edge,
        &a,
        "create_contact",
        json!({"first_name": "Olga", "email": "olga@imp.test"}),
    )
    .await;
    let foreign = call(
        &edge,
        &admin_b.token(),
        "create_organization",
        json!({"name": "Globex"}),
    )
    .await;
    let foreign_id = foreign["organization"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let before = count(&admin, CONTACTS_OF, &admin_a.tenant_id).await;
    let probes_before = count(
        &admin,
        "SELECT count(*) FROM core.security_events WHERE tenant_id = $1::text::uuid AND kind = 'cross_tenant_probe'",
        &admin_a.tenant_id,
    )
    .await;

    // Line 1 is the header; quoted fields may hold commas, quotes and line breaks.
    let file = format!(
        "first_name,last_name,email,organization_id,custom.tier,custom.shoe_size\r\n\
         Ada,\"Lovelace, Countess\",ada@imp.test,{org_id},gold,\r\n\
         Bob,,not-an-email,,,\r\n\
         Cy,,cy@imp.test,,,44\r\n\
         Ada,Again,ADA@imp.test,,,\r\n\
         Dee,,dee@imp.test,{foreign_id},,\r\n\
         Olga,,OLGA@imp.test,,silver,\r\n\
         \"Eve \"\"E\"\"\",\"two\nlines\",eve@imp.test,,,\r\n"
    );

    // A dry run: every row reported, nothing written.
    let (status, report) = import(&edge, Some(&a), "contacts", "?dry_run=true", file.clone()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["written"], false);
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        errors(&report),
        [
            "3 email 22023",
            "4 custom_fields.shoe_size 22023",
            "5 email 23505",
            "6 organization_id P0002",
            "8 last_name 22023",
        ],
        "{report}"
    );
    assert_eq!(report["duplicates"][0]["line"], 7);
    assert_eq!(report["duplicates"][0]["by"], "email");
    assert_eq!(report["duplicates"][0]["action"], "skipped");
    assert_eq!(count(&admin, CONTACTS_OF, &admin_a.tenant_id).await, before);

    // All or nothing (the default): 400 with the same report, nothing written.
    let (status, body) = import(&edge, Some(&a), "contacts", "", file.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "22023");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("5 of 7 rows")),
        "{body}"
    );
    assert_eq!(errors(&body["report"]), errors(&report));
    assert_eq!(count(&admin, CONTACTS_OF, &admin_a.tenant_id).await, before);

    // skip_bad_rows: exactly the good rows (Ada; Olga is a duplicate, skipped).
    let (status, report) = import(
        &edge,
        Some(&a),
        "contacts",
        "?mode=skip_bad_rows",
        file.clone(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["written"].clone(),
            report["created"].clone(),
            report["skipped"].clone(),
            report["failed"].clone()
        ),
        (json!(true), json!(1), json!(1), json!(5))
    );
    let rows = admin
        .query(
            "SELECT first_name, coalesce(last_name, ''), email, coalesce(organization_id::text, ''), custom_fields::text
               FROM crm.contacts WHERE tenant_id = $1::text::uuid ORDER BY email",
            &[&admin_a.tenant_id],
        )
        .await
        .expect("contacts");
    let got: Vec<Vec<String>> = rows
        .iter()
        .map(|r| (0..5).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    assert_eq!(
        got,
        [
            vec![
                "Ada",
                "Lovelace, Countess",
                "ada@imp.test",
                org_id.as_str(),
                r#"{"tier": "gold"}"#
            ],
            vec!["Olga", "", "olga@imp.test", "", "{}"],
        ]
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM core.audit_log WHERE tenant_id = $1::text::uuid AND action = 'data.imported'",
            &admin_a.tenant_id
        )
        .await,
        1,
        "audited once: the dry run and the refused run wrote nothing"
    );
    // The reference to workspace B's organization was a probe, recorded although the
    // all-or-nothing run rolled back (once per run that met it).
    admin
        .execute("SELECT crm_private.flush_events()", &[])
        .await
        .expect("flush");
    let probes = count(
        &admin,
        "SELECT count(*) FROM core.security_events WHERE tenant_id = $1::text::uuid AND kind = 'cross_tenant_probe'
            AND details ->> 'via' = 'import'",
        &admin_a.tenant_id,
    )
    .await;
    assert_eq!(probes - probes_before, 3);

    // Duplicates by email updated on request; the other workspace is untouched.
    let (status, report) = import(
        &edge,
        Some(&a),
        "contacts",
        "?on_duplicate=update",
        "email,last_name,custom.tier\nolga@imp.test,Ovens,silver\n",
    )
    .await;
    assert_eq!(
        (status, report["updated"].clone()),
        (200, json!(1)),
        "{report}"
    );
    let olga: (String, String) = admin
        .query_one(
            "SELECT last_name, custom_fields::text FROM crm.contacts WHERE tenant_id = $1::text::uuid AND email = 'olga@imp.test'",
            &[&admin_a.tenant_id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("olga");
    assert_eq!(
        olga,
        ("Ovens".to_owned(), r#"{"tier": "silver"}"#.to_owned())
    );
    assert_eq!(count(&admin, CONTACTS_OF, &admin_b.tenant_id).await, 0);

    // Who may import: admins only; a token is needed; POST only.
    let (status, body) = import(
        &edge,
        Some(&manager_a.token()),
        "contacts",
        "",
        "first_name\nMo\n",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_error_body(&body, "42501");
    let (status, _) = import(
        &edge,
        Some(&members[2].token()),
        "contacts",
        "",
        "first_name\nRi\n",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = import(&edge, None, "contacts", "", "first_name\nNo\n").await;
    assert_eq!(status, 401);
    let resp = edge
        .client
        .get(format!("{}/rest/v1/import/contacts", edge.url))
        .bearer_auth(&a)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "OPTIONS, POST");
    let (status, _) = import(&edge, Some(&a), "deals", "", "name\nX\n").await;
    assert_eq!(status, 404);

    // Requests that cannot be an import: 400s (415 for another media type), nothing written.
    let after = count(&admin, CONTACTS_OF, &admin_a.tenant_id).await;
    for (query, body, code) in [
        ("?mode=best_effort", "first_name\nX\n", "PGRST102"),
        ("?dry_run=maybe", "first_name\nX\n", "PGRST102"),
        ("?mapping=%7B", "first_name\nX\n", "PGRST102"),
        ("?limit=5", "first_name\nX\n", "PGRST102"),
        ("", "first_name,emial\nX,x@imp.test\n", "22023"),
        ("", "", "22P04"),
    ] {
        let (status, reply) = import(&edge, Some(&a), "contacts", query, body).await;
        assert_eq!(status, 400, "{query} {body:?}: {reply}");
        assert_eq!(reply["code"], code, "{query} {body:?}: {reply}");
    }
    let resp = edge
        .client
        .post(format!("{}/rest/v1/import/contacts", edge.url))
        .bearer_auth(&a)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 415);
    // Another file's columns, mapped.
    let (status, report) = import(
        &edge,
        Some(&a),
        "contacts",
        "?mapping=%7B%22Name%22%3A%22first_name%22%2C%22E-mail%22%3A%22email%22%2C%22Notes%22%3Anull%7D",
        "Name,E-mail,Notes\nMapped,mapped@imp.test,ignored\n",
    )
    .await;
    assert_eq!(
        (status, report["created"].clone()),
        (200, json!(1)),
        "{report}"
    );
    assert_eq!(
        count(&admin, CONTACTS_OF, &admin_a.tenant_id).await,
        after + 1
    );
    // The OpenAPI document describes the route.
    let (status, doc) = get(&edge, None, "/rest/v1/").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = doc["paths"]["/import/{entity}"]["post"]["parameters"]
        .as_array()
        .expect("the import's parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["entity", "dry_run", "mode", "on_duplicate", "mapping"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_files_get_a_400_naming_the_line() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("imq", 2).await;
    let a = members[0].token();
    let tenant = &members[0].tenant_id;
    let cases: Vec<(&str, Vec<u8>, &str, u64)> = vec![
        (
            "a quote inside an unquoted field",
            b"first_name,email\nAnn,ann@imq.test\nB\"ob,bob@imq.test\n".to_vec(),
            "22P04",
            3,
        ),
        (
            "text after a closing quote",
            b"first_name,email\n\"Ann\"x,ann@imq.test\n".to_vec(),
            "22P04",
            2,
        ),
        (
            "a quote never closed",
            b"first_name,email\nAnn,ann@imq.test\nBo,bo@imq.test\n\"Cy,cy@imq.test\nDi,di@imq.test\n".to_vec(),
            "22P04",
            4,
        ),
        (
            "Latin-1, not UTF-8",
            b"first_name,email\nAnn,ann@imq.test\nJos\xe9,jose@imq.test\n".to_vec(),
            "22021",
            3,
        ),
        (
            "a NUL byte",
            b"first_name,email\nAnn,ann@imq.test\n\"Bo\nb\0\",bo@imq.test\n".to_vec(),
            "22021",
            3,
        ),
        (
            "a 10 MB line",
            {
                let mut f = b"first_name,email\n".to_vec();
                f.extend(std::iter::repeat_n(b'x', 10 << 20));
                f.extend_from_slice(b",big@imq.test\n");
                f
            },
            "54000",
            2,
        ),
    ];
    for (what, body, code, line) in cases {
        let (status, reply) =
            import(&edge, Some(&a), "contacts", "?mode=skip_bad_rows", body).await;
        assert_eq!(status, 400, "{what}: {reply}");
        assert_error_body(&reply, code);
        assert_eq!(reply["details"], format!("line: {line}"), "{what}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("line {line}: "))),
            "{what}: {reply}"
        );
    }
    assert_eq!(
        count(&admin, CONTACTS_OF, tenant).await,
        0,
        "nothing written"
    );
    // The edge is fine afterwards.
    let (status, report) = import(&edge, Some(&a), "contacts", "", "first_name\nAnn\n").await;
    assert_eq!(
        (status, report["created"].clone()),
        (200, json!(1)),
        "{report}"
    );
}

/// The export's zip, as its files' raw text (read by Python's zipfile).
fn files_of_zip(archive: &[u8]) -> Value {
    python_on_file(
        r#"
import json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
json.dump({n: z.read(n).decode('utf-8') for n in z.namelist()}, sys.stdout)
"#,
        archive,
    )
}

/// Every importable field of a workspace's organizations and contacts, by id.
async fn records(admin: &tokio_postgres::Client, tenant: &str) -> Vec<String> {
    admin
        .query(
            "SELECT format('organization %s: %s', o.id, jsonb_build_array(o.name, o.industry, o.size, o.location, o.website,
                                                                           o.parent_id, o.custom_fields, o.deleted_at))
               FROM crm.organizations o WHERE o.tenant_id = $1::text::uuid
             UNION ALL
             SELECT format('contact %s: %s', c.id, jsonb_build_array(c.first_name, c.last_name, c.email, c.phone, c.title,
                                                                      c.organization_id, c.custom_fields, c.deleted_at))
               FROM crm.contacts c WHERE c.tenant_id = $1::text::uuid
             ORDER BY 1",
            &[&tenant],
        )
        .await
        .expect("records")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exports_csv_files_import_into_a_fresh_workspace_unchanged() {
    let Seeded {
        edge,
        members,
        admin,
        cluster,
    } = Seeded::start("imr", 2).await;
    let (admin_a, admin_b) = (&members[0], &members[3]);
    let (a, b) = (admin_a.token(), admin_b.token());
    // The same custom fields in both workspaces (definitions are not imported).
    for token in [&a, &b] {
        for def in [
            json!({"entity": "contact", "key": "tier", "label": "Tier", "type": "select", "options": ["gold", "=odd"]}),
            json!({"entity": "contact", "key": "vip", "label": "VIP", "type": "boolean"}),
            json!({"entity": "contact", "key": "score", "label": "Score", "type": "number"}),
            json!({"entity": "contact", "key": "since", "label": "Since", "type": "date"}),
            json!({"entity": "contact", "key": "note", "label": "Note", "type": "text"}),
            json!({"entity": "organization", "key": "region", "label": "Region", "type": "text"}),
        ] {
            call(&edge, token, "define_custom_field", def).await;
        }
    }
    let parent = call(
        &edge,
        &a,
        "create_organization",
        json!({"name": "Parent, Inc.", "industry": "Software", "size": "51-200", "location": "Zürich",
               "website": "https://parent.test/about?x=1", "custom_fields": {"region": "EMEA"}}),
    )
    .await;
    let parent_id = parent["organization"]["id"].clone();
    let child = call(
        &edge,
        &a,
        "create_organization",
        json!({"name": "\"Child\" Ltd", "parent_id": parent_id}),
    )
    .await;
    let child_id = child["organization"]["id"].clone();
    for contact in [
        json!({"first_name": "=HYPERLINK(\"http://evil.test\")", "last_name": "@SUM(A1)", "phone": "+1 555 0100",
               "title": "-2+3", "organization_id": parent_id,
               "custom_fields": {"tier": "=odd", "vip": true, "score": 12.5, "since": "2024-02-29", "note": "'=quoted"}}),
        json!({"first_name": "Zoë \"Z\"", "last_name": "Smith, Jr.", "email": "zoe@imr.test",
               "title": "Head of \"Things\", West", "organization_id": child_id,
               "custom_fields": {"vip": false, "score": -3, "note": "tab\tinside"}}),
        json!({"first_name": "Plain", "email": "plain@imr.test"}),
    ] {
        call(&edge, &a, "create_contact", contact).await;
    }
    let gone = call(
        &edge,
        &a,
        "create_contact",
        json!({"first_name": "Gone", "email": "gone@imr.test"}),
    )
    .await;
    call(
        &edge,
        &a,
        "delete_contact",
        json!({"id": gone["contact"]["id"]}),
    )
    .await;

    let nonce = reauthenticate(&edge, &cluster, &admin_a.email, &a).await;
    let resp = edge
        .client
        .get(format!(
            "{}/rest/v1/export?format=csv&nonce={nonce}",
            edge.url
        ))
        .bearer_auth(&a)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status().as_u16(), 200);
    let files = files_of_zip(&resp.bytes().await.expect("zip"));

    // Organizations first (contacts refer to them); B's members are not A's, so the
    // assignee column is left out and the importer becomes the owner.
    let (status, report) = import(
        &edge,
        Some(&b),
        "organizations",
        "",
        files["organizations.csv"]
            .as_str()
            .expect("organizations.csv")
            .to_owned(),
    )
    .await;
    assert_eq!(
        (status, report["created"].clone()),
        (200, json!(2)),
        "{report}"
    );
    let (status, report) = import(
        &edge,
        Some(&b),
        "contacts",
        "?mapping=%7B%22assigned_to%22%3Anull%7D",
        files["contacts.csv"]
            .as_str()
            .expect("contacts.csv")
            .to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["created"].clone(),
            report["skipped"].clone(),
            report["failed"].clone()
        ),
        (json!(4), json!(0), json!(0)),
        "the deleted contact comes back deleted: {report}"
    );
    let (in_a, in_b) = (
        records(&admin, &admin_a.tenant_id).await,
        records(&admin, &admin_b.tenant_id).await,
    );
    assert_eq!(in_a.len(), 6);
    assert_eq!(
        in_a, in_b,
        "every field of every record, ids and deletion times included"
    );

    // Importing the same files again finds every record by its id and skips it.
    let (status, report) = import(
        &edge,
        Some(&b),
        "contacts",
        "?mapping=%7B%22assigned_to%22%3Anull%7D",
        files["contacts.csv"]
            .as_str()
            .expect("contacts.csv")
            .to_owned(),
    )
    .await;
    assert_eq!(
        (status, report["skipped"].clone(), report["created"].clone()),
        (200, json!(4), json!(0)),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_streams_in() {
    let Seeded {
        edge,
        members,
        admin,
        cluster: _cluster,
    } = Seeded::start("ims", 2).await;
    let a = members[0].token();
    let rows = 10_000;
    let mut file = String::from("first_name,last_name,email,phone,title\r\n");
    for i in 0..rows {
        file.push_str(&format!(
            "First{i},Last{i},p{i}@ims.test,+1 555 {i:07},Buyer\r\n"
        ));
    }
    let bytes = file.len();
    // The edge reads it as the socket delivers it, in many chunks.
    let started = std::time::Instant::now();
    let (status, report) = import(&edge, Some(&a), "contacts", "", file).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["created"], rows);
    assert_eq!(
        count(&admin, CONTACTS_OF, &members[0].tenant_id).await,
        rows
    );
    println!(
        "imported {rows} contacts ({bytes} bytes) in {:.2} s (debug build: see make bench for the release figure)",
        took.as_secs_f64()
    );
}
