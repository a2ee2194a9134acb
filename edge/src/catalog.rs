//! The catalog of callable `api` functions, and the OpenAPI document made from it.
//!
//! The catalog is the only source of SQL identifiers and types the edge ever writes into a
//! statement: request keys merely *select* catalog arguments. It lists what the `authenticated`
//! role may EXECUTE in schema `api`, read from `pg_proc` as the authenticator, so the HTTP
//! surface follows the extension's grants and changes with an extension upgrade.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::error::Error;

/// One `api` function (one overload).
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    /// Input arguments (IN, INOUT, VARIADIC) in declaration order.
    pub args: Vec<Arg>,
    /// How many trailing arguments have defaults.
    pub n_defaults: usize,
    pub volatility: Volatility,
    pub returns_set: bool,
    /// `format_type` of the return type, e.g. `jsonb`, `void`, `crm.contacts`.
    pub return_type: String,
    /// `COMMENT ON FUNCTION`.
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Empty for an unnamed argument, which cannot be passed by name.
    pub name: String,
    /// `format_type` text, already valid SQL for a column definition list.
    pub type_sql: String,
    pub variadic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

impl Function {
    /// Arguments without defaults.
    pub fn required(&self) -> &[Arg] {
        &self.args[..self.args.len().saturating_sub(self.n_defaults)]
    }

    /// Whether this overload accepts exactly this set of argument names.
    fn accepts(&self, keys: &BTreeSet<String>) -> bool {
        keys.iter()
            .all(|k| self.args.iter().any(|a| !a.name.is_empty() && &a.name == k))
            && self.required().iter().all(|a| keys.contains(&a.name))
    }
}

/// The `api` functions by name.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    functions: BTreeMap<String, Vec<Function>>,
}

const CATALOG_SQL: &str = "\
SELECT p.proname::text,
       coalesce(p.proargnames, '{}'::text[]),
       coalesce(p.proargmodes::text[], '{}'::text[]),
       ARRAY(SELECT format_type(u.t, NULL)
               FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY AS u(t, i)
              ORDER BY u.i),
       p.pronargdefaults::int4,
       p.provolatile::text,
       p.proretset,
       format_type(p.prorettype, NULL),
       obj_description(p.oid, 'pg_proc')
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'api' AND p.prokind = 'f' AND NOT p.prosecdef
   AND has_function_privilege('authenticated', p.oid, 'EXECUTE')
 ORDER BY p.proname, p.pronargs, p.oid";

impl Catalog {
    pub fn new(functions: impl IntoIterator<Item = Function>) -> Catalog {
        let mut map: BTreeMap<String, Vec<Function>> = BTreeMap::new();
        for f in functions {
            map.entry(f.name.clone()).or_default().push(f);
        }
        Catalog { functions: map }
    }

    /// Reads the catalog through an (authenticator) connection.
    pub async fn load(client: &tokio_postgres::Client) -> Result<Catalog, tokio_postgres::Error> {
        let rows = client.query_typed(CATALOG_SQL, &[]).await?;
        let mut functions = Vec::with_capacity(rows.len());
        for row in rows {
            let names: Vec<String> = row.try_get(1)?;
            let modes: Vec<String> = row.try_get(2)?;
            let types: Vec<String> = row.try_get(3)?;
            let args = types
                .into_iter()
                .enumerate()
                .filter_map(|(i, type_sql)| {
                    let mode = modes.get(i).map(String::as_str).unwrap_or("i");
                    matches!(mode, "i" | "b" | "v").then(|| Arg {
                        name: names.get(i).cloned().unwrap_or_default(),
                        type_sql,
                        variadic: mode == "v",
                    })
                })
                .collect();
            let volatility = match row.try_get::<_, String>(5)?.as_str() {
                "i" => Volatility::Immutable,
                "s" => Volatility::Stable,
                _ => Volatility::Volatile,
            };
            functions.push(Function {
                name: row.try_get(0)?,
                args,
                n_defaults: usize::try_from(row.try_get::<_, i32>(4)?).unwrap_or(0),
                volatility,
                returns_set: row.try_get(6)?,
                return_type: row.try_get(7)?,
                description: row.try_get(8)?,
            });
        }
        Ok(Catalog::new(functions))
    }

