//! The connection pool and the one transaction each request runs in.
//!
//! Tenant context must never outlive its request on a pooled connection, so the edge sets
//! nothing at session level: the role switch and every setting `crm_private.begin_request`
//! makes are transaction-local, and a request that is abandoned half-way (client gone, error)
//! drops its `Transaction`, which rolls back before the connection is used again.
//!
//! Statements are sent with `query_typed` (unnamed statement, one round trip), never as named
//! prepared statements, so the edge also works behind PgBouncer/Supavisor in transaction mode
//! and an extension upgrade cannot leave stale prepared statements behind.
//!
//! A database outage must end in 503s, not hangs, and must heal by itself: connects and pool
//! waits have timeouts, clients whose connection failed are detached from the pool instead of
//! returned to it, and the pool's `Fast` recycling drops any client whose connection closed
//! while idle, so the pool opens fresh connections once the database is back.

use std::str::FromStr;
use std::time::Duration;

use axum::http::StatusCode;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde_json::{Map, Value};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use crate::catalog::Catalog;
use crate::config::{Config, ConfigError};
use crate::error::{is_connection_error, Error};
use crate::jwt::Verified;
use crate::rpc::Call;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The role switch, plus a time limit so no request can hold a pooled connection for long.
pub const SET_ROLE_SQL: &str = "SET LOCAL ROLE authenticated; SET LOCAL statement_timeout = '15s'";
pub const BEGIN_REQUEST_SQL: &str = "SELECT crm_private.begin_request($1::jsonb, $2::uuid)";

/// Builds the pool; connects lazily, so the edge starts even while the database is down.
pub fn pool(config: &Config) -> Result<Pool, Error> {
    let mut pg = tokio_postgres::Config::from_str(&config.database_url).map_err(|e| {
        ConfigError::Invalid {
            var: "AURA_AUTHENTICATOR_URL",
            reason: format!("not a valid connection string ({e})"),
        }
    })?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("aura-edge");
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(RECYCLE_TIMEOUT))
        .build()
        .map_err(|e| Error::Internal(format!("building the pool: {e}")))
}

/// Drops a client whose connection failed rather than returning it to the pool.
fn discard(client: Object) {
    drop(Object::take(client));
}

/// Runs `call` for `who` in its own transaction, read-only if asked; returns the JSON result.
///
/// `BEGIN` is retried once on a fresh connection when the connection was already dead: nothing
/// has run yet, so that is safe even for volatile functions.
pub async fn run_call(
    pool: &Pool,
    read_only: bool,
    who: &Verified,
    call: &Call,
    args: &Map<String, Value>,
) -> Result<Value, Error> {
    let args = Value::Object(args.clone());
    let mut retried = false;
    loop {
        let mut client = pool.get().await?;
        // Nested so that the transaction's borrow of `client` has ended when the outcome is judged.
        let begun = match client
            .build_transaction()
            .read_only(read_only)
            .start()
            .await
        {
            Ok(tx) => Ok(in_transaction(tx, who, call, &args).await),
            Err(e) => Err(e),
        };
        let outcome = match begun {
            Ok(outcome) => outcome,
            Err(e) if is_connection_error(&e) && !retried => {
                discard(client);
                retried = true;
                continue;
            }
            Err(e) => Err(Error::from(e)),
        };
        if let Err(e) = &outcome {
            if e.status_and_code().0 == StatusCode::SERVICE_UNAVAILABLE || client.is_closed() {
                discard(client);
            }
        }
        return outcome;
    }
}

async fn in_transaction(
    tx: deadpool_postgres::Transaction<'_>,
    who: &Verified,
    call: &Call,
    args: &Value,
) -> Result<Value, Error> {
    // A missing role, schema or function here means pg_crm is not (fully) installed: a
    // deployment problem, not a 404 for the client. Refusals (42501 etc.) map as usual.
    let setup = |e: tokio_postgres::Error| match Error::from(e) {
        Error::Db(db) if matches!(db.code.as_str(), "42883" | "42P01" | "3F000" | "42704") => {
            Error::Internal(format!("request setup failed: {}: {}", db.code, db.message))
        }
        other => other,
    };
    tx.batch_execute(SET_ROLE_SQL)
        .await
        .map_err(|e| match Error::from(e) {
            Error::Db(db) => Error::Internal(format!(
                "{SET_ROLE_SQL} failed: {}: {}",
                db.code, db.message
            )),
            other => other,
        })?;
    let context: [(&(dyn ToSql + Sync), Type); 2] =
        [(&who.claims, Type::JSONB), (&who.tenant_id, Type::UUID)];
    tx.execute_typed(BEGIN_REQUEST_SQL, &context)
        .await
        .map_err(setup)?;
    let arg: [(&(dyn ToSql + Sync), Type); 1] = [(args, Type::JSONB)];
    let params: &[_] = if call.takes_args { &arg } else { &[] };
    let value = if call.returns_void {
        tx.execute_typed(&call.sql, params).await?;
        Value::Null
    } else {
        tx.query_typed_one(&call.sql, params)
            .await?
            .try_get::<_, Option<Value>>(0)?
            .unwrap_or(Value::Null)
    };
    tx.commit().await?;
    Ok(value)
}

/// Reads the `api` catalog as the authenticator.
pub async fn load_catalog(pool: &Pool) -> Result<Catalog, Error> {
    let client = pool.get().await?;
    match Catalog::load(&client).await {
        Ok(catalog) => Ok(catalog),
        Err(e) if is_connection_error(&e) || client.is_closed() => {
            discard(client);
            Err(Error::Unavailable(e.to_string()))
        }
        // A catalog query failing otherwise is a deployment problem, not the client's.
        Err(e) => Err(Error::Internal(format!("loading the api catalog: {e}"))),
    }
}

/// `SELECT 1` through the pool within [`READY_TIMEOUT`].
pub async fn ready(pool: &Pool) -> Result<(), Error> {
    let check = async {
        let client = pool.get().await?;
        match client.simple_query("SELECT 1").await {
            Ok(_) => Ok(()),
            Err(e) => {
                discard(client);
                Err(Error::Unavailable(e.to_string()))
            }
        }
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(Error::Unavailable("readiness check timed out".to_owned())),
    }
}
