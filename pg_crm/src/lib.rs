//! pg_crm: Aura's CRM inside PostgreSQL.
//!
//! Tenant isolation is enforced by PostgreSQL itself: every tenant table has forced
//! row-level security whose policies read a per-transaction tenant context, and that
//! context can only be established by [`context::begin_request`] after a live check of
//! the caller's membership. The hand-written SQL (schemas, tables, policies, grants,
//! `api` wrappers) lives in the workspace's `sql/` directory and is included here; the
//! rules that are more than a query (permissions, validation) are plain Rust in
//! [`domain`], tested without a database.

use pgrx::prelude::*;

pub mod archive;
pub mod auth;
pub mod context;
pub mod crm;
pub mod domain;
pub mod error;
pub mod events;
pub mod operator;
pub mod worker;
pub mod workspace;

::pgrx::pg_module_magic!(name, version);

// The script order: the guard (is crm_private safe to install into?), compat objects, then
// the schema, then the Rust functions (each `requires = ["schema"]`), then the `api` SQL
// that wraps them, then every grant.
//
// `crm_private` (internals: request-context helpers, business rules, operator functions;
// never exposed over HTTP) is the extension's own schema, named in `pg_crm.control`:
// CREATE EXTENSION creates it before this script runs and puts it first on the script's
// search_path, which is where every `#[pg_extern]` without a schema of its own lands.
extension_sql_file!(
    "../../sql/install_guard.sql",
    name = "install_guard",
    bootstrap
);
extension_sql_file!(
    "../../sql/supabase_compat.sql",
    name = "supabase_compat",
    requires = ["install_guard"]
);
extension_sql_file!(
    "../../sql/schema.sql",
    name = "schema",
    requires = ["supabase_compat"]
);
extension_sql_file!(
    "../../sql/auth_schema.sql",
    name = "auth_schema",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/auth.sql",
    name = "auth",
    requires = [
        "auth_schema",
        auth::password_hash,
        auth::password_matches,
        auth::password_problem,
        auth::random_token,
        auth::random_digits,
        auth::normalize_email,
        auth::slugify,
        auth::url_encode
    ]
);
extension_sql_file!("../../sql/team.sql", name = "team", requires = ["auth"]);
extension_sql_file!(
    "../../sql/api.sql",
    name = "api",
    requires = ["schema", workspace::update_workspace]
);
extension_sql_file!(
    "../../sql/crm_schema.sql",
    name = "crm_schema",
    requires = [
        "team",
        crm::currency_known,
        crm::default_stages,
        crm::stage_transition,
        crm::custom_fields_check
    ]
);
extension_sql_file!(
    "../../sql/crm.sql",
    name = "crm",
    requires = [
        "crm_schema",
        crm::fields_check,
        crm::custom_field_definition,
        crm::contact_duplicate,
        crm::organization_duplicate
    ]
);
extension_sql_file!(
    "../../sql/ratelimit.sql",
    name = "ratelimit",
    requires = ["crm"]
);
extension_sql_file!(
    "../../sql/deal_totals.sql",
    name = "deal_totals",
    // After ratelimit too: the order of pg_extension_config_dump calls must be the one an
    // upgrade from 0.5.0 makes.
    requires = ["crm", "ratelimit"]
);
extension_sql_file!(
    "../../sql/audit.sql",
    name = "audit",
    // Last before the grants: its tables are registered for pg_dump after 0.6.0's, as the
    // upgrade to 0.7.0 registers them.
    requires = ["deal_totals"]
);
extension_sql_file!(
    "../../sql/events.sql",
    name = "events",
    requires = ["audit", events::log_access, events::record_security_event]
);
extension_sql_file!(
    "../../sql/lifecycle.sql",
    name = "lifecycle",
    requires = ["events", archive::archive_directory]
);
extension_sql_file!(
    "../../sql/data.sql",
    name = "data",
    requires = ["lifecycle"]
);
extension_sql_file!(
    "../../sql/import.sql",
    name = "import",
    requires = [
        "data",
        crm::import_targets,
        crm::import_targets_checked,
        crm::import_row
    ]
);
extension_sql_file!("../../sql/grants.sql", name = "grants", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    context::register_settings();
    events::init();
    archive::register();
    worker::register();
}