    /// Every overload of `name` (none if there is no such function).
    pub fn overloads(&self, name: &str) -> &[Function] {
        self.functions.get(name).map_or(&[], Vec::as_slice)
    }

    /// The overload taking exactly these argument names (the one with fewest arguments if
    /// several do), or PostgREST's 404 `PGRST202`.
    pub fn resolve(&self, name: &str, keys: &BTreeSet<String>) -> Result<&Function, Error> {
        self.functions
            .get(name)
            .and_then(|overloads| {
                overloads
                    .iter()
                    .filter(|f| f.accepts(keys))
                    .min_by_key(|f| f.args.len())
            })
            .ok_or_else(|| Error::NoFunction {
                name: name.to_owned(),
                args: keys.iter().cloned().collect(),
            })
    }

    /// The OpenAPI 3.0.3 document for `GET /rest/v1/`. An overloaded name shows its first
    /// (fewest-argument) overload.
    pub fn openapi(&self) -> Value {
        let mut paths = Map::new();
        for (name, overloads) in &self.functions {
            let Some(f) = overloads.first() else { continue };
            let named: Vec<&Arg> = f.args.iter().filter(|a| !a.name.is_empty()).collect();
            let required: Vec<&str> = f.required().iter().map(|a| a.name.as_str()).collect();
            let properties: Map<String, Value> = named
                .iter()
                .map(|a| (a.name.clone(), json_schema(&a.type_sql)))
                .collect();
            let result = if f.returns_set {
                json!({"type": "array", "items": json_schema(&f.return_type)})
            } else {
                json_schema(&f.return_type)
            };
            let operation = |method_summary: &str| {
                let mut op = json!({
                    "operationId": format!("{method_summary}_{name}"),
                    "tags": ["rpc"],
                    "summary": f.description.as_deref().and_then(|d| d.lines().next()).unwrap_or(name),
                    "description": f.description,
                    "responses": responses(result.clone()),
                });
                if f.description.is_none() {
                    op.as_object_mut().map(|o| o.remove("description"));
                }
                op
            };
            let mut item = Map::new();
            let mut post = operation("post");
            post["requestBody"] = json!({
                "required": !required.is_empty(),
                "content": {"application/json": {"schema": {
                    "type": "object", "properties": properties, "required": required,
                }}}
            });
            if required.is_empty() {
                post["requestBody"]["content"]["application/json"]["schema"]
                    .as_object_mut()
                    .map(|o| o.remove("required"));
            }
            item.insert("post".to_owned(), post);
            if f.volatility != Volatility::Volatile {
                let mut get = operation("get");
                get["parameters"] = named
                    .iter()
                    .map(|a| {
                        json!({"name": a.name, "in": "query", "required": required.contains(&a.name.as_str()),
                               "schema": json_schema(&a.type_sql)})
                    })
                    .collect();
                item.insert("get".to_owned(), get);
            }
            paths.insert(format!("/rpc/{name}"), Value::Object(item));
        }
        paths.insert("/export".to_owned(), export_path());
        paths.insert("/import/{entity}".to_owned(), import_path());
        json!({
            "openapi": "3.0.3",
            "info": {
                "title": "Aura CRM API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Remote procedure calls into the `api` schema, PostgREST-style. \
                                POST takes a JSON object of named arguments; GET (read-only functions) takes query parameters.",
            },
            "servers": [{"url": "/rest/v1"}],
            "security": [{"bearerAuth": []}],
            "paths": paths,
            "components": {
                "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
                "schemas": {"Error": {
                    "type": "object",
                    "required": ["code", "message", "details", "hint"],
                    "properties": {
                        "code": {"type": "string", "description": "SQLSTATE or PGRSTnnn"},
                        "message": {"type": "string"},
                        "details": {"type": "string", "nullable": true},
                        "hint": {"type": "string", "nullable": true},
                    },
                }},
            },
        })
    }
}

