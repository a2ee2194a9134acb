//! `POST /rest/v1/import/{contacts|organizations}`: a CSV file streamed into the database
//! (journey 1.7).
//!
//! pg_crm decides what an import does (`sql/import.sql`); the edge only moves the file. It
//! reads the body chunk by chunk as it arrives ([`crate::csv::Reader`]: strict RFC 4180,
//! UTF-8, a line number on every error), opens the request's transaction with the header
//! (`crm_private.import_begin` checks the permission and the columns before a row moves),
//! sends each record on into a staging table with `COPY … FROM STDIN (FORMAT binary)`, and
//! at the end of the file asks `crm_private.import_run` to check and write the rows. The
//! file is never held whole: memory stays at a few chunks whatever its size, and a slow
//! database slows the upload rather than filling the edge.
//!
//! Answers: 200 with the report (what was, or in a dry run would be, created, updated,
//! skipped, and each failing row's line, field and error); 400 `22023` with the same report
//! when an all-or-nothing import met errors and wrote nothing; 400 naming the line for a
//! file that cannot be read (`22P04` bad CSV, `22021` not UTF-8, `54000` an overlong record);
//! 413 over `AURA_IMPORT_MAX_BYTES`. Nothing is written unless the whole request succeeds.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::config::HttpLimits;
use crate::csv::{self, Reader, Record};
use crate::db::{Database, ImportRows};
use crate::error::Error;
use crate::jwt::Verified;
use crate::server::Connection;

/// The longest record (line) a file may have.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The most fields a record may have (pg_crm takes at most 200 columns).
pub const MAX_FIELDS: usize = 1000;
/// After a failure, at most this much more of the body is read and dropped, so that a
/// client that sends the whole file before it reads the answer gets the answer.
const DRAIN_LIMIT: usize = 64 << 20;
/// The longest an upload may take once it holds its database connection (a minute short of
/// the import's statement timeout, so a slow client gets 408, not the timeout's 500).
const UPLOAD_LIMIT: std::time::Duration =
    std::time::Duration::from_secs(crate::db::IMPORT_STATEMENT_TIMEOUT.as_secs() - 60);

/// What can be imported, as the route names it.
pub fn entity(name: &str) -> Option<&'static str> {
    match name {
        "contacts" => Some("contacts"),
        "organizations" => Some("organizations"),
        _ => None,
    }
}

/// The query string of an import request.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `{dry_run, mode, on_duplicate}` as given (pg_crm checks the values).
    pub options: Map<String, Value>,
    /// Column → field (or null to leave the column out).
    pub mapping: Value,
}

impl Params {
    /// `dry_run` (true/false), `mode`, `on_duplicate` and `mapping` (a JSON object); anything
    /// else, or a parameter given twice, is a 400.
    pub fn from_query(pairs: Vec<(String, String)>) -> Result<Params, Error> {
        let mut params = Params {
            options: Map::new(),
            mapping: Value::Null,
        };
        for (key, value) in crate::rpc::distinct_query(pairs)? {
            match key.as_str() {
                "dry_run" => {
                    let b = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(Error::BadRequest(
                                "dry_run must be true or false".to_owned(),
                            ))
                        }
                    };
                    params.options.insert(key, Value::Bool(b));
                }
                "mode" | "on_duplicate" => {
                    let allowed: &[&str] = if key == "mode" {
                        &["all_or_nothing", "skip_bad_rows"]
                    } else {
                        &["skip", "update", "create"]
                    };
                    if !allowed.contains(&value.as_str()) {
                        return Err(Error::BadRequest(format!(
                            "{key} must be {}",
                            allowed.join(" or ")
                        )));
                    }
                    params.options.insert(key, Value::String(value));
                }
                "mapping" => match serde_json::from_str::<Value>(&value) {
                    Ok(m @ Value::Object(_)) => params.mapping = m,
                    _ => {
                        return Err(Error::BadRequest(
                            "mapping must be a JSON object such as {\"E-mail\": \"email\", \"Notes\": null}"
                                .to_owned(),
                        ))
                    }
                },
                other => {
                    return Err(Error::BadRequest(format!(
                        "Unknown query parameter {} (the import takes dry_run, mode, on_duplicate and mapping)",
                        crate::error::cut(other, 63)
                    )))
                }
            }
        }
        Ok(params)
    }

    fn dry_run(&self) -> bool {
        self.options.get("dry_run") == Some(&Value::Bool(true))
    }

    fn all_or_nothing(&self) -> bool {
        self.options
            .get("mode")
            .is_none_or(|m| m == "all_or_nothing")
    }
}

