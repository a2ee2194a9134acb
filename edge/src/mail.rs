//! Delivers the email outbox (`core.email_outbox`, written by pg_crm in the same transaction
//! as the event that needs the email).
//!
//! Every `AURA_MAIL_POLL` the sender leases due messages with `crm_private.outbox_claim`
//! (`FOR UPDATE SKIP LOCKED` and a lease), so two edges never deliver the same message, and
//! reports each one sent or failed; a failure is retried with backoff, decided by the
//! database. Without `AURA_SMTP_URL` each message is written to `AURA_MAIL_DIR` as an
//! `.eml` file (what `make run` and the tests use); with it, over SMTP with lettre.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};

use crate::config::AuthConfig;
use crate::db::Database;
use crate::http::AppState;

/// How many messages one poll leases, and for how long.
const BATCH: i32 = 20;
const LEASE_SECS: i32 = 120;

/// One message from the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl Message {
    fn from_json(v: &Value) -> Option<Message> {
        Some(Message {
            id: v.get("id")?.as_i64()?,
            to: v.get("to")?.as_str()?.to_owned(),
            subject: v.get("subject")?.as_str()?.to_owned(),
            body: v.get("body")?.as_str()?.to_owned(),
        })
    }
}

/// Where messages go.
enum Transport {
    Files(PathBuf),
    Smtp(Box<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>),
}

/// Runs the sender until the task is aborted.
pub async fn run(state: Arc<AppState>, config: AuthConfig) {
    let db = &state.db;
    let transport = match &config.smtp_url {
        Some(url) => match lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url) {
            Ok(builder) => Transport::Smtp(Box::new(builder.build())),
            Err(e) => {
                tracing::error!(error = %e, "AURA_SMTP_URL is not usable; email stays in the outbox");
                return;
            }
        },
        None => Transport::Files(config.mail_dir.clone()),
    };
    if let Transport::Files(dir) = &transport {
        tracing::info!(dir = %dir.display(), "email is written to files (AURA_SMTP_URL is not set)");
    }
    loop {
        let delivered = poll_once(db, &transport, &config.mail_from).await;
        if delivered == 0 {
            tokio::time::sleep(config.mail_poll).await;
        }
    }
}

/// Leases due messages and delivers them; returns how many were handled.
async fn poll_once(db: &Database, transport: &Transport, from: &str) -> usize {
    let params: [(&(dyn ToSql + Sync), Type); 2] =
        [(&BATCH, Type::INT4), (&LEASE_SECS, Type::INT4)];
    let claimed = match db
        .as_auth_service(
            "SELECT m FROM crm_private.outbox_claim($1, $2) AS m",
            &params,
            true,
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "outbox: could not claim messages");
            return 0;
        }
    };
    for message in claimed.iter().filter_map(Message::from_json) {
        let outcome = deliver(transport, from, &message).await;
        let id = message.id;
        let result = match &outcome {
            Ok(where_to) => {
                tracing::info!(id, to = %redact(&message.to), %where_to, "email delivered");
                let p: [(&(dyn ToSql + Sync), Type); 1] = [(&id, Type::INT8)];
                db.as_auth_service("SELECT crm_private.outbox_sent($1)::text", &p, false)
                    .await
            }
            Err(error) => {
                tracing::warn!(id, error = %error, "email delivery failed; it will be retried");
                let p: [(&(dyn ToSql + Sync), Type); 2] = [(&id, Type::INT8), (error, Type::TEXT)];
                db.as_auth_service("SELECT crm_private.outbox_failed($1, $2)::text", &p, false)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(id, error = %e, "outbox: could not record the delivery; the lease will expire");
        }
    }
    claimed.len()
}

/// `ana@example.com` → `a***@example.com`, for logs.
fn redact(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('?')),
        None => "***".to_owned(),
    }
}

/// No header may carry a line break (header injection).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

async fn deliver(transport: &Transport, from: &str, m: &Message) -> Result<String, String> {
    match transport {
        Transport::Files(dir) => write_eml(dir, from, m)
            .await
            .map(|p| p.display().to_string()),
        Transport::Smtp(smtp) => {
            use lettre::AsyncTransport;
            let email = lettre::Message::builder()
                .from(from.parse().map_err(|e| format!("AURA_MAIL_FROM: {e}"))?)
                .to(m.to.parse().map_err(|e| format!("recipient: {e}"))?)
                .subject(one_line(&m.subject))
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(m.body.clone())
                .map_err(|e| e.to_string())?;
            smtp.send(email).await.map_err(|e| e.to_string())?;
            Ok("smtp".to_owned())
        }
    }
}

/// Writes the message as `{dir}/{id}.eml`, atomically (a reader never sees half a file).
pub async fn write_eml(dir: &Path, from: &str, m: &Message) -> Result<PathBuf, String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let text = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <aura-outbox-{}@aura.local>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        one_line(from),
        one_line(&m.to),
        one_line(&m.subject),
        m.id,
        m.body.replace("\r\n", "\n").replace('\n', "\r\n"),
    );
    let path = dir.join(format!("{:012}.eml", m.id));
    let partial = dir.join(format!(".{:012}.eml.partial", m.id));
    tokio::fs::write(&partial, text)
        .await
        .map_err(|e| format!("writing {}: {e}", partial.display()))?;
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eml_files_carry_no_injected_headers() {
        let dir = std::env::temp_dir().join(format!("aura-mail-test-{}", std::process::id()));
        let m = Message {
            id: 7,
            to: "ana@example.test".into(),
            subject: "Hi\r\nBcc: evil@example.test".into(),
            body: "line one\nline two".into(),
        };
        let path = write_eml(&dir, "Aura <noreply@localhost>", &m)
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("To: ana@example.test\r\n"));
        assert!(head.contains("Subject: Hi  Bcc: evil@example.test\r\n"));
        assert!(!head.contains("\r\nBcc:"));
        assert_eq!(body, "line one\r\nline two");
        assert_eq!(redact("ana@example.test"), "a***@example.test");
        let _ = std::fs::remove_dir_all(dir);
    }
}