/// `GET /rest/v1/export` (see `crate::export`), beside the RPC calls.
fn export_path() -> Value {
    let mut responses = responses(json!({}));
    responses["200"] = json!({
        "description": "The workspace's data, streamed: NDJSON (one {entity, data} line per row between an `export` line and an `export_end` line with the row counts) or a zip of one CSV file per entity (RFC 4180, UTF-8 with BOM, custom fields as custom.<key> columns, cells that a spreadsheet would run as formulas prefixed with ') and a manifest.json with the row counts",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    });
    json!({"get": {
        "operationId": "export",
        "tags": ["data"],
        "summary": "Export the whole workspace (admins; needs a reauthentication nonce)",
        "description": "Organizations, contacts, deals, stage history, reassignments, activities, custom field definitions, pipeline stages, invitations, the audit log, security and access events, and members, as row-level security shows them to the caller, from one snapshot. Needs the data.export permission (admins) and a fresh nonce from POST /auth/v1/reauthenticate (403 otherwise). Audited (data.exported) and recorded in the access log.",
        "parameters": [
            {"name": "format", "in": "query", "required": false,
             "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"}},
            {"name": "nonce", "in": "query", "required": true, "schema": {"type": "string"},
             "description": "The one-time code POST /auth/v1/reauthenticate emailed"},
        ],
        "responses": responses,
    }})
}

