//! Where deleted workspaces' archives go (issue 9: the `archive` retention policy).
//!
//! `pg_crm.archive_directory` (set in postgresql.conf; reloadable) names a directory the
//! server's operating-system user may write; by default `pg_crm_archive` in the data
//! directory. The files are written by the server itself (`COPY ... TO`), so the directory
//! is on the database machine: copy them elsewhere and remove them as your policy says.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

static ARCHIVE_DIRECTORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub(crate) fn register() {
    GucRegistry::define_string_guc(
        c"pg_crm.archive_directory",
        c"Where pg_crm writes the archives of deleted workspaces (retention policy archive).",
        c"A directory the server may write; by default pg_crm_archive in the data directory.",
        &ARCHIVE_DIRECTORY,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// The archive directory, created if missing; raises if it cannot be.
#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
fn archive_directory() -> String {
    let configured = ARCHIVE_DIRECTORY
        .get()
        .and_then(|v| v.into_string().ok())
        .filter(|v| !v.trim().is_empty());
    let dir = configured.unwrap_or_else(|| {
        // SAFETY: DataDir is set for the life of every backend.
        let data = unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy();
        format!("{data}/pg_crm_archive")
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        pgrx::error!("the archive directory {dir} cannot be created: {e}");
    }
    dir
}
