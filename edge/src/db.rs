//! The connection pool and the one transaction each request runs in.
//!
//! Tenant context must never outlive its request on a pooled connection, so the edge sets
//! nothing at session level: the role switch and every setting `crm_private.begin_request`
//! makes are transaction-local, and no connection goes back to the pool inside a transaction.
//!
//! A request's whole transaction (`BEGIN` with the role switch, the gate, the call, `COMMIT`)
//! leaves in one round trip: the statements are pipelined (see [`pipeline`]). They are sent
//! with `query_typed` (unnamed statements), never as named prepared statements, so the edge
//! also works behind PgBouncer/Supavisor in transaction mode and an extension upgrade cannot
//! leave stale prepared statements behind. The plans are kept on the server side instead: the
//! gate and the `api` functions keep theirs per connection.
//!
//! A request whose client goes away is dropped mid-statement by the HTTP server. Its
//! connection then does not simply return to the pool with the statement still running (and
//! holding it for up to the statement timeout): the [`InFlight`] guard takes it aside, sends
//! PostgreSQL a cancel request, waits for a rollback so the statement has surely ended, and
//! closes the connection. It is never reused: the server delivers a cancel asynchronously, so
//! a late one could otherwise hit whichever request (of whichever tenant) runs on it next.
//! The request's fairness turn stays held until then, so a tenant that keeps hanging up on
//! heavy calls cannot exceed its share of the database either.
//!
//! Nothing waits on the database without a limit: the request's statements get the statement
//! timeout plus a margin (a half-open connection after a failover would otherwise hang until
//! TCP keepalive notices, hours later), the pool and the fairness queue have their waits, and
//! TCP keepalives and `tcp_user_timeout` are set unless the connection string sets them.
//!
//! A database outage must end in 503s, not hangs, and must heal by itself: connects and pool
//! waits have timeouts, clients whose connection failed are detached from the pool instead of
//! returned to it, and the pool's `Fast` recycling drops any client whose connection closed
//! while idle, so the pool opens fresh connections once the database is back.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde_json::{Map, Value};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::CancelToken;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::{is_connection_error, DbError, Error};
use crate::fairness::{Fairness, Turn};
use crate::jwt::Verified;
use crate::pgtls::{DbTarget, MakeRustls, SslMode};
use crate::rpc::Call;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an abandoned request's cancel and rollback may take.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond the statement timeout, how long a request's transaction may take in all (round
/// trips, COMMIT) before its connection is presumed dead.
const TRANSACTION_MARGIN: Duration = Duration::from_secs(5);
/// TCP settings for pooled connections, unless the connection string has its own.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each query of a workspace export may take (it streams at the client's pace).
pub const EXPORT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long each statement of an import may take (its COPY takes the rows at the client's
/// pace; checking and writing 100,000 rows takes seconds).
pub const IMPORT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Where an import's rows go (created by `crm_private.import_begin`).
const IMPORT_COPY_SQL: &str = "COPY pg_temp.import_rows (line, cells) FROM STDIN (FORMAT binary)";
const IMPORT_BEGIN_SQL: &str = "SELECT crm_private.import_begin($1::text, $2::text[], $3::jsonb)";
const IMPORT_RUN_SQL: &str =
    "SELECT crm_private.import_run($1::text, $2::text[], $3::jsonb, $4::jsonb)";

tokio::task_local! {
    /// The current HTTP request's id and client address, which each of its transactions
    /// hands to the database (`pg_crm.request_id`, `pg_crm.client_ip`) for its audit entries.
    pub static REQUEST_META: RequestMeta;
}

/// See [`REQUEST_META`].
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// Already restricted to letters, digits, `-`, `_` and `.` (see `http::request_id`).
    pub id: String,
    pub ip: Option<std::net::IpAddr>,
}

impl RequestMeta {
    /// The statements that set them for the transaction. Both values are safe to quote as
    /// they are: the id's characters are restricted, the address is formatted by Rust.
    fn set_local_sql(&self) -> String {
        let mut sql = String::new();
        if self
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            sql.push_str(&format!("; SET LOCAL pg_crm.request_id = '{}'", self.id));
        }
        if let Some(ip) = self.ip {
            sql.push_str(&format!(
                "; SET LOCAL pg_crm.client_ip = '{}'",
                ip.to_canonical()
            ));
        }
        sql
    }
}

