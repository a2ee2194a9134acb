//! `GET /rest/v1/export?format=json|csv&nonce=…`: the whole workspace, streamed from the
//! database to the client (NFR-D2).
//!
//! pg_crm decides what an export is: `crm_private.export_begin` checks `data.export` and
//! the reauthentication nonce, audits the export in its own committed transaction, and
//! answers with one query per entity. The edge then runs those queries in one read-only
//! repeatable-read snapshot in the caller's tenant context (the gate again, so row-level
//! security decides what leaves) and turns rows into bytes as they arrive:
//!
//! - `json`: NDJSON, one `{"entity": …, "data": {…}}` line per row, between an `export`
//!   line (tenant, time, entities) and an `export_end` line with the row counts, so a
//!   reader can tell a complete file from a cut one;
//! - `csv`: a zip of one CSV file per entity (see [`crate::csv`]: RFC 4180, UTF-8 with a
//!   byte order mark, formula cells neutralised; custom fields as `custom.<key>` columns)
//!   and a `manifest.json` with the row counts, written front to back ([`crate::zip`]).
//!
//! Memory stays flat whatever the size: a producer task fills 64 KiB chunks into a channel
//! of four, and the response body takes them at the client's pace; while the channel is
//! full the producer waits, and while it waits it reads no rows, so tokio-postgres stops
//! reading the socket and the server waits too. A client that goes away drops the channel;
//! the producer stops and its connection is cancelled, rolled back and closed. A failure
//! after the first byte cannot become an error status any more: the body ends early and
//! the missing `export_end` line or zip directory shows it.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::csv;
use crate::db::{Database, ExportConnection};
use crate::error::Error;
use crate::jwt::Verified;
use crate::zip::ZipWriter;

/// The size of the chunks handed to the response body.
const CHUNK: usize = 64 * 1024;
/// How many chunks may wait for the client.
const CHANNEL: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

/// The query string of an export request.
#[derive(Debug, PartialEq, Eq)]
pub struct Params {
    pub format: Format,
    pub nonce: Option<String>,
}

impl Params {
    /// `format` (json, the default, or csv) and `nonce`; anything else is a 400.
    pub fn from_query(pairs: Vec<(String, String)>) -> Result<Params, Error> {
        let mut params = Params {
            format: Format::Json,
            nonce: None,
        };
        for (key, value) in crate::rpc::distinct_query(pairs)? {
            match key.as_str() {
                "format" => {
                    params.format = match value.as_str() {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        _ => {
                            return Err(Error::BadRequest("format must be json or csv".to_owned()))
                        }
                    }
                }
                "nonce" => params.nonce = Some(value),
                other => {
                    return Err(Error::BadRequest(format!(
                        "Unknown query parameter {} (the export takes format and nonce)",
                        crate::error::cut(other, 63)
                    )))
                }
            }
        }
        Ok(params)
    }
}

/// What `crm_private.export_begin` answers.
#[derive(Debug, Deserialize)]
struct Plan {
    tenant_id: String,
    exported_at: String,
    entities: Vec<EntityPlan>,
}

#[derive(Debug, Deserialize)]
struct EntityPlan {
    entity: String,
    /// The CSV file's columns; `custom.<key>` reads the row's `custom_fields`.
    columns: Vec<String>,
    /// Yields one JSON object per row, as text.
    query: String,
}

