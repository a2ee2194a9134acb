//! Workspace metadata (PRD F1.2, F1.3): the Rust half of `api.update_workspace`.
//!
//! The SQL wrapper in `sql/api.sql` is the public surface; this function checks the
//! caller's role and the values, then updates through SPI as the caller, so row-level
//! security still has the last word.

use crate::context::Context;
use crate::domain::roles::Action;
use crate::domain::workspace::{Change, WorkspacePatch};
use crate::error::{CrmError, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;

/// The zone list is compiled in; the server's time zone data may be older (a zone added to
/// IANA since, e.g. America/Ciudad_Juarez in 2022). Storing a zone this server cannot load
/// would break every `AT TIME ZONE` on the workspace, so ask it: `pg_tzset` loads the zone
/// (one file, once per backend, then cached), as `SET timezone` would.
pub(crate) fn server_knows_zone(field: &'static str, zone: &str) -> Result<(), CrmError> {
    let name = std::ffi::CString::new(zone)
        .map_err(|_| CrmError::invalid(field, "must not contain NUL characters"))?;
    // SAFETY: a NUL-terminated string that outlives the call; pg_tzset returns NULL for a
    // zone it cannot load and does not raise.
    let loaded = unsafe { pgrx::pg_sys::pg_tzset(name.as_ptr()) };
    if loaded.is_null() {
        return Err(CrmError::invalid(
            field,
            format!("this database server does not know the time zone \"{zone}\" (its time zone data is older); ask its operator to update tzdata, or pick another zone"),
        ));
    }
    Ok(())
}

#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn update_workspace(
    name: Option<&str>,
    logo_url: Option<&str>,
    industry: Option<&str>,
    timezone: Option<&str>,
) -> Option<JsonB> {
    let ctx = Context::current().or_raise();
    if !ctx.role.may(Action::UpdateWorkspace) {
        CrmError::Forbidden {
            message: "only tenant admins can update the workspace".into(),
            hint: Some("ask an admin of this workspace"),
        }
        .raise();
    }
    let patch = WorkspacePatch::parse(name, logo_url, industry, timezone).or_raise();
    if let Change::Set(tz) = &patch.timezone {
        server_knows_zone("timezone", tz).or_raise();
    }
    let value = |c: &Change| c.as_update().1.map(str::to_string);
    let present = |c: &Change| c.as_update().0;
    let updated = Spi::get_one_with_args::<JsonB>(
        "UPDATE core.tenants t SET
                name = coalesce($2, t.name),
                logo_url = CASE WHEN $3 THEN $4 ELSE t.logo_url END,
                industry = CASE WHEN $5 THEN $6 ELSE t.industry END,
                timezone = coalesce($7, t.timezone)
          WHERE t.id = $1::uuid
      RETURNING crm_private.workspace_json(t)",
        &[
            ctx.tenant_id.as_str().into(),
            value(&patch.name).into(),
            present(&patch.logo_url).into(),
            value(&patch.logo_url).into(),
            present(&patch.industry).into(),
            value(&patch.industry).into(),
            value(&patch.timezone).into(),
        ],
    );
    match updated {
        Ok(Some(ws)) => Some(ws),
        // Row-level security hid the row: the context and the policy disagree.
        Ok(None) | Err(pgrx::spi::Error::InvalidPosition) => {
            CrmError::forbidden("the workspace cannot be updated by this user").raise()
        }
        Err(e) => Err::<Option<JsonB>, _>(e).or_raise(),
    }
}