pub const BEGIN_REQUEST_SQL: &str = "SELECT crm_private.begin_request($1::jsonb, $2::uuid)";

/// The pool, the TLS connector (cancel requests need it too) and the per-tenant fairness.
pub struct Database {
    pool: Pool,
    tls: MakeRustls,
    fairness: Arc<Fairness>,
    /// `BEGIN`, the role switch and a time limit (so no request can hold a pooled connection
    /// for long), in one simple-protocol message: for writes, for reads, and for the auth
    /// endpoints (as `crm_auth`).
    begin_sql: String,
    begin_read_only_sql: String,
    begin_auth_sql: String,
    /// The role switch and time limit alone, as `crm_auth`.
    set_auth_role_sql: String,
    /// The longest a request's transaction may take once it has its connection.
    transaction_limit: Duration,
    ssl_mode: SslMode,
    /// Imports hold a connection for as long as their upload takes: at most a quarter of
    /// the pool at once, so slow uploads cannot take every connection.
    imports: Arc<tokio::sync::Semaphore>,
}

impl Database {
    /// Builds the pool; connects lazily, so the edge starts even while the database is down.
    pub fn new(config: &Config) -> Result<Database, Error> {
        let DbTarget {
            mut pg,
            ssl_mode,
            tls,
        } = DbTarget::parse(&config.database_url)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("aura-edge");
        }
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg.keepalives_idle(KEEPALIVE_IDLE); // tokio-postgres's default is two hours
        }
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let manager = Manager::from_config(
            pg,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| Error::Internal(format!("building the pool: {e}")))?;
        let timeout_ms = config.statement_timeout.as_millis().max(1);
        let set_role =
            format!("SET LOCAL ROLE authenticated; SET LOCAL statement_timeout = {timeout_ms}");
        let set_auth_role =
            format!("SET LOCAL ROLE crm_auth; SET LOCAL statement_timeout = {timeout_ms}");
        Ok(Database {
            pool,
            tls,
            fairness: Fairness::new(
                config.tenant_max_connections(),
                config.tenant_queue,
                POOL_WAIT_TIMEOUT,
            ),
            begin_sql: format!("BEGIN; {set_role}"),
            begin_read_only_sql: format!("BEGIN READ ONLY; {set_role}"),
            begin_auth_sql: format!("BEGIN; {set_auth_role}"),
            set_auth_role_sql: set_auth_role,
            transaction_limit: config.statement_timeout + TRANSACTION_MARGIN,
            ssl_mode,
            imports: Arc::new(tokio::sync::Semaphore::new((config.pool_size / 4).max(1))),
        })
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// Runs `call` for `who` in its own transaction, read-only if asked; returns the JSON
    /// result. The request first waits for its tenant's turn ([`Fairness`]).
    ///
    /// `BEGIN` is retried once on a fresh connection when the connection was already dead:
    /// nothing has run yet, so that is safe even for volatile functions.
    pub async fn run_call(
        &self,
        read_only: bool,
        who: &Verified,
        call: &Call,
        args: &Map<String, Value>,
    ) -> Result<Value, Error> {
        let args = Value::Object(args.clone());
        let work = Work::Rpc {
            who,
            call,
            args: &args,
        };
        self.run(who.tenant_id, read_only, &work).await
    }

    /// Runs `crm_private.{function}(req)` of the auth service as `crm_auth`, in its own
    /// transaction, and returns its reply. Auth traffic has its own fairness share (keyed
    /// by the nil uuid), so a flood of sign-ins cannot take the whole pool from tenants.
    pub async fn run_auth(&self, function: &'static str, req: &Value) -> Result<Value, Error> {
        let work = Work::Auth { function, req };
        self.run(Some(Uuid::nil()), false, &work).await
    }

    async fn run(
        &self,
        fairness_key: Option<Uuid>,
        read_only: bool,
        work: &Work<'_>,
    ) -> Result<Value, Error> {
        let mut turn = Some(self.fairness.acquire(fairness_key).await?);
        let opening = match (work, read_only) {
            (Work::Rpc { .. }, true) => &self.begin_read_only_sql,
            (Work::Rpc { .. }, false) => &self.begin_sql,
            (Work::Auth { .. }, _) => &self.begin_auth_sql,
        };
        let opening = match REQUEST_META.try_with(RequestMeta::set_local_sql) {
            Ok(meta) => format!("{opening}{meta}"),
            Err(_) => opening.clone(),
        };
        let mut retried = false;
        loop {
            let client = self.pool.get().await?;
            let request = InFlight::new(client, self.tls.clone(), turn.take());
            let running = pipeline(request.client(), &opening, work);
            let outcome = match tokio::time::timeout(self.transaction_limit, running).await {
                Ok(outcome) => outcome,
                // The server enforces the statement timeout; no answer past it means the
                // connection is gone. Dropping `request` cancels and discards it.
                Err(_) => {
                    return Err(Error::Unavailable(
                        "the database did not answer within the statement timeout".to_owned(),
                    ))
                }
            };
            match outcome {
                // The connection was dead before the transaction began (the first reply
                // never came). Only a read-only request is surely safe to send again: a
                // lost reply could hide a commit of the pipelined writes.
                Err(failure) if failure.before_begin && read_only && !retried => {
                    turn = request.discard();
                    retried = true;
                    tracing::debug!(error = %failure.error, "connection lost before BEGIN; retrying once");
                    continue;
                }
                Err(failure) => return request.finish(Err(failure.error), failure.ended).await,
                Ok(value) => return request.finish(Ok(value), true).await,
            }
        }
    }

    /// The workspace export's first step, in its own committed transaction (so the export
    /// is on record whatever happens to the download): `crm_private.export_begin` checks
    /// the permission and the nonce and answers with the plan. The connection and the
    /// tenant's turn stay with the returned [`ExportConnection`], which streams the plan's
    /// queries in a second, read-only snapshot transaction.
    pub async fn begin_export(
        &self,
        who: &Verified,
        format: &str,
        nonce: Option<&str>,
    ) -> Result<(Value, ExportConnection), Error> {
        let turn = self.fairness.acquire(who.tenant_id).await?;
        let meta = REQUEST_META
            .try_with(RequestMeta::set_local_sql)
            .unwrap_or_default();
        let opening = format!("{}{meta}", self.begin_sql);
        let call = Call {
            sql: "SELECT to_jsonb(crm_private.export_begin(_a.format, _a.nonce)) \
                  FROM jsonb_to_record($1::jsonb) AS _a(format text, nonce text)"
                .to_owned(),
            takes_args: true,
            returns_void: false,
            volatility: crate::catalog::Volatility::Volatile,
            probes: Vec::new(),
        };
        let args = serde_json::json!({"format": format, "nonce": nonce});
        let work = Work::Rpc {
            who,
            call: &call,
            args: &args,
        };
        let client = self.pool.get().await?;
        let request = InFlight::new(client, self.tls.clone(), Some(turn));
        let outcome = match tokio::time::timeout(
            self.transaction_limit,
            pipeline(request.client(), &opening, &work),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                return Err(Error::Unavailable(
                    "the database did not answer within the statement timeout".to_owned(),
                ))
            }
        };
        let plan = match outcome {
            Ok(plan) => plan,
            Err(failure) => {
                // finish() hands the error back after cleaning up.
                let error = match request.finish(Err(failure.error), failure.ended).await {
                    Err(error) => error,
                    Ok(_) => Error::Internal("export_begin failed".to_owned()),
                };
                return Err(error);
            }
        };
        let snapshot = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL ROLE authenticated; \
             SET LOCAL statement_timeout = {}{meta}",
            EXPORT_STATEMENT_TIMEOUT.as_millis()
        );
        Ok((
            plan,
            ExportConnection {
                request,
                snapshot,
                claims: who.claims.clone(),
                tenant_id: who.tenant_id,
            },
        ))
    }

    /// A CSV import's first step: in one transaction in the caller's tenant context (the
    /// gate), `crm_private.import_begin` checks the permission and the file's columns and
    /// creates the staging table. The connection, its open transaction and the tenant's turn
    /// stay with the returned [`ImportConnection`], which takes the rows (COPY), checks and
    /// writes them, and commits or rolls back.
    pub async fn begin_import(
        &self,
        who: &Verified,
        entity: &str,
        header: &[String],
        mapping: &Value,
    ) -> Result<(Value, ImportConnection), Error> {
        let permit = tokio::time::timeout(POOL_WAIT_TIMEOUT, self.imports.clone().acquire_owned())
            .await
            .map_err(|_| Error::ImportsBusy)?
            .map_err(|_| Error::Internal("the import semaphore closed".to_owned()))?;
        let turn = self.fairness.acquire(who.tenant_id).await?;
        let meta = REQUEST_META
            .try_with(RequestMeta::set_local_sql)
            .unwrap_or_default();
        let opening = format!(
            "BEGIN; SET LOCAL ROLE authenticated; SET LOCAL statement_timeout = {}{meta}",
            IMPORT_STATEMENT_TIMEOUT.as_millis()
        );
        let client = self.pool.get().await?;
        let request = InFlight::new(client, self.tls.clone(), Some(turn));
        let begun = async {
            let client = request.client();
            client.batch_execute(&opening).await?;
            let context: [(&(dyn ToSql + Sync), Type); 2] =
                [(&who.claims, Type::JSONB), (&who.tenant_id, Type::UUID)];
            client
                .execute_typed(BEGIN_REQUEST_SQL, &context)
                .await
                .map_err(setup)?;
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let params: [(&(dyn ToSql + Sync), Type); 3] = [
                (&entity, Type::TEXT),
                (&header, Type::TEXT_ARRAY),
                (mapping, Type::JSONB),
            ];
            Ok::<_, Error>(json_of(
                client.query_typed_one(IMPORT_BEGIN_SQL, &params).await,
            )?)
        };
        match tokio::time::timeout(self.transaction_limit, begun).await {
            Ok(Ok(plan)) => Ok((
                plan,
                ImportConnection {
                    request,
                    _permit: permit,
                },
            )),
            Ok(Err(e)) => Err(request
                .finish(Err(e), false)
                .await
                .err()
                .unwrap_or_else(|| Error::Internal("import_begin failed".to_owned()))),
            Err(_) => Err(Error::Unavailable(
                "the database did not answer within the statement timeout".to_owned(),
            )),
        }
    }

    /// Runs one statement as `crm_auth` in its own short transaction (the email sender's
    /// claims and receipts): the rows' first column as JSON, when `returns_json`.
    pub async fn as_auth_service(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        returns_json: bool,
    ) -> Result<Vec<Value>, Error> {
        let client = self.pool.get().await?;
        let work = async {
            client
                .batch_execute(&format!("BEGIN; {}", self.set_auth_role_sql))
                .await?;
            let rows = client.query_typed(sql, params).await?;
            client.batch_execute("COMMIT").await?;
            let mut values = Vec::new();
            if returns_json {
                for row in rows {
                    values.push(row.try_get::<_, Value>(0)?);
                }
            }
            Ok::<_, tokio_postgres::Error>(values)
        };
        match tokio::time::timeout(self.transaction_limit, work).await {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => {
                if client.is_closed()
                    || is_connection_error(&e)
                    || client.batch_execute("ROLLBACK").await.is_err()
                {
                    discard(client);
                }
                Err(Error::from(e))
            }
            Err(_) => {
                discard(client);
                Err(Error::Unavailable(
                    "the database did not answer in time".to_owned(),
                ))
            }
        }
    }

    /// Reads the `api` catalog as the authenticator.
    pub async fn load_catalog(&self) -> Result<Catalog, Error> {
        let client = self.pool.get().await?;
        match tokio::time::timeout(self.transaction_limit, Catalog::load(&client)).await {
            Ok(Ok(catalog)) => Ok(catalog),
            Ok(Err(e)) if is_connection_error(&e) || client.is_closed() => {
                discard(client);
                Err(Error::Unavailable(e.to_string()))
            }
            // A catalog query failing otherwise is a deployment problem, not the client's.
            Ok(Err(e)) => Err(Error::Internal(format!("loading the api catalog: {e}"))),
            Err(_) => {
                discard(client);
                Err(Error::Unavailable(
                    "loading the api catalog timed out".to_owned(),
                ))
            }
        }
    }

    /// `SELECT 1` through the pool within [`READY_TIMEOUT`]; a connection that does not answer
    /// in time is closed, not returned with its query still pending.
    pub async fn ready(&self) -> Result<(), Error> {
        let client = tokio::time::timeout(READY_TIMEOUT, self.pool.get())
            .await
            .map_err(|_| Error::Unavailable("readiness check timed out".to_owned()))??;
        match tokio::time::timeout(READY_TIMEOUT, client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                discard(client);
                Err(Error::Unavailable(e.to_string()))
            }
            Err(_) => {
                discard(client);
                Err(Error::Unavailable("readiness check timed out".to_owned()))
            }
        }
    }
}