/// Starts the export: errors up to the plan (no permission, no nonce, 429, 503) are the
/// response; after it, the response is 200 and the body streams.
pub async fn respond(db: &Database, who: &Verified, params: Params) -> Result<Response, Error> {
    let (plan, connection) = db
        .begin_export(who, params.format.as_str(), params.nonce.as_deref())
        .await?;
    let plan: Plan = serde_json::from_value(plan)
        .map_err(|e| Error::Internal(format!("the export plan is not what the edge reads: {e}")))?;
    let (content_type, extension) = match params.format {
        Format::Json => ("application/x-ndjson", "ndjson"),
        Format::Csv => ("application/zip", "zip"),
    };
    let day: String = plan.exported_at.chars().take(10).collect();
    let filename = format!("aura-export-{}-{day}.{extension}", plan.tenant_id);
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(produce(connection, plan, params.format, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Why the producer stopped early.
enum Stop {
    /// The response body was dropped: nobody is reading.
    ClientGone,
    /// A query, a row or the archive failed (logged; the body ends early).
    Failed(String),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e.to_string())
    }
}
impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Stop {
        Stop::from(Error::from(e))
    }
}
impl From<crate::zip::ZipError> for Stop {
    fn from(e: crate::zip::ZipError) -> Stop {
        Stop::Failed(e.to_string())
    }
}
impl From<serde_json::Error> for Stop {
    fn from(e: serde_json::Error) -> Stop {
        Stop::Failed(format!("a row is not a JSON object: {e}"))
    }
}

type Chunk = Result<Bytes, std::io::Error>;

/// The bytes on their way to the response body.
struct Out {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl Out {
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.send(Ok(chunk)).await.map_err(|_| Stop::ClientGone)
    }

    async fn flush_if_full(&mut self) -> Result<(), Stop> {
        if self.buf.len() >= CHUNK {
            self.flush().await
        } else {
            Ok(())
        }
    }
}

async fn produce(
    connection: ExportConnection,
    plan: Plan,
    format: Format,
    tx: mpsc::Sender<Chunk>,
) {
    let mut out = Out {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    let written = match format {
        Format::Json => write_ndjson(&connection, &plan, &mut out).await,
        Format::Csv => write_zip(&connection, &plan, &mut out).await,
    };
    match written {
        Ok(()) => {
            if let Err(e) = connection.finish().await {
                tracing::warn!(error = %e, "export: the snapshot did not end cleanly");
            }
        }
        // Dropping the connection cancels the query and closes it (see db::InFlight).
        Err(Stop::ClientGone) => {
            tracing::info!(tenant_id = %plan.tenant_id, "export: the client went away");
        }
        Err(Stop::Failed(error)) => {
            tracing::error!(tenant_id = %plan.tenant_id, error = %error, "export failed after its first byte");
            let _ = out
                .tx
                .send(Err(std::io::Error::other("the export failed")))
                .await;
        }
    }
}

async fn write_ndjson(
    connection: &ExportConnection,
    plan: &Plan,
    out: &mut Out,
) -> Result<(), Stop> {
    let names: Vec<&str> = plan.entities.iter().map(|e| e.entity.as_str()).collect();
    let header = json!({"entity": "export", "data": {
        "tenant_id": plan.tenant_id, "exported_at": plan.exported_at, "format": "json", "entities": names,
    }});
    out.buf.extend_from_slice(header.to_string().as_bytes());
    out.buf.push(b'\n');
    out.flush().await?;
    connection.open_snapshot().await?;
    let mut counts = Map::new();
    for entity in &plan.entities {
        let prefix = format!(
            "{{\"entity\":{},\"data\":",
            Value::from(entity.entity.as_str())
        );
        let rows = connection.rows(&entity.query).await?;
        futures_util::pin_mut!(rows);
        let mut n: u64 = 0;
        while let Some(row) = rows.next().await {
            let row = row?;
            let data: &str = row.try_get(0)?;
            out.buf.extend_from_slice(prefix.as_bytes());
            out.buf.extend_from_slice(data.as_bytes());
            out.buf.extend_from_slice(b"}\n");
            n += 1;
            out.flush_if_full().await?;
        }
        counts.insert(entity.entity.clone(), n.into());
    }
    let end = json!({"entity": "export_end", "data": {"rows": counts}});
    out.buf.extend_from_slice(end.to_string().as_bytes());
    out.buf.push(b'\n');
    out.flush().await
}

async fn write_zip(connection: &ExportConnection, plan: &Plan, out: &mut Out) -> Result<(), Stop> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut zip = ZipWriter::new(now);
    connection.open_snapshot().await?;
    let mut counts = Map::new();
    let mut line = Vec::new();
    for entity in &plan.entities {
        zip.start_file(&format!("{}.csv", entity.entity), &mut out.buf)?;
        line.clear();
        line.extend_from_slice(csv::BOM);
        csv::write_record(&mut line, entity.columns.iter().map(String::as_str));
        zip.write(&line, &mut out.buf)?;
        // The first file's header leaves at once: the first byte does not wait for a table.
        out.flush().await?;
        let rows = connection.rows(&entity.query).await?;
        futures_util::pin_mut!(rows);
        let mut n: u64 = 0;
        while let Some(row) = rows.next().await {
            let row = row?;
            let data: &str = row.try_get(0)?;
            line.clear();
            csv_line(&mut line, &entity.columns, data)?;
            zip.write(&line, &mut out.buf)?;
            n += 1;
            out.flush_if_full().await?;
        }
        zip.finish_file(&mut out.buf)?;
        counts.insert(entity.entity.clone(), n.into());
    }
    let manifest = json!({
        "tenant_id": plan.tenant_id, "exported_at": plan.exported_at, "format": "csv", "rows": counts,
    });
    zip.start_file("manifest.json", &mut out.buf)?;
    zip.write(manifest.to_string().as_bytes(), &mut out.buf)?;
    zip.finish(&mut out.buf)?;
    out.flush().await
}

