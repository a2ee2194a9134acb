//! pg_crm's background worker: every periodic job, inside PostgreSQL (ARCHITECTURE.md,
//! "Background work"), so the edge stays stateless and a job runs whatever the client.
//!
//! One worker per database named in `pg_crm.worker_databases` (a postmaster setting: the
//! workers are registered when the server starts with pg_crm preloaded). Each connects to
//! its database as the bootstrap superuser. Ten times a second (continuously while events
//! keep coming) it stores the security and access events waiting in shared memory for its
//! database (see [`crate::events`]); once a
//! second it calls `crm_private.run_jobs()`: audit sealing each time; partition upkeep and
//! retention hourly. Each in its own transaction. On SIGTERM it stores what is waiting
//! before it exits.
//! Every job is safe to run twice, so an operator calling `run_jobs()` by hand, or a second
//! server pointed at the same database, does no harm. A database without pg_crm (or with
//! a version older than the jobs) is polled quietly; an error ends the worker, and the
//! postmaster starts it again after [`RESTART`].

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::Duration;

static WORKER_DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

const TICK: Duration = Duration::from_millis(100);
const BUSY_TICK: Duration = Duration::from_millis(2);
const JOBS_EVERY: Duration = Duration::from_secs(1);
const RESTART: Duration = Duration::from_secs(5);

/// Registers `pg_crm.worker_databases` and, in the postmaster, one worker per database.
pub(crate) fn register() {
    GucRegistry::define_string_guc(
        c"pg_crm.worker_databases",
        c"Databases in which pg_crm's background worker runs its periodic jobs (comma-separated).",
        c"Audit sealing, partition upkeep and retention run there once a second; elsewhere call crm_private.run_jobs() yourself. Takes effect at server start.",
        &WORKER_DATABASES,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    // SAFETY: read in the postmaster while it loads shared_preload_libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    for database in databases(
        WORKER_DATABASES
            .get()
            .and_then(|v| v.into_string().ok())
            .as_deref()
            .unwrap_or(""),
    ) {
        BackgroundWorkerBuilder::new(&format!("pg_crm jobs in {database}"))
            .set_type("pg_crm jobs")
            .set_library("pg_crm")
            .set_function("pg_crm_jobs_main")
            .set_extra(&database)
            .enable_spi_access()
            .set_restart_time(Some(RESTART))
            .load();
    }
}

/// The database names of the setting: comma-separated, blanks trimmed, duplicates once.
fn databases(setting: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in setting.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// The worker's main loop.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_crm_jobs_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_owned();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let mut jobs_due = std::time::Instant::now();
    let mut stored = 0;
    loop {
        // While events keep coming, drain again at once: a busy server fills the queue in
        // well under a tick.
        let wait = if stored > 0 { BUSY_TICK } else { TICK };
        let running = BackgroundWorker::wait_latch(Some(wait));
        let run_jobs = running && std::time::Instant::now() >= jobs_due;
        stored = BackgroundWorker::transaction(|| {
            // Older versions of the extension (or none) have neither table nor function.
            let ready = Spi::get_one::<bool>(
                "SELECT pg_catalog.to_regprocedure('crm_private.store_events(jsonb)') IS NOT NULL",
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            if !ready {
                return 0;
            }
            let stored = crate::events::store_taken();
            if run_jobs {
                Spi::run("SELECT crm_private.run_jobs()").expect("crm_private.run_jobs()");
            }
            stored
        });
        if run_jobs {
            jobs_due = std::time::Instant::now() + JOBS_EVERY;
        }
        if !running {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::databases;

    #[test]
    fn the_setting_names_each_database_once() {
        assert_eq!(databases(""), Vec::<String>::new());
        assert_eq!(
            databases(" aura , aura_few,aura,, "),
            vec!["aura", "aura_few"]
        );
    }
}