/// One direct connection attempt with the edge's settings, outside the pool; the error, if
/// any, with its whole cause chain (a TLS name mismatch, a refused password…). The edge logs
/// it at startup; an operator reads it there rather than as a stream of 503s.
pub async fn probe(config: &Config) -> Result<(), String> {
    let DbTarget { mut pg, tls, .. } =
        DbTarget::parse(&config.database_url).map_err(|e| e.to_string())?;
    pg.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = pg.connect(tls).await.map_err(|e| chain(&e))?;
    let driver = tokio::spawn(connection);
    let result = client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| chain(&e));
    drop(client);
    let _ = driver.await;
    result
}

/// An error and its sources, joined with `: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Drops a client whose connection failed rather than returning it to the pool.
fn discard(client: Object) {
    drop(Object::take(client));
}

/// What a request's transaction runs after the role switch.
enum Work<'a> {
    /// The gate, then one `api` function.
    Rpc {
        who: &'a Verified,
        call: &'a Call,
        args: &'a Value,
    },
    /// One function of the auth service (`crm_private.auth_*`), which replies with JSON.
    Auth {
        function: &'static str,
        req: &'a Value,
    },
}

/// Why a request's transaction failed, and in what state it left the connection.
struct Failure {
    error: Error,
    /// The first reply (to `BEGIN`) never came: the connection was already dead.
    before_begin: bool,
    /// The server ended the transaction (the pipelined `COMMIT` became a rollback).
    ended: bool,
}