/// `#[pg_test]`s: only what needs a live backend (SPI, settings, roles). Everything else
/// is a plain `#[test]` in `domain`, or a case in the `pgrx-tests/` regression suite.
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::context::Context;
    use crate::domain::roles::TenantRole;
    use crate::error::CrmError;
    use pgrx::prelude::*;
    use pgrx::JsonB;

    /// A tenant with its admin: (tenant id, admin user id).
    fn tenant(slug: &str) -> (String, String) {
        let created = Spi::get_one_with_args::<JsonB>(
            "SELECT crm_private.create_tenant('Test', $1, $1 || '@example.test')",
            &[slug.into()],
        )
        .expect("create_tenant")
        .expect("a result");
        let field = |k: &str| created.0[k].as_str().expect(k).to_string();
        (field("tenant_id"), field("admin_user_id"))
    }

    /// A session for a user, as a sign-in makes.
    fn session(user: &str) -> String {
        Spi::get_one_with_args::<String>(
            "SELECT crm_private.create_session($1::uuid)::text",
            &[user.into()],
        )
        .expect("create_session")
        .expect("a session id")
    }

    fn begin_request_in(user: &str, tenant: &str, session: &str) -> Result<(), pgrx::spi::Error> {
        Spi::run_with_args(
            "SELECT crm_private.begin_request(jsonb_build_object('sub', $1::text, 'role', 'authenticated', 'session_id', $3::text), $2::uuid)",
            &[user.into(), tenant.into(), session.into()],
        )
    }

    fn begin_request(user: &str, tenant: &str) -> Result<(), pgrx::spi::Error> {
        let session = session(user);
        Spi::run("SET LOCAL ROLE authenticated")?;
        begin_request_in(user, tenant, &session)
    }

    #[pg_test]
    fn begin_request_sets_the_context_from_the_membership() {
        let (tenant_id, user_id) = tenant("ctx");
        begin_request(&user_id, &tenant_id).unwrap();
        // The SET LOCALs made inside the SECURITY DEFINER function (whose own SET clause
        // pins search_path) outlive the call, for the rest of the transaction.
        let ctx = Context::current().expect("a context");
        assert_eq!(
            ctx,
            Context {
                tenant_id: tenant_id.clone(),
                user_id: user_id.clone(),
                role: TenantRole::Admin
            }
        );
        let sub = Spi::get_one::<String>("SELECT auth.jwt() ->> 'sub'").unwrap();
        assert_eq!(sub.as_deref(), Some(user_id.as_str()));
        let visible = Spi::get_one::<i64>("SELECT count(*) FROM core.tenants").unwrap();
        assert_eq!(visible, Some(1));
    }

    #[pg_test]
    fn without_begin_request_there_is_no_context() {
        let _ = tenant("none");
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        assert!(matches!(
            Context::current(),
            Err(CrmError::Forbidden { .. })
        ));
        let visible = Spi::get_one::<i64>("SELECT count(*) FROM core.tenants").unwrap();
        assert_eq!(visible, Some(0));
    }

    #[pg_test(error = "not a member of this tenant")]
    fn begin_request_refuses_another_tenant() {
        let (_, user_a) = tenant("aaa");
        let (tenant_b, _) = tenant("bbb");
        let _ = begin_request(&user_a, &tenant_b);
    }

    #[pg_test(error = "this session has ended")]
    fn begin_request_refuses_an_ended_session() {
        let (tenant_id, user_id) = tenant("ended");
        let session = session(&user_id);
        Spi::run("DELETE FROM auth.sessions").unwrap();
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        let _ = begin_request_in(&user_id, &tenant_id, &session);
    }

    #[pg_test(error = "this session has ended")]
    fn begin_request_refuses_a_session_idle_past_the_timeout() {
        let (tenant_id, user_id) = tenant("idle");
        let session = session(&user_id);
        Spi::run("UPDATE auth.sessions SET created_at = now() - interval '31 days', updated_at = now() - interval '31 days'").unwrap();
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        let _ = begin_request_in(&user_id, &tenant_id, &session);
    }

    #[pg_test(error = "this session has ended")]
    fn begin_request_refuses_another_users_session() {
        let (tenant_id, user_id) = tenant("mine");
        let (_, other) = tenant("theirs");
        let session = session(&other);
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        let _ = begin_request_in(&user_id, &tenant_id, &session);
    }

    /// The permission table in Rust (`TenantRole::may`) and the rows the gate loads agree.
    #[pg_test]
    fn rust_and_sql_permission_tables_agree() {
        use crate::domain::roles::Action;
        for role in TenantRole::ALL {
            let mut sql: Vec<String> = Spi::get_one_with_args::<Vec<String>>(
                "SELECT coalesce(array_agg(permission ORDER BY permission), '{}') FROM core.role_permissions WHERE role = $1",
                &[role.as_str().into()],
            )
            .unwrap()
            .unwrap_or_default();
            sql.sort();
            let mut rust: Vec<String> = Action::ALL
                .iter()
                .filter(|a| role.may(**a))
                .map(|a| a.key().to_owned())
                .collect();
            rust.sort();
            assert_eq!(rust, sql, "{role}");
        }
        let all: i64 = Spi::get_one("SELECT count(*) FROM core.permissions")
            .unwrap()
            .unwrap();
        assert_eq!(all as usize, Action::ALL.len());
    }

    /// With `pg_crm.gate_set_local` (for Citus) the context is the same, set with SET LOCAL
    /// statements too.
    #[pg_test]
    fn the_gate_can_set_the_context_with_set_local() {
        let (tenant_id, user_id) = tenant("setlocal");
        Spi::run("SET LOCAL pg_crm.gate_set_local = on").unwrap();
        begin_request(&user_id, &tenant_id).unwrap();
        let ctx = Context::current().expect("a context");
        assert_eq!(
            (ctx.tenant_id, ctx.user_id, ctx.role),
            (tenant_id, user_id, TenantRole::Admin)
        );
        let may =
            Spi::get_one::<bool>("SELECT crm_private.has_permission('workspace.update')").unwrap();
        assert_eq!(may, Some(true));
    }

    #[pg_test]
    fn the_gate_loads_the_roles_permissions() {
        let (tenant_id, user_id) = tenant("perm");
        begin_request(&user_id, &tenant_id).unwrap();
        let may =
            Spi::get_one::<bool>("SELECT crm_private.has_permission('users.manage')").unwrap();
        assert_eq!(may, Some(true));
        let may = Spi::get_one::<bool>("SELECT crm_private.has_permission('users.man')").unwrap();
        assert_eq!(may, Some(false));
    }

    /// The zone list compiled into the extension names only zones this server knows, so a
    /// stored workspace timezone always works in `AT TIME ZONE`.
    #[pg_test]
    fn every_accepted_time_zone_is_known_to_the_server() {
        let known: std::collections::HashSet<String> =
            Spi::get_one::<Vec<String>>("SELECT array_agg(name::text) FROM pg_timezone_names")
                .unwrap()
                .unwrap_or_default()
                .into_iter()
                .collect();
        let unknown: Vec<&str> = crate::domain::timezone::all()
            .filter(|zone| !known.contains(*zone))
            .collect();
        assert!(unknown.is_empty(), "unknown to this server: {unknown:?}");
    }

    /// After the compiled-in list, the server itself is asked (its tzdata may be older).
    #[pg_test]
    fn the_server_is_asked_about_each_zone() {
        assert_eq!(
            crate::workspace::server_knows_zone("timezone", "Europe/Berlin"),
            Ok(())
        );
        assert!(matches!(
            crate::workspace::server_knows_zone("timezone", "Mars/Olympus_Mons"),
            Err(CrmError::InvalidInput { field, .. }) if field == "timezone"
        ));
    }

    #[pg_test(error = "permission denied to set parameter \"app.current_tenant_id\"")]
    fn authenticated_cannot_set_the_context_itself() {
        let (tenant_id, _) = tenant("forge");
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        let _ = Spi::run(&format!("SET LOCAL app.current_tenant_id = '{tenant_id}'"));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries='pg_crm'"]
    }
}
