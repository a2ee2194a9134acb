//! The per-request tenant context and its one gate, `crm_private.begin_request`.
//!
//! Every policy reads `app.current_tenant_id`, `app.current_user_id` and
//! `app.tenant_role` (through the SQL helpers in `sql/schema.sql`). Those settings are
//! registered here as superuser-only (`PGC_SUSET`), so a connection that has switched to
//! `authenticated` cannot forge them with `SET`; only `begin_request`, a SECURITY
//! DEFINER function, sets them, and only after checking live that the user is an active
//! member of an active tenant, in an active session (`claims.session_id` names a row of
//! `auth.sessions` that is neither ended nor idle past the inactivity timeout). A token's
//! claims alone therefore never grant access; logout, bans, deactivation and suspension
//! take effect on the next request.
//!
//! The gate runs on every request, so it keeps its two statements planned per connection
//! (`SPI_keepplan`): one reads the membership, tenant, session and the role's permissions,
//! one sets the context (`set_config(..., true)`: transaction-local, like SET LOCAL). For
//! Citus, which propagates only SET LOCAL statements, `pg_crm.gate_set_local = on` adds
//! them (parsed per call, about 0.1 ms).

use crate::domain::claims;
use crate::domain::lifecycle::{self, Access};
use crate::domain::roles::TenantRole;
use crate::error::{CrmError, OrRaise};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::JsonB;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::RefCell;
use std::ffi::CString;