/// The whole request transaction in one round trip: `BEGIN` with the role switch (one
/// simple-protocol message), the gate, the call and `COMMIT` are issued together, and
/// tokio-postgres pipelines statements whose futures are first polled together, in order.
/// Each statement is unnamed (`query_typed`), so transaction-mode PgBouncer keeps working.
///
/// After a failure the server rejects the rest of the transaction (25P02) and turns the
/// pipelined `COMMIT` into a rollback, so nothing is half-written; the first error in
/// pipeline order is the request's answer.
async fn pipeline(client: &Object, opening: &str, work: &Work<'_>) -> Result<Value, Failure> {
    let begin = client.batch_execute(opening);
    let gate = async {
        match work {
            Work::Rpc { who, .. } => {
                let context: [(&(dyn ToSql + Sync), Type); 2] =
                    [(&who.claims, Type::JSONB), (&who.tenant_id, Type::UUID)];
                client
                    .execute_typed(BEGIN_REQUEST_SQL, &context)
                    .await
                    .map(|_| ())
            }
            Work::Auth { .. } => Ok(()),
        }
    };
    let auth_sql = match work {
        Work::Auth { function, .. } => format!("SELECT crm_private.{function}($1::jsonb)"),
        Work::Rpc { .. } => String::new(),
    };
    let called = async {
        match work {
            Work::Rpc { call, args, .. } => {
                let arg: [(&(dyn ToSql + Sync), Type); 1] = [(*args, Type::JSONB)];
                let params: &[_] = if call.takes_args { &arg } else { &[] };
                if call.returns_void {
                    client
                        .execute_typed(&call.sql, params)
                        .await
                        .map(|_| Value::Null)
                } else {
                    json_of(client.query_typed_one(&call.sql, params).await)
                }
            }
            Work::Auth { req, .. } => json_of(
                client
                    .query_typed_one(&auth_sql, &[(*req, Type::JSONB)])
                    .await,
            ),
        }
    };
    let commit = client.batch_execute("COMMIT");
    // `join!` polls its branches in order on the first poll: the four requests leave in this
    // order before any reply is awaited.
    let (begun, gated, called, committed) = tokio::join!(begin, gate, called, commit);
    let ended = match &committed {
        Ok(()) => true,
        Err(e) => e.as_db_error().is_some() && !is_connection_error(e),
    };
    let fail = |error: Error| Failure {
        error,
        before_begin: false,
        ended,
    };
    if let Err(e) = begun {
        if is_connection_error(&e) {
            return Err(Failure {
                error: Error::from(e),
                before_begin: true,
                ended: false,
            });
        }
        return Err(fail(match Error::from(e) {
            Error::Db(db) => {
                Error::Internal(format!("{opening} failed: {}: {}", db.code, db.message))
            }
            other => other,
        }));
    }
    gated.map_err(|e| fail(setup(e)))?;
    let value = match called {
        Ok(value) => value,
        Err(e) => {
            let error = match (Error::from(e), work) {
                (Error::Db(db), Work::Rpc { call, args, .. })
                    if db.is_argument_conversion() && call.takes_args && ended =>
                {
                    Error::Db(name_the_argument(client, call, args, db).await)
                }
                (Error::Db(db), Work::Auth { .. }) => setup_db(db),
                (other, _) => other,
            };
            return Err(fail(error));
        }
    };
    committed.map_err(|e| fail(Error::from(e)))?;
    Ok(value)
}