/// One row (a JSON object) as a CSV record of `columns`.
fn csv_line(line: &mut Vec<u8>, columns: &[String], row: &str) -> Result<(), serde_json::Error> {
    let fields: HashMap<String, &RawValue> = serde_json::from_str(row)?;
    let custom: HashMap<String, &RawValue> = match fields.get("custom_fields") {
        Some(raw) if raw.get().starts_with('{') => serde_json::from_str(raw.get())?,
        _ => HashMap::new(),
    };
    let cells: Vec<Cow<'_, str>> = columns
        .iter()
        .map(|c| match c.strip_prefix("custom.") {
            Some(key) => cell(custom.get(key).copied()),
            None => cell(fields.get(c.as_str()).copied()),
        })
        .collect();
    csv::write_record(line, cells.iter().map(AsRef::as_ref));
    Ok(())
}

/// A JSON value as a CSV cell: null and absent are empty, a string is its text, anything
/// else (numbers exactly as PostgreSQL wrote them, booleans, objects) its JSON.
fn cell(raw: Option<&RawValue>) -> Cow<'_, str> {
    match raw.map(RawValue::get) {
        None | Some("null") => Cow::Borrowed(""),
        Some(text) if text.starts_with('"') => {
            serde_json::from_str::<String>(text).map_or(Cow::Borrowed(text), Cow::Owned)
        }
        Some(text) => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            Params::from_query(pairs(&[])).ok(),
            Some(Params {
                format: Format::Json,
                nonce: None
            })
        );
        assert_eq!(
            Params::from_query(pairs(&[("format", "csv"), ("nonce", "123456")])).ok(),
            Some(Params {
                format: Format::Csv,
                nonce: Some("123456".to_owned())
            })
        );
        for bad in [
            &[("format", "xml")][..],
            &[("format", "csv"), ("format", "json")],
            &[("limit", "5")],
        ] {
            assert!(matches!(
                Params::from_query(pairs(bad)),
                Err(Error::BadRequest(_))
            ));
        }
    }

    #[test]
    fn rows_become_csv_records() {
        let columns: Vec<String> = [
            "id",
            "first_name",
            "phone",
            "amount",
            "deleted_at",
            "custom.tier",
            "custom.vip",
            "changes",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let row = r#"{"id": "a1", "first_name": "Zoë \"Z\", Jr.", "phone": "+1 555", "amount": 1234567890123.45,
                      "deleted_at": null, "custom_fields": {"tier": "=gold", "vip": true}, "changes": {"a": [1]}}"#;
        let mut line = Vec::new();
        csv_line(&mut line, &columns, row).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "a1,\"Zoë \"\"Z\"\", Jr.\",'+1 555,1234567890123.45,,'=gold,true,\"{\"\"a\"\": [1]}\"\r\n"
        );
        assert!(csv_line(&mut Vec::new(), &columns, "[1]").is_err());
    }
}