/// Only CSV is read: a body declared as anything else is refused before it is read.
fn check_media_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if matches!(
        essence.as_str(),
        "text/csv" | "application/csv" | "text/plain" | "application/octet-stream"
    ) {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(
            "An import takes a CSV file: send it as text/csv".to_owned(),
        ))
    }
}

/// The request body, chunk by chunk, within the import's size limit; each wait for a chunk
/// is a body phase of its own (bounded by `body_timeout`, evictable at the connection cap).
struct Upload<'a> {
    body: axum::body::BodyDataStream,
    limits: &'a HttpLimits,
    connection: Option<&'a Connection>,
    received: usize,
    ended: bool,
}

impl Upload<'_> {
    async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        if self.ended {
            return Ok(None);
        }
        if let Some(c) = self.connection {
            c.reading_body();
        }
        let chunk = tokio::time::timeout(self.limits.body_timeout, self.body.next()).await;
        if let Some(c) = self.connection {
            c.body_read();
        }
        match chunk.map_err(|_| Error::BodyTimeout)? {
            None => {
                self.ended = true;
                Ok(None)
            }
            Some(Ok(bytes)) => {
                self.received += bytes.len();
                if self.received > self.limits.max_import_bytes {
                    return Err(Error::PayloadTooLarge {
                        limit: self.limits.max_import_bytes,
                    });
                }
                Ok(Some(bytes))
            }
            Some(Err(_)) => Err(Error::BadRequest(
                "The request body could not be read".to_owned(),
            )),
        }
    }

    /// Reads and drops what is left of the body (up to [`DRAIN_LIMIT`]), so the answer to a
    /// failed import reaches a client still sending it.
    async fn drain(&mut self) {
        let stop_at = self.received.saturating_add(DRAIN_LIMIT);
        while self.received < stop_at {
            match self.next().await {
                Ok(Some(_)) => {}
                _ => return,
            }
        }
    }
}

fn bad_file(e: &csv::ReadError) -> Error {
    Error::BadFile {
        code: e.code(),
        line: e.line,
        message: e.to_string(),
    }
}

/// Runs one import (see the module's docs).
#[allow(clippy::too_many_arguments)]
pub async fn respond(
    db: &Database,
    who: &Verified,
    entity: &str,
    params: Params,
    headers: &HeaderMap,
    body: Body,
    limits: &HttpLimits,
    connection: Option<&Connection>,
) -> Result<Response, Error> {
    check_media_type(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_import_bytes as u64) {
        return Err(Error::PayloadTooLarge {
            limit: limits.max_import_bytes,
        });
    }
    let mut upload = Upload {
        body: body.into_data_stream(),
        limits,
        connection,
        received: 0,
        ended: false,
    };
    let outcome = import(db, who, entity, &params, &mut upload).await;
    if outcome.is_err() && !upload.ended {
        upload.drain().await;
    }
    outcome
}