/// The first column of a one-row result as JSON (SQL NULL is JSON null).
fn json_of(
    row: Result<tokio_postgres::Row, tokio_postgres::Error>,
) -> Result<Value, tokio_postgres::Error> {
    row?.try_get::<_, Option<Value>>(0)
        .map(|v| v.unwrap_or(Value::Null))
}

/// A missing role, schema or function in the gate or an auth function means pg_crm is not
/// (fully) installed: a deployment problem, not a 404 for the client. Refusals (42501 etc.)
/// map as usual.
fn setup(e: tokio_postgres::Error) -> Error {
    match Error::from(e) {
        Error::Db(db) => setup_db(db),
        other => other,
    }
}

fn setup_db(db: DbError) -> Error {
    if matches!(db.code.as_str(), "42883" | "42P01" | "3F000" | "42704") {
        Error::Internal(format!("request setup failed: {}: {}", db.code, db.message))
    } else {
        Error::Db(db)
    }
}

/// After a call failed to convert one of its arguments (22xxx raised by the statement, not
/// the function) and its transaction has ended: converts each argument alone, outside any
/// transaction and tenant context (nothing but the conversion runs), to name the first one
/// that fails. Costs nothing on the way to a successful call. The original error stands if
/// no argument fails alone or a probe cannot run.
async fn name_the_argument(client: &Object, call: &Call, args: &Value, db: DbError) -> DbError {
    for (name, sql) in &call.probes {
        let Some(value) = args.get(name) else {
            continue;
        };
        let one = Value::Object([(name.clone(), value.clone())].into_iter().collect());
        match client.execute_typed(sql, &[(&one, Type::JSONB)]).await {
            Ok(_) => {}
            Err(e) => {
                return match e.as_db_error() {
                    Some(probe) if probe.code().code() == db.code => db.for_argument(name),
                    _ => db,
                }
            }
        }
    }
    db
}

