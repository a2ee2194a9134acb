//! Operator functions for the DBA (superuser): create a tenant with its first admin, add
//! members, suspend and reactivate tenants, deactivate members. They live outside `api`
//! (EXECUTE is granted to nobody), so no HTTP caller can reach them.
//!
//! Accounts are matched by lowercased email in `auth.users`; a missing one is created
//! without a password (the member sets one through the auth flow).

use crate::domain::roles::TenantRole;
use crate::domain::{timezone, workspace};
use crate::error::{CrmError, OrRaise};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};

const NIL_INSTANCE: &str = "00000000-0000-0000-0000-000000000000";

/// The value of an `INSERT … RETURNING`, which always yields a row: its absence would be a
/// bug, reported as an internal error (XX000).
fn returned<T: pgrx::FromDatum + pgrx::IntoDatum>(
    result: Result<Option<T>, pgrx::spi::Error>,
    what: &str,
) -> T {
    result
        .or_raise()
        .unwrap_or_else(|| panic!("pg_crm: {what} was not returned"))
}

fn find_or_create_user(email: &str) -> Uuid {
    let existing = Spi::get_one_with_args::<Uuid>(
        "SELECT id FROM auth.users WHERE lower(email) = $1 AND NOT is_sso_user ORDER BY created_at LIMIT 1",
        &[email.into()],
    );
    if let Ok(Some(id)) = existing {
        return id;
    }
    returned(
        Spi::get_one_with_args::<Uuid>(
        "INSERT INTO auth.users (instance_id, id, aud, role, email, raw_app_meta_data,
                                 raw_user_meta_data, created_at, updated_at, is_sso_user, is_anonymous)
         VALUES ($1::uuid, gen_random_uuid(), 'authenticated', 'authenticated', $2,
                 '{\"provider\": \"email\", \"providers\": [\"email\"]}', '{}', now(), now(), false, false)
         RETURNING id",
        &[NIL_INSTANCE.into(), email.into()],
        ),
        "the new user's id",
    )
}

fn insert_membership(tenant_id: Uuid, user_id: Uuid, role: TenantRole, display_name: Option<&str>) {
    let display_name = display_name
        .map(|d| {
            workspace::tenant_name(d)
                .map_err(|_| CrmError::invalid("display_name", "must be 1-200 characters"))
        })
        .transpose()
        .or_raise();
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM core.memberships WHERE tenant_id = $1 AND user_id = $2)",
        &[tenant_id.into(), user_id.into()],
    )
    .or_raise()
    .unwrap_or(false);
    if exists {
        CrmError::Conflict("this user is already a member of the tenant".into()).raise();
    }
    Spi::run_with_args(
        "INSERT INTO core.memberships (tenant_id, user_id, role, display_name) VALUES ($1, $2, $3, $4)",
        &[tenant_id.into(), user_id.into(), role.as_str().into(), display_name.into()],
    )
    .or_raise();
}

/// Create a tenant and its first admin. Returns `{tenant_id, admin_user_id}`.
#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn create_tenant(
    name: &str,
    slug: &str,
    admin_email: &str,
    admin_display_name: default!(Option<&str>, "NULL"),
    timezone: default!(&str, "'UTC'"),
) -> JsonB {
    let name = workspace::tenant_name(name).or_raise();
    let slug = workspace::slug(slug).or_raise();
    let email = workspace::email("admin_email", admin_email).or_raise();
    let timezone = timezone::canonical("timezone", timezone).or_raise();
    crate::workspace::server_knows_zone("timezone", timezone).or_raise();
    let taken = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM core.tenants WHERE slug = $1)",
        &[slug.as_str().into()],
    )
    .or_raise()
    .unwrap_or(false);
    if taken {
        CrmError::Conflict(format!("a tenant with slug \"{slug}\" already exists")).raise();
    }
    let tenant_id = returned(
        Spi::get_one_with_args::<Uuid>(
            "INSERT INTO core.tenants (name, slug, timezone) VALUES ($1, $2, $3) RETURNING id",
            &[name.as_str().into(), slug.as_str().into(), timezone.into()],
        ),
        "the new tenant's id",
    );
    // The standard pipeline (0.4.0's SQL; a database whose upgrade is not finished yet has
    // an older script under this library, and no pipeline).
    let has_pipeline = Spi::get_one::<bool>(
        "SELECT to_regprocedure('crm_private.seed_pipeline(uuid)') IS NOT NULL",
    )
    .or_raise()
    .unwrap_or(false);
    if has_pipeline {
        Spi::run_with_args("SELECT crm_private.seed_pipeline($1)", &[tenant_id.into()]).or_raise();
    }
    let user_id = find_or_create_user(&email);
    insert_membership(tenant_id, user_id, TenantRole::Admin, admin_display_name);
    JsonB(serde_json::json!({
        "tenant_id": tenant_id.to_string(),
        "admin_user_id": user_id.to_string(),
    }))
}

fn require_tenant(tenant_id: Uuid) {
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM core.tenants WHERE id = $1)",
        &[tenant_id.into()],
    )
    .or_raise()
    .unwrap_or(false);
    if !exists {
        CrmError::NotFound("no such tenant".into()).raise();
    }
}

/// Add a user (found or created by email) to a tenant with a role. Returns the user id.
#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn add_member(
    tenant_id: Uuid,
    email: &str,
    role: &str,
    display_name: default!(Option<&str>, "NULL"),
) -> Uuid {
    let email = workspace::email("email", email).or_raise();
    let role = role
        .parse::<TenantRole>()
        .map_err(|_| CrmError::invalid("role", "must be admin, manager or rep"))
        .or_raise();
    require_tenant(tenant_id);
    let user_id = find_or_create_user(&email);
    insert_membership(tenant_id, user_id, role, display_name);
    user_id
}

fn set_tenant_status(tenant_id: Uuid, status: &str) {
    let updated = Spi::get_one_with_args::<bool>(
        "UPDATE core.tenants SET status = $2 WHERE id = $1 RETURNING true",
        &[tenant_id.into(), status.into()],
    );
    if !matches!(updated, Ok(Some(true))) {
        CrmError::NotFound("no such tenant".into()).raise();
    }
}

/// Suspend a tenant: data stays, every member loses access on their next request (F1.5).
#[pg_extern(volatile, parallel_unsafe, strict, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn suspend_tenant(tenant_id: Uuid) {
    set_tenant_status(tenant_id, "suspended");
}

/// Lift a suspension.
#[pg_extern(volatile, parallel_unsafe, strict, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn reactivate_tenant(tenant_id: Uuid) {
    set_tenant_status(tenant_id, "active");
}

/// Set a member's status to `active` or `deactivated` (F3.4): a deactivated member loses
/// access on their next request; their records stay.
#[pg_extern(volatile, parallel_unsafe, strict, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn set_member_status(tenant_id: Uuid, user_id: Uuid, status: &str) {
    if !matches!(status, "active" | "deactivated") {
        CrmError::invalid("status", "must be active or deactivated").raise();
    }
    let updated = Spi::get_one_with_args::<bool>(
        "UPDATE core.memberships SET status = $3 WHERE tenant_id = $1 AND user_id = $2 RETURNING true",
        &[tenant_id.into(), user_id.into(), status.into()],
    );
    if !matches!(updated, Ok(Some(true))) {
        CrmError::NotFound("no such member in this tenant".into()).raise();
    }
}