async fn import(
    db: &Database,
    who: &Verified,
    entity: &str,
    params: &Params,
    upload: &mut Upload<'_>,
) -> Result<Response, Error> {
    let mut reader = Reader::new(MAX_RECORD_BYTES, MAX_FIELDS);
    let mut records: Vec<Record> = Vec::new();
    // The header: the first record.
    while records.is_empty() {
        match upload.next().await? {
            Some(chunk) => reader.feed(&chunk, &mut records),
            None => reader.finish(&mut records),
        }
        .map_err(|e| bad_file(&e))?;
        if records.is_empty() && upload.ended {
            return Err(Error::BadFile {
                code: "22P04",
                line: 1,
                message: "line 1: the file is empty (it needs a header line naming its columns)"
                    .to_owned(),
            });
        }
    }
    let header = records.remove(0).fields;
    let (plan, connection) = db
        .begin_import(who, entity, &header, &params.mapping)
        .await?;
    if let Some(refusal) = plan.get("error") {
        // pg_crm answers (rather than raises) a refusal of the columns, so that a header
        // line of personal data stays out of the server log.
        connection.rollback().await;
        let field = refusal["field"].as_str().unwrap_or("columns").to_owned();
        return Err(Error::Db(crate::error::DbError {
            code: "22023".to_owned(),
            message: format!(
                "invalid {field}: {}",
                refusal["message"].as_str().unwrap_or("not accepted")
            ),
            detail: Some(format!("field: {field}")),
            hint: None,
            in_function: true,
        }));
    }
    let copied = tokio::time::timeout(UPLOAD_LIMIT, async {
        let mut rows = connection.copy().await?;
        loop {
            for record in records.drain(..) {
                write_row(&mut rows, record).await?;
            }
            if upload.ended {
                break;
            }
            match upload.next().await? {
                Some(chunk) => reader.feed(&chunk, &mut records),
                None => reader.finish(&mut records),
            }
            .map_err(|e| bad_file(&e))?;
        }
        rows.as_mut().finish().await?;
        Ok::<_, Error>(())
    })
    .await
    // Past the limit the statement timeout would end the COPY with a 5xx; it is the
    // upload that took too long.
    .unwrap_or(Err(Error::BodyTimeout));
    if let Err(e) = copied {
        return Err(connection.fail(e).await.unwrap_or_else(|| {
            Error::Internal("the import failed and its rollback too".to_owned())
        }));
    }
    let options = Value::Object(params.options.clone());
    let report = match connection
        .run(entity, &header, &params.mapping, &options)
        .await
    {
        Ok(report) => report,
        Err(e) => {
            return Err(connection
                .fail(e)
                .await
                .unwrap_or_else(|| Error::Internal("the import failed".to_owned())))
        }
    };
    if report["written"] == json!(true) {
        connection.commit().await?;
    } else {
        connection.rollback().await;
        let failed = report["failed"].as_u64().unwrap_or(0);
        if !params.dry_run() && params.all_or_nothing() && failed > 0 {
            return Err(Error::ImportRejected(report));
        }
    }
    Ok(Json(report).into_response())
}

/// One record into the COPY: its line and its cells, the export's formula guard taken off.
async fn write_row(rows: &mut ImportRows, record: Record) -> Result<(), Error> {
    let line = i64::try_from(record.line).unwrap_or(i64::MAX);
    let cells: Vec<&str> = record.fields.iter().map(|f| csv::restore(f)).collect();
    rows.as_mut().write(&[&line, &cells]).await?;
    Ok(())
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
        let p = Params::from_query(pairs(&[
            ("dry_run", "true"),
            ("on_duplicate", "update"),
            ("mapping", r#"{"E-mail": "email", "Notes": null}"#),
        ]))
        .unwrap();
        assert!(p.dry_run());
        assert!(p.all_or_nothing());
        assert_eq!(
            Value::Object(p.options),
            json!({"dry_run": true, "on_duplicate": "update"})
        );
        assert_eq!(p.mapping, json!({"E-mail": "email", "Notes": null}));
        let p = Params::from_query(pairs(&[("mode", "skip_bad_rows")])).unwrap();
        assert!(!p.dry_run() && !p.all_or_nothing());
        assert_eq!(p.mapping, Value::Null);
        for bad in [
            &[("dry_run", "yes")][..],
            &[("mode", "best_effort")],
            &[("on_duplicate", "merge")],
            &[("mapping", "[1]")],
            &[("mapping", "{")],
            &[("mode", "a"), ("mode", "b")],
            &[("format", "csv")],
        ] {
            assert!(
                matches!(Params::from_query(pairs(bad)), Err(Error::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_csv_is_taken() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            check_media_type(&h)
        };
        assert!(with("text/csv; charset=utf-8").is_ok());
        assert!(with("application/octet-stream").is_ok());
        assert!(check_media_type(&HeaderMap::new()).is_ok());
        assert!(matches!(
            with("application/json"),
            Err(Error::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn routes() {
        assert_eq!(entity("contacts"), Some("contacts"));
        assert_eq!(entity("organizations"), Some("organizations"));
        assert_eq!(entity("deals"), None);
    }
}