/// Whether an error means the connection itself can no longer be trusted (as opposed to an
/// error a statement raised, after which a rollback makes it clean again).
fn breaks_connection(e: &Error) -> bool {
    match e {
        Error::Unavailable(_) => true,
        Error::Db(db) => crate::error::is_unavailable_sqlstate(&db.code),
        _ => false,
    }
}

/// A pooled connection inside a request's transaction, with the tenant's fairness turn.
/// Finished requests return the connection to the pool (rolled back if they failed); a
/// request dropped before it finished (its client went away, or it timed out) hands both to
/// [`abandon`].
struct InFlight {
    client: Option<Object>,
    cancel: CancelToken,
    tls: MakeRustls,
    turn: Option<Turn>,
}

impl InFlight {
    fn new(client: Object, tls: MakeRustls, turn: Option<Turn>) -> InFlight {
        InFlight {
            cancel: client.cancel_token(),
            client: Some(client),
            tls,
            turn,
        }
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("present until finished")
    }

    /// Closes the connection instead of returning it; gives the turn back to the caller.
    fn discard(mut self) -> Option<Turn> {
        if let Some(client) = self.client.take() {
            discard(client);
        }
        self.turn.take()
    }

    /// Commits the request's transaction and ends the request (a failed COMMIT is the
    /// error, cleaned up as any other).
    async fn commit(self) -> Result<(), Error> {
        match self.client().batch_execute("COMMIT").await {
            Ok(()) => self.finish(Ok(Value::Null), true).await.map(|_| ()),
            Err(e) => self.finish(Err(Error::from(e)), false).await.map(|_| ()),
        }
    }

