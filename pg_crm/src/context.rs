//! The per-request tenant context and its one gate, `crm_private.begin_request`.
//!
//! Every policy reads `app.current_tenant_id`, `app.current_user_id` and
//! `app.tenant_role` (through the SQL helpers in `sql/schema.sql`). Those settings are
//! registered here as superuser-only (`PGC_SUSET`), so a connection that has switched to
//! `authenticated` cannot forge them with `SET`; only `begin_request`, a SECURITY
//! DEFINER function, sets them, and only after checking live that the user is an active
//! member of an active tenant. A token's claims alone therefore never grant access.

use crate::domain::claims;
use crate::domain::roles::TenantRole;
use crate::error::{CrmError, OrRaise};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::JsonB;
use std::ffi::CString;

static TENANT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static USER_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TENANT_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

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

/// The one gate: checks the request's user against the database and, if allowed, sets
/// the tenant context for the rest of the transaction. Raises 42501 and sets nothing
/// otherwise. Not STRICT: missing claims or tenant must raise, not return NULL quietly.
#[pg_extern(
    volatile,
    parallel_unsafe,
    security_definer,
    requires = ["schema"]
)]
#[search_path(pg_catalog, pg_temp)]
fn begin_request(claims: Option<JsonB>, tenant: Option<pgrx::Uuid>) {
    let ctx = check_request(claims.as_ref().map(|c| &c.0), tenant).or_raise();
    // SET LOCAL (not set_config) is what Citus propagates to its workers. The values come
    // from uuid and enum-checked columns, so formatting them into the statement is safe.
    Spi::run(&format!(
        "SET LOCAL app.current_tenant_id = '{}'; SET LOCAL app.current_user_id = '{}'; SET LOCAL app.tenant_role = '{}'",
        ctx.tenant_id, ctx.user_id, ctx.role
    ))
    .or_raise();
    // Supabase's convention, so auth.uid() and auth.jwt() work inside api functions.
    let claims_text = claims.map(|c| c.0.to_string()).unwrap_or_default();
    Spi::run_with_args(
        "SELECT pg_catalog.set_config('request.jwt.claims', $1, true)",
        &[claims_text.into()],
    )
    .or_raise();
}

fn check_request(
    claims: Option<&serde_json::Value>,
    tenant: Option<pgrx::Uuid>,
) -> Result<Context, CrmError> {
    let user = claims
        .and_then(claims::subject)
        .ok_or_else(|| CrmError::Forbidden {
            message: "the request carries no valid user".into(),
            hint: Some("claims.sub must be the user's uuid"),
        })?;
    let tenant = tenant.ok_or_else(|| CrmError::Forbidden {
        message: "no tenant selected for this request".into(),
        hint: Some("the token's app_metadata.tenant_id names the tenant"),
    })?;
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT m.tenant_id::text, m.user_id::text, m.role, m.status, t.status
               FROM core.memberships m
               JOIN core.tenants t ON t.id = m.tenant_id
               JOIN auth.users u ON u.id = m.user_id
              WHERE m.tenant_id = $1 AND m.user_id = $2::uuid
                AND u.deleted_at IS NULL
                AND (u.banned_until IS NULL OR u.banned_until <= now())",
            Some(1),
            &[tenant.into(), user.as_str().into()],
        )?;
        if rows.is_empty() {
            return Ok::<_, pgrx::spi::Error>(None);
        }
        let r = rows.first();
        Ok(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
            r.get::<String>(4)?.unwrap_or_default(),
            r.get::<String>(5)?.unwrap_or_default(),
        )))
    })
    .or_raise();
    // Non-members learn nothing about the tenant; members learn why they are locked out.
    let (tenant_id, user_id, role, member_status, tenant_status) =
        row.ok_or_else(|| CrmError::forbidden("not a member of this tenant"))?;
    if tenant_status != "active" {
        return Err(CrmError::forbidden("this workspace is suspended"));
    }
    if member_status != "active" {
        return Err(CrmError::forbidden(
            "your membership of this workspace is deactivated",
        ));
    }
    let role = role
        .parse::<TenantRole>()
        .map_err(|_| CrmError::forbidden("not a member of this tenant"))?;
    Ok(Context {
        tenant_id,
        user_id,
        role,
    })
}