static TENANT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static USER_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TENANT_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static PERMISSIONS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static PENDING_DELETION_TENANT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
static REQUEST_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CLIENT_IP: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static AUDIT_MAINTENANCE: GucSetting<bool> = GucSetting::<bool>::new(false);
static ERASING: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_crm.gate_set_local`: whether the gate also sets the context with SET LOCAL
/// statements (what Citus propagates to its workers), at about 0.1 ms per request.
static SET_LOCAL: GucSetting<bool> = GucSetting::<bool>::new(false);

pub(crate) fn register_settings() {
    let define = |name, short, setting| {
        GucRegistry::define_string_guc(
            name,
            short,
            c"Set only by crm_private.begin_request, transaction-locally; read by row-level security.",
            setting,
            GucContext::Suset,
            GucFlags::DISALLOW_IN_FILE | GucFlags::DISALLOW_IN_AUTO_FILE,
        )
    };
    define(
        c"app.current_tenant_id",
        c"Tenant of the current request.",
        &TENANT_ID,
    );
    define(
        c"app.current_user_id",
        c"User of the current request.",
        &USER_ID,
    );
    define(
        c"app.tenant_role",
        c"Role of the current user in the current tenant.",
        &TENANT_ROLE,
    );
    GucRegistry::define_bool_guc(
        c"pg_crm.gate_set_local",
        c"Whether crm_private.begin_request sets the tenant context with SET LOCAL statements too.",
        c"Citus propagates SET LOCAL (with citus.propagate_set_commands = 'local') but not set_config to its workers: turn this on where tenant tables are distributed. It costs about 0.1 ms per request.",
        &SET_LOCAL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_crm.request_id",
        c"The edge's x-request-id of the current request, recorded with its audit entries.",
        c"Set per transaction (SET LOCAL) by the edge.",
        &REQUEST_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_crm.client_ip",
        c"The client address of the current request, recorded with its audit entries.",
        c"Set per transaction (SET LOCAL) by the edge.",
        &CLIENT_IP,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_crm.audit_maintenance",
        c"Set by pg_crm's own partition upkeep and retention job while they remove audit rows.",
        c"The audit log refuses DELETE otherwise, even for its owner.",
        &AUDIT_MAINTENANCE,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE | GucFlags::DISALLOW_IN_AUTO_FILE,
    );
    GucRegistry::define_bool_guc(
        c"pg_crm.erasing",
        c"Set by api.erase_contact while it erases a person's data.",
        c"Activities refuse changes to their text and custom field values are checked otherwise.",
        &ERASING,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE | GucFlags::DISALLOW_IN_AUTO_FILE,
    );
    define(
        c"app.pending_deletion_tenant",
        c"The workspace waiting for deletion whose admin this request is (see api.cancel_workspace_deletion).",
        &PENDING_DELETION_TENANT,
    );
    define(
        c"app.permissions",
        c"Permissions of the current user's role, as ,key,key,.",
        &PERMISSIONS,
    );
}

/// The settings [`setting_text`] reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Setting {
    Tenant,
    User,
    RequestId,
}

/// A context setting's value in this transaction (None when unset or ended).
pub(crate) fn setting_text(which: Setting) -> Option<String> {
    setting(match which {
        Setting::Tenant => &TENANT_ID,
        Setting::User => &USER_ID,
        Setting::RequestId => &REQUEST_ID,
    })
}

/// The current request's context, as `begin_request` set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub tenant_id: String,
    pub user_id: String,
    pub role: TenantRole,
}

fn setting(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get()
        .and_then(|v| v.into_string().ok())
        .filter(|v| !v.is_empty())
}

impl Context {
    /// The context of this transaction, or 42501 when there is none.
    pub fn current() -> Result<Context, CrmError> {
        let none = || CrmError::Forbidden {
            message: "no tenant context for this request".into(),
            hint: Some("call crm_private.begin_request(claims, tenant) first in this transaction"),
        };
        Ok(Context {
            tenant_id: setting(&TENANT_ID).ok_or_else(none)?,
            user_id: setting(&USER_ID).ok_or_else(none)?,
            role: setting(&TENANT_ROLE)
                .and_then(|r| r.parse().ok())
                .ok_or_else(none)?,
        })
    }
}

/// The gate's one query, planned once per connection and kept (`SPI_keepplan`): the
/// membership with its role's permissions, the tenant's status, and whether the token's
/// session is live (not logged out, not past `not_after`, used within the inactivity
/// timeout). The liveness rule is written out here rather than calling
/// `crm_private.session_is_live`, which /user and the refresh grant use: measured with
/// `make bench`, the call in this plan cost the gate 15-30% of its throughput. Keep the two
/// (and the 30-day default in `crm_private.session_inactivity_seconds`) in step. Every name is schema-qualified; the plan is re-made by PostgreSQL
/// itself when a table it reads changes.
const GATE_SQL: &str = "
SELECT m.tenant_id::text, m.user_id::text, m.role, m.status, t.status,
       EXISTS (SELECT 1 FROM auth.sessions s
                WHERE s.id = $3 AND s.user_id = $2
                  AND (s.not_after IS NULL OR s.not_after > pg_catalog.now())
                  AND coalesce(s.updated_at, s.created_at) > pg_catalog.now()
                      - pg_catalog.make_interval(secs => coalesce(
                          (SELECT (c.value #>> '{}')::double precision
                             FROM crm_private.auth_settings c
                            WHERE c.key = 'session_inactivity_timeout'), 2592000))),
       coalesce((SELECT pg_catalog.string_agg(rp.permission, ',' ORDER BY rp.permission)
                   FROM core.role_permissions rp WHERE rp.role = m.role), '')
  FROM core.memberships m
  JOIN core.tenants t ON t.id = m.tenant_id
  JOIN auth.users u ON u.id = m.user_id
 WHERE m.tenant_id = $1 AND m.user_id = $2
   AND u.deleted_at IS NULL
   AND (u.banned_until IS NULL OR u.banned_until <= pg_catalog.now())";

thread_local! {
    static GATE_PLAN: RefCell<Option<OwnedPreparedStatement>> = const { RefCell::new(None) };
    static SETTINGS_PLAN: RefCell<Option<OwnedPreparedStatement>> = const { RefCell::new(None) };
}

/// Runs a kept statement, preparing (and keeping) it on first use in this backend.
fn with_kept<R>(
    slot: &'static std::thread::LocalKey<RefCell<Option<OwnedPreparedStatement>>>,
    sql: &'static str,
    types: &[PgOid],
    run: impl FnOnce(&SpiClient<'_>, &OwnedPreparedStatement) -> Result<R, pgrx::spi::Error>,
) -> Result<R, pgrx::spi::Error> {
    Spi::connect(|client| {
        slot.with_borrow_mut(|kept| {
            if kept.is_none() {
                *kept = Some(client.prepare(sql, types)?.keep());
            }
            run(client, kept.as_ref().expect("prepared above"))
        })
    })
}

/// The one gate: checks the request's user and session against the database and, if
/// allowed, sets the tenant context for the rest of the transaction. Raises 42501 and sets
/// nothing otherwise. Not STRICT: missing claims or tenant must raise, not return NULL
/// quietly.
#[pg_extern(
    volatile,
    parallel_unsafe,
    security_definer,
    requires = ["schema", "auth_schema"]
)]
#[search_path(pg_catalog, pg_temp)]
fn begin_request(claims: Option<JsonB>, tenant: Option<pgrx::Uuid>) {
    let checked = check_request(claims.as_ref().map(|c| &c.0), tenant);
    if let Err(refusal) = &checked {
        record_refusal(claims.as_ref().map(|c| &c.0), tenant, refusal);
    }
    let claims_text = claims.as_ref().map(|c| c.0.to_string()).unwrap_or_default();
    let (ctx, permissions) = match checked.or_raise() {
        Gate::Member(ctx, permissions) => (ctx, permissions),
        Gate::DeletionPending { tenant_id, user_id } => {
            // Only the user and the workspace waiting for deletion: no tenant, so every
            // policy fails closed; api.cancel_workspace_deletion reads these two.
            Spi::run_with_args(
                "SELECT pg_catalog.set_config('app.current_user_id', $1, true), pg_catalog.set_config('app.pending_deletion_tenant', $2, true), pg_catalog.set_config('request.jwt.claims', $3, true), pg_catalog.set_config('app.current_tenant_id', '', true), pg_catalog.set_config('app.tenant_role', '', true), pg_catalog.set_config('app.permissions', '', true)",
                &[user_id.as_str().into(), tenant_id.as_str().into(), claims_text.as_str().into()],
            )
            .or_raise();
            return;
        }
    };
    let permissions = format!(",{permissions},");
    if SET_LOCAL.get() {
        // For Citus, which propagates SET LOCAL (not set_config) to its workers. The values
        // come from uuid columns, the role table and the permission keys' CHECK (letters,
        // dots and underscores), so formatting them into the statement is safe. Parsed on
        // every call: about 0.1 ms more per request than the kept statement below.
        Spi::run(&format!(
            "SET LOCAL app.current_tenant_id = '{}'; SET LOCAL app.current_user_id = '{}'; SET LOCAL app.tenant_role = '{}'; SET LOCAL app.permissions = '{permissions}'",
            ctx.tenant_id, ctx.user_id, ctx.role
        ))
        .or_raise();
    }
    // One kept statement sets the context (transaction-locally, as SET LOCAL does) and,
    // Supabase's convention, request.jwt.claims, so auth.uid() and auth.jwt() work.
    let role = ctx.role.to_string();
    let text = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
    with_kept(
        &SETTINGS_PLAN,
        SETTINGS_SQL,
        &[text, text, text, text, text],
        |client, plan| {
            client
                .select(
                    plan,
                    Some(1),
                    &[
                        ctx.tenant_id.as_str().into(),
                        ctx.user_id.as_str().into(),
                        role.as_str().into(),
                        permissions.as_str().into(),
                        claims_text.as_str().into(),
                    ],
                )
                .map(|_| ())
        },
    )
    .or_raise();
}

/// A refusal is a security event (F5.6), pushed to pg_crm's event queue so it outlives the
/// transaction the refusal rolls back: the tenant and user the request claimed, and why.
fn record_refusal(
    claims: Option<&serde_json::Value>,
    tenant: Option<pgrx::Uuid>,
    refusal: &CrmError,
) {
    let user = claims
        .and_then(claims::subject)
        .and_then(|s| claims::uuid_bytes(&s));
    let reason = match refusal {
        CrmError::Forbidden { message, .. } => message.to_string(),
        other => other.to_string(),
    };
    let detail = serde_json::json!({ "reason": reason }).to_string();
    let request_id = setting(&REQUEST_ID);
    crate::events::push(&crate::events::Event {
        stream: crate::events::Stream::Security,
        kind: "gate_refused",
        tenant: tenant.map(|t| *t.as_bytes()),
        user,
        request_id: request_id.as_deref(),
        detail: &detail,
    });
}

const SETTINGS_SQL: &str = "SELECT pg_catalog.set_config('app.current_tenant_id', $1, true), pg_catalog.set_config('app.current_user_id', $2, true), pg_catalog.set_config('app.tenant_role', $3, true), pg_catalog.set_config('app.permissions', $4, true), pg_catalog.set_config('request.jwt.claims', $5, true)";

type GateRow = (String, String, String, String, String, bool, String);

/// What the gate lets a request do.
enum Gate {
    /// A member's full context, with their role's permissions.
    Member(Context, String),
    /// An admin of a workspace waiting for deletion (see `domain::lifecycle`).
    DeletionPending { tenant_id: String, user_id: String },
}

fn check_request(
    claims: Option<&serde_json::Value>,
    tenant: Option<pgrx::Uuid>,
) -> Result<Gate, CrmError> {
    let user = claims
        .and_then(claims::subject)
        .ok_or_else(|| CrmError::Forbidden {
            message: "the request carries no valid user".into(),
            hint: Some("claims.sub must be the user's uuid"),
        })?;
    let session = claims
        .and_then(claims::session)
        .ok_or_else(|| CrmError::Forbidden {
            message: "the request carries no session".into(),
            hint: Some("claims.session_id must name a session (sign in through /auth/v1)"),
        })?;
    let tenant = tenant.ok_or_else(|| CrmError::Forbidden {
        message: "no tenant selected for this request".into(),
        hint: Some("the token's app_metadata.tenant_id names the tenant"),
    })?;
    let user_uuid = pgrx::Uuid::from_bytes(claims::uuid_bytes(&user).unwrap_or_default());
    let session_uuid = pgrx::Uuid::from_bytes(claims::uuid_bytes(&session).unwrap_or_default());
    let uuid_oid = PgOid::BuiltIn(PgBuiltInOids::UUIDOID);
    let row: Option<GateRow> = with_kept(
        &GATE_PLAN,
        GATE_SQL,
        &[uuid_oid, uuid_oid, uuid_oid],
        |client, plan| {
            let rows = client.select(
                plan,
                Some(1),
                &[tenant.into(), user_uuid.into(), session_uuid.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let r = rows.first();
            let text = |i| r.get::<String>(i).map(Option::unwrap_or_default);
            Ok(Some((
                text(1)?,
                text(2)?,
                text(3)?,
                text(4)?,
                text(5)?,
                r.get::<bool>(6)?.unwrap_or(false),
                text(7)?,
            )))
        },
    )
    .or_raise();
    // Non-members learn nothing about the tenant; members learn why they are locked out.
    let (tenant_id, user_id, role, member_status, tenant_status, session_live, permissions) =
        row.ok_or_else(|| CrmError::forbidden("not a member of this tenant"))?;
    if !session_live {
        return Err(CrmError::Forbidden {
            message: "this session has ended".into(),
            hint: Some("sign in again"),
        });
    }
    let role = role
        .parse::<TenantRole>()
        .map_err(|_| CrmError::forbidden("not a member of this tenant"))?;
    match lifecycle::access(&tenant_status, &member_status, role) {
        Access::Full => Ok(Gate::Member(
            Context {
                tenant_id,
                user_id,
                role,
            },
            permissions,
        )),
        Access::DeletionPending => Ok(Gate::DeletionPending { tenant_id, user_id }),
        Access::Refused(message) => Err(CrmError::forbidden(message)),
    }
}