    /// Ends the request: after an error, rolls back unless the server already `ended` the
    /// transaction (or closes a broken connection). The connection stays in the guard until
    /// then, so a drop mid-rollback still cleans up.
    async fn finish(mut self, outcome: Result<Value, Error>, ended: bool) -> Result<Value, Error> {
        if let Err(e) = &outcome {
            if breaks_connection(e) || self.client().is_closed() {
                self.discard();
                return outcome;
            }
            if !ended && self.client().batch_execute("ROLLBACK").await.is_err() {
                self.discard();
                return outcome;
            }
        }
        self.client.take(); // back to the pool
        outcome
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let turn = self.turn.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (cancel, tls) = (self.cancel.clone(), self.tls.clone());
                runtime.spawn(abandon(client, cancel, tls, turn));
            }
            Err(_) => discard(client),
        }
    }
}

/// A workspace export's connection, between [`Database::begin_export`] and the end of the
/// download. Dropped before [`ExportConnection::finish`] (the client went away, or a
/// query failed), it cancels what runs, rolls back and closes, as an abandoned request does.
pub struct ExportConnection {
    request: InFlight,
    /// BEGIN (repeatable read, read only), the role switch, the export's statement timeout.
    snapshot: String,
    claims: Value,
    tenant_id: Option<Uuid>,
}

impl ExportConnection {
    /// Opens the snapshot transaction in the request's tenant context (the gate again).
    pub async fn open_snapshot(&self) -> Result<(), Error> {
        let client = self.request.client();
        client.batch_execute(&self.snapshot).await?;
        let context: [(&(dyn ToSql + Sync), Type); 2] =
            [(&self.claims, Type::JSONB), (&self.tenant_id, Type::UUID)];
        client
            .execute_typed(BEGIN_REQUEST_SQL, &context)
            .await
            .map_err(setup)?;
        Ok(())
    }