/// `POST /rest/v1/import/{contacts|organizations}` (see `crate::import`).
fn import_path() -> Value {
    let report = json!({
        "type": "object",
        "properties": {
            "entity": {"type": "string"},
            "dry_run": {"type": "boolean"},
            "mode": {"type": "string"},
            "on_duplicate": {"type": "string"},
            "written": {"type": "boolean", "description": "Whether the rows were written (false in a dry run, and when all_or_nothing met an error)"},
            "rows": {"type": "integer"},
            "created": {"type": "integer"},
            "updated": {"type": "integer"},
            "skipped": {"type": "integer", "description": "Duplicates skipped, and rows deleted in the source"},
            "failed": {"type": "integer"},
            "errors": {"type": "array", "description": "The first 1,000 rows with an error",
                       "items": {"type": "object", "properties": {
                           "line": {"type": "integer"}, "field": {"type": "string"},
                           "code": {"type": "string", "description": "22023 invalid, 23505 duplicate, P0002 not found"},
                           "message": {"type": "string"}}}},
            "errors_truncated": {"type": "boolean"},
            "duplicates": {"type": "array", "description": "Rows that matched an existing record (the first 1,000)",
                           "items": {"type": "object", "properties": {
                               "line": {"type": "integer"}, "existing_id": {"type": "string", "format": "uuid"},
                               "by": {"type": "string", "enum": ["id", "email", "name"]},
                               "action": {"type": "string", "enum": ["skipped", "update", "create", "error"]}}}},
        },
    });
    let mut responses = responses(report.clone());
    responses["200"]["description"] =
        json!("The import's report: what was (or in a dry run would be) created, updated and skipped, and every row's error");
    responses["400"]["description"] = json!(
        "A file that cannot be read (22P04 bad CSV, 22021 not UTF-8 or a NUL byte, 54000 a record over 1 MiB; the message and details name the line), an unknown column or option (22023), or an all_or_nothing import with rows in error (22023; nothing written; `report` holds the report)"
    );
    responses["413"] = json!({"description": "The file is larger than AURA_IMPORT_MAX_BYTES",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    responses["415"] = json!({"description": "The body is not sent as text/csv",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({"post": {
        "operationId": "import",
        "tags": ["data"],
        "summary": "Import contacts or organizations from a CSV file (admins)",
        "description": "The body is a CSV file (RFC 4180, UTF-8, a header line naming the columns), streamed into the database and checked with every rule of the live records: field formats, custom fields (custom.<key> columns, or a custom_fields JSON column), email unique per workspace, references to this workspace's organizations and active members, no parent cycles. The export's own CSV files import as they are: id keeps the record's id, deleted_at brings a record deleted in the source back deleted, bookkeeping columns are left to the database. Duplicates are matched by id, else by email (contacts) or name (organizations). Needs the data.import and records.read_all permissions (admins; deals.assign for an assigned_to column). Audited (data.imported).",
        "parameters": [
            {"name": "entity", "in": "path", "required": true,
             "schema": {"type": "string", "enum": ["contacts", "organizations"]}},
            {"name": "dry_run", "in": "query", "required": false, "schema": {"type": "boolean", "default": false},
             "description": "Check and report, write nothing"},
            {"name": "mode", "in": "query", "required": false,
             "schema": {"type": "string", "enum": ["all_or_nothing", "skip_bad_rows"], "default": "all_or_nothing"}},
            {"name": "on_duplicate", "in": "query", "required": false,
             "schema": {"type": "string", "enum": ["skip", "update", "create"], "default": "skip"},
             "description": "A row matching an existing record: skip it, update the record with the row's non-empty cells, or create it anyway (refused for a taken id or email)"},
            {"name": "mapping", "in": "query", "required": false,
             "schema": {"type": "string"},
             "description": "A JSON object of the file's column names to field names (or null to leave a column out), e.g. {\"E-mail\": \"email\", \"Notes\": null}"},
        ],
        "requestBody": {"required": true, "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": responses,
    }})
}

fn responses(result: Value) -> Value {
    let error = |description: &str| {
        json!({"description": description,
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    let rate_headers = json!({
        "RateLimit-Limit": {"description": "Requests allowed per user and minute", "schema": {"type": "integer"}},
        "RateLimit-Remaining": {"description": "Requests left in this minute", "schema": {"type": "integer"}},
        "RateLimit-Reset": {"description": "Seconds until the minute ends", "schema": {"type": "integer"}},
    });
    let mut limited = error(
        "Too many requests: the user's rate limit for this minute (53400), or the workspace's share of the database connections (53300); retry after the Retry-After delay",
    );
    limited["headers"] = rate_headers.clone();
    limited["headers"]["Retry-After"] =
        json!({"description": "Seconds to wait", "schema": {"type": "integer"}});
    json!({
        "200": {"description": "The function's result", "headers": rate_headers,
                "content": {"application/json": {"schema": result}}},
        "400": error("Bad request: malformed body or invalid argument value"),
        "401": error("Missing, expired or invalid token"),
        "403": error("Not allowed (no active membership of the tenant, or a permission rule)"),
        "404": error("No such function or argument names, or a record was not found"),
        "405": error("Method not allowed"),
        "409": error("Conflict with existing data"),
        "429": limited,
        "500": error("Internal server error"),
        "503": error("Database unavailable; retry after the Retry-After delay"),
    })
}

/// JSON schema of a PostgreSQL type given as `format_type` text. Types without a JSON
/// counterpart (composites, enums, domains) get only `format`, the PostgreSQL type name.
pub fn json_schema(pg_type: &str) -> Value {
    if let Some(element) = pg_type.strip_suffix("[]") {
        return json!({"type": "array", "items": json_schema(element)});
    }
    let base = pg_type.split('(').next().unwrap_or(pg_type).trim();
    match base {
        "text" | "character varying" | "character" | "name" | "citext" | "bpchar" => {
            json!({"type": "string"})
        }
        "uuid" => json!({"type": "string", "format": "uuid"}),
        "smallint" => json!({"type": "integer", "format": "int16"}),
        "integer" => json!({"type": "integer", "format": "int32"}),
        "bigint" => json!({"type": "integer", "format": "int64"}),
        "numeric" => json!({"type": "number"}),
        "real" => json!({"type": "number", "format": "float"}),
        "double precision" => json!({"type": "number", "format": "double"}),
        "boolean" => json!({"type": "boolean"}),
        "json" | "jsonb" => json!({}),
        "timestamp with time zone" => json!({"type": "string", "format": "date-time"}),
        "date" => json!({"type": "string", "format": "date"}),
        "timestamp without time zone"
        | "time without time zone"
        | "time with time zone"
        | "interval" => {
            json!({"type": "string", "format": base})
        }
        "void" => json!({"nullable": true}),
        other => json!({"format": other}),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn function(
        name: &str,
        args: &[(&str, &str)],
        n_defaults: usize,
        volatility: Volatility,
    ) -> Function {
        Function {
            name: name.to_owned(),
            args: args
                .iter()
                .map(|(n, t)| Arg {
                    name: (*n).to_owned(),
                    type_sql: (*t).to_owned(),
                    variadic: false,
                })
                .collect(),
            n_defaults,
            volatility,
            returns_set: false,
            return_type: "jsonb".to_owned(),
            description: Some("Lists contacts.\nKeyset paged.".to_owned()),
        }
    }

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn type_mapping() {
        assert_eq!(json_schema("text"), json!({"type": "string"}));
        assert_eq!(
            json_schema("character varying(80)"),
            json!({"type": "string"})
        );
        assert_eq!(
            json_schema("uuid"),
            json!({"type": "string", "format": "uuid"})
        );
        assert_eq!(json_schema("bigint")["type"], "integer");
        assert_eq!(json_schema("integer")["type"], "integer");
        assert_eq!(json_schema("numeric")["type"], "number");
        assert_eq!(json_schema("double precision")["type"], "number");
        assert_eq!(json_schema("boolean"), json!({"type": "boolean"}));
        assert_eq!(json_schema("jsonb"), json!({}));
        assert_eq!(
            json_schema("timestamp with time zone"),
            json!({"type": "string", "format": "date-time"})
        );
        assert_eq!(
            json_schema("date"),
            json!({"type": "string", "format": "date"})
        );
        assert_eq!(
            json_schema("uuid[]"),
            json!({"type": "array", "items": {"type": "string", "format": "uuid"}})
        );
        assert_eq!(
            json_schema("crm.deal_stage"),
            json!({"format": "crm.deal_stage"})
        );
    }

    #[test]
    fn overload_resolution() {
        let catalog = Catalog::new([
            function(
                "list_contacts",
                &[("page_size", "integer"), ("cursor", "text")],
                2,
                Volatility::Stable,
            ),
            function("get_contact", &[("id", "uuid")], 0, Volatility::Stable),
            function(
                "get_contact",
                &[("id", "uuid"), ("with_deals", "boolean")],
                0,
                Volatility::Stable,
            ),
        ]);
        assert!(catalog.resolve("list_contacts", &keys(&[])).is_ok());
        assert!(catalog.resolve("list_contacts", &keys(&["cursor"])).is_ok());
        assert!(matches!(
            catalog.resolve("list_contacts", &keys(&["bogus"])),
            Err(Error::NoFunction { .. })
        ));
        assert!(matches!(
            catalog.resolve("get_contact", &keys(&[])),
            Err(Error::NoFunction { .. })
        ));
        assert_eq!(
            catalog
                .resolve("get_contact", &keys(&["id"]))
                .map(|f| f.args.len())
                .ok(),
            Some(1)
        );
        assert_eq!(
            catalog
                .resolve("get_contact", &keys(&["id", "with_deals"]))
                .map(|f| f.args.len())
                .ok(),
            Some(2)
        );
        assert!(matches!(
            catalog.resolve("nope", &keys(&[])),
            Err(Error::NoFunction { .. })
        ));
    }

    #[test]
    fn openapi_document() {
        let catalog = Catalog::new([
            function(
                "list_contacts",
                &[("page_size", "integer"), ("cursor", "text")],
                2,
                Volatility::Stable,
            ),
            function(
                "create_contact",
                &[("email", "text"), ("org_id", "uuid")],
                1,
                Volatility::Volatile,
            ),
        ]);
        let doc = catalog.openapi();
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(doc["info"]["title"], "Aura CRM API");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        let create = &doc["paths"]["/rpc/create_contact"];
        assert!(create.get("get").is_none());
        let schema = &create["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(schema["required"], json!(["email"]));
        assert_eq!(schema["properties"]["org_id"]["format"], "uuid");
        assert_eq!(
            create["post"]["description"],
            "Lists contacts.\nKeyset paged."
        );
        assert_eq!(
            create["post"]["responses"]["403"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        let limited = &create["post"]["responses"]["429"];
        assert!(limited["headers"]["Retry-After"].is_object());
        assert!(create["post"]["responses"]["200"]["headers"]["RateLimit-Remaining"].is_object());
        let list = &doc["paths"]["/rpc/list_contacts"];
        assert_eq!(list["get"]["parameters"][0]["name"], "page_size");
        assert_eq!(list["get"]["parameters"][0]["schema"]["type"], "integer");
    }
}
