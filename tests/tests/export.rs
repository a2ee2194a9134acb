//! The workspace export through the edge (issue 10, NFR-D2): `GET /rest/v1/export` as an
//! admin with a reauthentication nonce gives every row of the workspace and none of
//! another, as NDJSON or as a zip of CSV files (read back here by Python's zipfile and csv
//! modules, so the format is checked by an implementation that is not ours), with formula
//! cells neutralised; without a nonce, with a used one, or as a manager: 403; audited.

use aura_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// GET /rest/v1/export with a query string: (status, content type, body bytes).
async fn export(edge: &Edge, token: Option<&str>, query: &str) -> (u16, String, Vec<u8>) {
    let mut req = edge
        .client
        .get(format!("{}/rest/v1/export{query}", edge.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        resp.bytes().await.expect("body").to_vec(),
    )
}

/// Whether an export carried `got` rows of `entity` where the DBA counted `expected` just
/// before: exactly, but for the export's own traces. Its audit entry is committed before
/// its snapshot, so it is in it; its access event reaches the table through the event
/// queue, before or after the snapshot.
fn carried(entity: &str, expected: i64, got: i64) -> bool {
    match entity {
        "audit_log" => got == expected + 1,
        "access_events" => got == expected || got == expected + 1,
        _ => got == expected,
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

/// Rows per exported table of a tenant, counted by the DBA just before an export (with the
/// event queue flushed into its tables): what the export must carry.
async fn table_counts(admin: &tokio_postgres::Client, tenant: &str) -> BTreeMap<String, i64> {
    admin
        .execute("SELECT crm_private.flush_events()", &[])
        .await
        .expect("flush events");
    let mut counts = BTreeMap::new();
    for (entity, table) in [
        ("organizations", "crm.organizations"),
        ("contacts", "crm.contacts"),
        ("deals", "crm.deals"),
        ("deal_stage_changes", "crm.deal_stage_changes"),
        ("assignment_changes", "crm.assignment_changes"),
        ("activities", "crm.activities"),
        ("custom_fields", "core.custom_fields"),
        ("pipeline_stages", "crm.pipeline_stages"),
        ("invitations", "core.invitations"),
        ("audit_log", "core.audit_log"),
        ("security_events", "core.security_events"),
        ("access_events", "core.access_events"),
        ("members", "core.memberships"),
    ] {
        let n: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1::text::uuid"),
                &[&tenant],
            )
            .await
            .expect("count")
            .get(0);
        counts.insert(entity.to_owned(), n);
    }
    counts
}

/// The zip's files through Python: CSV files as lists of records, other files as text.
fn unzip_with_python(archive: &[u8]) -> Value {
    python_on_file(
        r#"
import csv, io, json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
bad = z.testzip()
assert bad is None, bad
out = {}
for name in z.namelist():
    data = z.read(name)
    if name.endswith('.csv'):
        assert data.startswith(b'\xef\xbb\xbf'), name
        text = data.decode('utf-8-sig')
        out[name] = list(csv.reader(io.StringIO(text, newline=''), strict=True))
    else:
        out[name] = data.decode('utf-8')
json.dump(out, sys.stdout)
"#,
        archive,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_export_their_whole_workspace_and_nothing_else() {
    let Seeded {
        edge,
        members,
        admin,
        cluster,
    } = Seeded::start("exp", 2).await;
    let (admin_a, manager_a, admin_b) = (&members[0], &members[1], &members[3]);
    let a = admin_a.token();

    // Workspace A: an organization, a custom field, contacts (one whose values a
    // spreadsheet would run as formulas, one with a comma, quotes and a line break), a
    // deal moved once, an activity, a pending invitation. Workspace B: one contact.
    let call = |token: String, function: &'static str, body: Value| {
        let edge = &edge;
        async move {
            let (status, _, reply) = rpc(edge, Some(&token), function, &body.to_string()).await;
            assert_eq!(status, 200, "{function}: {reply}");
            reply
        }
    };
    let org = call(a.clone(), "create_organization", json!({"name": "Initech"})).await;
    call(
        a.clone(),
        "define_custom_field",
        json!({"entity": "contact", "key": "tier", "label": "Tier", "type": "text"}),
    )
    .await;
    let formula = call(
        a.clone(),
        "create_contact",
        json!({"first_name": "=HYPERLINK(\"http://evil.test\")", "last_name": "@SUM(A1)",
               "phone": "+1 555 0100", "title": "-2+3", "organization_id": org["id"],
               "custom_fields": {"tier": "=1+1"}}),
    )
    .await;
    let quoted = call(
        a.clone(),
        "create_contact",
        json!({"first_name": "Zoë \"Z\"", "last_name": "Smith, Jr.", "title": "Head of \"Things\", West",
               "email": "zoe@initech.test"}),
    )
    .await;
    let deal = call(
        a.clone(),
        "create_deal",
        json!({"name": "TPS reports", "amount": "1234567890123.45", "contact_id": quoted["contact"]["id"]}),
    )
    .await;
    call(
        a.clone(),
        "move_deal",
        json!({"id": deal["id"], "stage": "qualified"}),
    )
    .await;
    call(
        a.clone(),
        "log_activity",
        json!({"type": "note", "description": "Met at the fair,\nsaid \"call me\"", "contact_id": quoted["contact"]["id"]}),
    )
    .await;
    call(
        a.clone(),
        "invite_user",
        json!({"email": "new@exp-a.test", "role": "rep"}),
    )
    .await;
    call(
        admin_b.token(),
        "create_contact",
        json!({"first_name": "Bea", "email": "bea@exp-b.test"}),
    )
    .await;

    // Refusals: no token, no nonce, a wrong one, a bad format, a manager with a nonce.
    let (status, _, body) = export(&edge, None, "?format=json&nonce=123456").await;
    assert_eq!(status, 401, "{}", json_of(&body));
    let (status, _, body) = export(&edge, Some(&a), "?format=json").await;
    assert_eq!(status, 403, "{}", json_of(&body));
    assert_error_body(&json_of(&body), "42501");
    let (status, _, body) = export(&edge, Some(&a), "?format=json&nonce=000000").await;
    assert_eq!(status, 403, "{}", json_of(&body));
    let (status, _, body) = export(&edge, Some(&a), "?format=xml&nonce=000000").await;
    assert_eq!(status, 400, "{}", json_of(&body));
    let nonce = reauthenticate(&edge, &cluster, &manager_a.email, &manager_a.token()).await;
    let (status, _, body) = export(
        &edge,
        Some(&manager_a.token()),
        &format!("?format=json&nonce={nonce}"),
    )
    .await;
    assert_eq!(status, 403, "{}", json_of(&body));
    let (status, _, _) = export(&edge, Some(&a), "").await;
    assert_eq!(status, 403, "no nonce, json by default");
    let resp = edge
        .client
        .post(format!("{}/rest/v1/export", edge.url))
        .bearer_auth(&a)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "GET, OPTIONS");

    // NDJSON: a header line, one line per row, an end line with the counts, which match
    // the database's own count of every exported table; nothing of workspace B.
    let expected = table_counts(&admin, &admin_a.tenant_id).await;
    let nonce = reauthenticate(&edge, &cluster, &admin_a.email, &a).await;
    let (status, content_type, body) =
        export(&edge, Some(&a), &format!("?format=json&nonce={nonce}")).await;
    assert_eq!(status, 200, "{}", json_of(&body));
    assert_eq!(content_type, "application/x-ndjson");
    let text = String::from_utf8(body).expect("utf-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines[0]["entity"], "export");
    assert_eq!(lines[0]["data"]["tenant_id"], admin_a.tenant_id.as_str());
    let end = lines.last().expect("lines");
    assert_eq!(end["entity"], "export_end");
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    for line in &lines[1..lines.len() - 1] {
        *seen
            .entry(line["entity"].as_str().expect("entity").to_owned())
            .or_default() += 1;
        if line["entity"] != "members" {
            assert_eq!(
                line["data"]["tenant_id"],
                admin_a.tenant_id.as_str(),
                "{line}"
            );
        }
    }
    for (entity, n) in &expected {
        let got = seen.get(entity).copied().unwrap_or(0);
        assert!(
            carried(entity, *n, got),
            "{entity}: {got} rows, {n} in the database"
        );
        assert_eq!(
            end["data"]["rows"][entity], got,
            "end line's count of {entity}"
        );
    }
    assert!(
        expected["contacts"] == 2
            && expected["deal_stage_changes"] == 2
            && expected["invitations"] == 1
    );
    assert!(!text.contains(&admin_b.tenant_id) && !text.contains("bea@exp-b.test"));
    let contact = lines
        .iter()
        .find(|l| l["entity"] == "contacts" && l["data"]["id"] == formula["contact"]["id"])
        .expect("the formula contact");
    assert_eq!(
        contact["data"]["custom_fields"]["tier"], "=1+1",
        "JSON keeps values as they are"
    );
    assert!(lines
        .iter()
        .any(|l| l["entity"] == "members" && l["data"]["email"] == admin_a.email.as_str()));

    // The nonce was used up; the export was audited.
    let (status, _, _) = export(&edge, Some(&a), &format!("?format=json&nonce={nonce}")).await;
    assert_eq!(status, 403, "a nonce is good for one export");
    let audited: i64 = admin
        .query_one(
            "SELECT count(*) FROM core.audit_log WHERE tenant_id = $1::text::uuid AND action = 'data.exported'
                AND actor_id = $2::text::uuid AND changes = '{\"after\": {\"format\": \"json\"}}'",
            &[&admin_a.tenant_id, &admin_a.user_id],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(audited, 1);

    // CSV: a zip of one file per entity and a manifest, as Python reads them.
    let nonce = reauthenticate(&edge, &cluster, &admin_a.email, &a).await;
    let expected = table_counts(&admin, &admin_a.tenant_id).await;
    let (status, content_type, body) =
        export(&edge, Some(&a), &format!("?format=csv&nonce={nonce}")).await;
    assert_eq!(status, 200, "{}", json_of(&body));
    assert_eq!(content_type, "application/zip");
    let files = unzip_with_python(&body);
    let manifest: Value =
        serde_json::from_str(files["manifest.json"].as_str().expect("manifest")).expect("json");
    for (entity, n) in &expected {
        let records = files[format!("{entity}.csv")]
            .as_array()
            .expect("a csv file");
        let got = records.len() as i64 - 1;
        assert!(
            carried(entity, *n, got),
            "{entity}.csv: {got} records, {n} rows in the database: {records:?}"
        );
        assert_eq!(manifest["rows"][entity], got);
    }
    let contacts = files["contacts.csv"].as_array().expect("contacts.csv");
    let header: Vec<&str> = contacts[0]
        .as_array()
        .expect("header")
        .iter()
        .map(|c| c.as_str().expect("text"))
        .collect();
    assert!(
        header.contains(&"custom.tier") && !header.contains(&"custom_fields"),
        "{header:?}"
    );
    let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let row_of = |id: &Value| {
        contacts
            .iter()
            .find(|r| r[column("id")] == *id)
            .unwrap_or_else(|| panic!("no row {id}"))
            .clone()
    };
    let row = row_of(&formula["contact"]["id"]);
    assert_eq!(
        row[column("first_name")],
        "'=HYPERLINK(\"http://evil.test\")"
    );
    assert_eq!(row[column("last_name")], "'@SUM(A1)");
    assert_eq!(row[column("phone")], "'+1 555 0100");
    assert_eq!(row[column("title")], "'-2+3");
    assert_eq!(row[column("custom.tier")], "'=1+1");
    let row = row_of(&quoted["contact"]["id"]);
    assert_eq!(row[column("first_name")], "Zoë \"Z\"");
    assert_eq!(row[column("last_name")], "Smith, Jr.");
    assert_eq!(row[column("title")], "Head of \"Things\", West");
    assert_eq!(row[column("deleted_at")], "");
    let activities = files["activities.csv"].as_array().expect("activities.csv");
    assert!(
        activities.iter().any(|r| r
            .as_array()
            .expect("record")
            .iter()
            .any(|c| c == "Met at the fair,\nsaid \"call me\"")),
        "a multi-line cell survives: {activities:?}"
    );
    let deals = files["deals.csv"].as_array().expect("deals.csv");
    let amount = deals[0]
        .as_array()
        .expect("header")
        .iter()
        .position(|h| h == "amount")
        .expect("amount");
    assert_eq!(
        deals[1][amount], "1234567890123.45",
        "numbers exactly as stored"
    );
    for (name, records) in files.as_object().expect("files") {
        if let Some(records) = records.as_array() {
            for record in records {
                let line = record.to_string();
                assert!(
                    !line.contains(&admin_b.tenant_id) && !line.contains("bea@exp-b.test"),
                    "{name}: {line}"
                );
                for cell in record.as_array().expect("cells") {
                    let first = cell.as_str().and_then(|c| c.chars().next());
                    assert!(
                        !matches!(first, Some('=' | '+' | '-' | '@' | '\t' | '\r')),
                        "{name}: a cell a spreadsheet would run: {cell}"
                    );
                }
            }
        }
    }
}