    /// The rows of one of the plan's queries, as they arrive: the connection reads from the
    /// server only as fast as they are taken, so nothing piles up here.
    pub async fn rows(&self, sql: &str) -> Result<tokio_postgres::RowStream, Error> {
        let none: [(&(dyn ToSql + Sync), Type); 0] = [];
        Ok(self.request.client().query_typed_raw(sql, none).await?)
    }

    /// Commits the snapshot and returns the connection to the pool.
    pub async fn finish(self) -> Result<(), Error> {
        self.request.commit().await
    }
}

/// A CSV import's connection, inside its transaction, between [`Database::begin_import`]
/// and its commit or rollback. Dropped before either (the client went away), it cancels
/// what runs, rolls back and closes, as an abandoned request does.
pub struct ImportConnection {
    request: InFlight,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Takes an import's rows: `(line, cells)`.
pub type ImportRows = std::pin::Pin<Box<tokio_postgres::binary_copy::BinaryCopyInWriter>>;

impl ImportConnection {
    /// Starts the COPY into the staging table. tokio-postgres prepares it as a named
    /// statement (it has no unnamed COPY) and queues its Close right behind the COPY, so
    /// the statement ends inside the transaction and transaction-mode PgBouncer never sees
    /// it outlive it.
    pub async fn copy(&self) -> Result<ImportRows, Error> {
        let sink = self.request.client().copy_in(IMPORT_COPY_SQL).await?;
        Ok(Box::pin(
            tokio_postgres::binary_copy::BinaryCopyInWriter::new(
                sink,
                &[Type::INT8, Type::TEXT_ARRAY],
            ),
        ))
    }

    /// Checks and writes the staged rows (`crm_private.import_run`): the report.
    pub async fn run(
        &self,
        entity: &str,
        header: &[String],
        mapping: &Value,
        options: &Value,
    ) -> Result<Value, Error> {
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&entity, Type::TEXT),
            (&header, Type::TEXT_ARRAY),
            (mapping, Type::JSONB),
            (options, Type::JSONB),
        ];
        Ok(json_of(
            self.request
                .client()
                .query_typed_one(IMPORT_RUN_SQL, &params)
                .await,
        )?)
    }

    /// Commits, and returns the connection to the pool.
    pub async fn commit(self) -> Result<(), Error> {
        self.request.commit().await
    }

    /// Rolls back (nothing of the import stays), and returns the connection to the pool
    /// (or closes it, if even the rollback failed).
    pub async fn rollback(self) {
        let _ = self.fail(Error::Internal("rolled back".to_owned())).await;
    }

    /// Ends the transaction after `error` (rolled back, or the connection closed) and hands
    /// the error back.
    pub async fn fail(self, error: Error) -> Option<Error> {
        self.request.finish(Err(error), false).await.err()
    }
}

/// The request was dropped mid-transaction: cancel its statement, wait for a rollback (so it
/// has surely ended), then close the connection and only then give back the tenant's turn.
async fn abandon(client: Object, cancel: CancelToken, tls: MakeRustls, turn: Option<Turn>) {
    let cleaned = tokio::time::timeout(ABANDON_TIMEOUT, async {
        let canceled = cancel.cancel_query(tls).await.map_err(|e| e.to_string());
        // Even if the cancel request failed (a pooler that does not forward them), the
        // rollback waits for the statement to end, up to the timeout.
        let rolled_back = client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| e.to_string());
        canceled.and(rolled_back)
    })
    .await;
    match cleaned {
        Ok(Ok(())) => tracing::debug!("abandoned request: statement canceled and rolled back"),
        Ok(Err(e)) => tracing::warn!(error = %e, "abandoned request: cleanup failed"),
        Err(_) => tracing::warn!("abandoned request: cleanup timed out"),
    }
    discard(client);
    drop(turn);
}
