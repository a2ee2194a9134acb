//! Security events and the access log: records that must outlive the transaction that
//! caused them (PRD F5.6, journey 4.6; issue 9).
//!
//! A refused request rolls back, and a read runs in a READ ONLY transaction: neither can
//! write a row that stays. So pg_crm pushes each event into a queue in shared memory, and
//! its background worker (one per database in `pg_crm.worker_databases`, see [`worker`])
//! takes the events of its database about ten times a second and writes them in its own
//! transaction (`crm_private.store_events`), logging each security event as one WARNING line.
//! The request pays one short lock and a copy; no round trip.
//!
//! What is recorded here:
//! - the gate's refusals (`crm_private.begin_request`: not a member, deactivated, suspended,
//!   an ended session), pushed by the gate itself;
//! - every other `42501` a request raises (a row-level security `WITH CHECK` failure, a
//!   permission error on a table, a role rule of an `api` function), caught by the
//!   `emit_log_hook` as the error is reported (so with `log_min_messages` at `error` or
//!   below, the default; an error caught inside PL/pgSQL is not reported, and not recorded);
//! - cross-tenant probes: an id the caller's workspace does not hold but another does
//!   (`crm_private.note_missing`, called where a record is answered "not found");
//! - access events (`crm_private.log_access`): the records a request read.
//!
//! What can be lost: the queue lives in shared memory, so a crash (not a clean shutdown,
//! which the worker drains first) loses what the worker had not taken yet, at most about
//! 100 ms of events; a full queue ([`SLOTS`] events waiting, e.g. no worker in that
//! database) drops new events and counts them (`crm_private.event_queue_status()`).
//!
//! [`worker`]: crate::worker

use crate::domain::claims::uuid_bytes;
use pgrx::guc::{GucContext, GucFlags, GucRegistry};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, GucSetting, JsonB, PGRXSharedMemory, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};

/// Events waiting at most: about 640 KB of shared memory (built on the postmaster's stack
/// when the server starts, so keep it well under its 8 MB).
pub const SLOTS: usize = 1024;
const KIND_BYTES: usize = 40;
const DETAIL_BYTES: usize = 512;
const REQUEST_BYTES: usize = 64;

/// Which table an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Security = 1,
    Access = 2,
}

#[derive(Copy, Clone)]
#[repr(C)]
struct Slot {
    used: bool,
    stream: u8,
    database: u32,
    at: i64,
    tenant: [u8; 16],
    user: [u8; 16],
    has_user: bool,
    kind_len: u8,
    kind: [u8; KIND_BYTES],
    request_len: u8,
    request: [u8; REQUEST_BYTES],
    detail_len: u16,
    detail: [u8; DETAIL_BYTES],
}

const EMPTY: Slot = Slot {
    used: false,
    stream: 0,
    database: 0,
    at: 0,
    tenant: [0; 16],
    user: [0; 16],
    has_user: false,
    kind_len: 0,
    kind: [0; KIND_BYTES],
    request_len: 0,
    request: [0; REQUEST_BYTES],
    detail_len: 0,
    detail: [0; DETAIL_BYTES],
};

#[derive(Copy, Clone)]
#[repr(C)]
pub struct Queue {
    slots: [Slot; SLOTS],
    /// Where the next free slot is looked for first.
    next: usize,
    waiting: usize,
    dropped: u64,
    pushed: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            slots: [EMPTY; SLOTS],
            next: 0,
            waiting: 0,
            dropped: 0,
            pushed: 0,
        }
    }
}

// SAFETY: plain data (no pointers), Copy, initialised in place by pg_shmem_init.
unsafe impl PGRXSharedMemory for Queue {}

static QUEUE: PgLwLock<Queue> = unsafe { PgLwLock::new(c"pg_crm_events") };
/// `pg_crm.access_log`: the operators' switch for the whole server (workspaces have their
/// own, `core.tenants.access_log`, applied when the events are stored).
static ACCESS_LOG: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Whether the queue exists: pg_crm was preloaded (shared_preload_libraries).
static READY: AtomicBool = AtomicBool::new(false);

/// In the postmaster, while it loads shared_preload_libraries: the queue and the hook.
// pg_shmem_init! tests features of every PostgreSQL version; this crate has pg15 only.
#[allow(unexpected_cfgs)]
pub(crate) fn init() {
    GucRegistry::define_bool_guc(
        c"pg_crm.access_log",
        c"Whether pg_crm records access events (record views, searches) at all.",
        c"On by default; each workspace can also turn its own access log off (core.tenants.access_log).",
        &ACCESS_LOG,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: read in the postmaster while it loads shared_preload_libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(QUEUE = Queue::default());
    READY.store(true, Ordering::Release);
    // SAFETY: hooks are installed once, in the postmaster, before any backend exists.
    unsafe {
        PREV_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(on_emit_log);
    }
}

/// One event as pushed: the strings are cut to their slot's size (the detail is JSON and
/// replaced by `{"truncated": true}` rather than cut).
pub struct Event<'a> {
    pub stream: Stream,
    pub kind: &'a str,
    pub tenant: Option<[u8; 16]>,
    pub user: Option<[u8; 16]>,
    pub request_id: Option<&'a str>,
    pub detail: &'a str,
}

fn copy_into(dst: &mut [u8], src: &str) -> usize {
    // Whole characters only, so what is read back is UTF-8.
    let mut n = src.len().min(dst.len());
    while !src.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&src.as_bytes()[..n]);
    n
}

/// Pushes an event; never raises (a full or missing queue drops it and counts it).
pub fn push(event: &Event<'_>) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let mut slot = EMPTY;
    slot.used = true;
    slot.stream = event.stream as u8;
    // SAFETY: plain reads of backend globals.
    unsafe {
        slot.database = pg_sys::MyDatabaseId.to_u32();
        slot.at = pg_sys::GetCurrentTimestamp();
    }
    slot.tenant = event.tenant.unwrap_or([0; 16]);
    if let Some(user) = event.user {
        slot.user = user;
        slot.has_user = true;
    }
    slot.kind_len = copy_into(&mut slot.kind, event.kind) as u8;
    slot.request_len = copy_into(&mut slot.request, event.request_id.unwrap_or("")) as u8;
    let detail = if event.detail.len() <= DETAIL_BYTES {
        event.detail
    } else {
        r#"{"truncated": true}"#
    };
    slot.detail_len = copy_into(&mut slot.detail, detail) as u16;
    let mut queue = QUEUE.exclusive();
    queue.pushed += 1;
    if queue.waiting >= SLOTS {
        queue.dropped += 1;
        return;
    }
    let start = queue.next;
    for i in 0..SLOTS {
        let at = (start + i) % SLOTS;
        if !queue.slots[at].used {
            queue.slots[at] = slot;
            queue.next = (at + 1) % SLOTS;
            queue.waiting += 1;
            return;
        }
    }
    queue.dropped += 1;
}

/// Takes the waiting events of this database, oldest first, as the JSON array
/// `crm_private.store_events` reads.
pub fn take_for_this_database() -> Option<serde_json::Value> {
    if !READY.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: a plain read of a backend global.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let mut taken: Vec<Slot> = Vec::new();
    {
        let mut queue = QUEUE.exclusive();
        if queue.waiting == 0 {
            return None;
        }
        for at in 0..SLOTS {
            let slot = &mut queue.slots[at];
            if slot.used && slot.database == database {
                taken.push(*slot);
                slot.used = false;
            }
        }
        queue.waiting -= taken.len();
    }
    if taken.is_empty() {
        return None;
    }
    taken.sort_by_key(|s| s.at);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Some(serde_json::Value::Array(
        taken
            .iter()
            .map(|s| {
                serde_json::json!({
                    "stream": if s.stream == Stream::Access as u8 { "access" } else { "security" },
                    "at": s.at,
                    "tenant_id": uuid_text(&s.tenant),
                    "user_id": s.has_user.then(|| uuid_text(&s.user)),
                    "kind": text(&s.kind[..s.kind_len as usize]),
                    "request_id": (s.request_len > 0).then(|| text(&s.request[..s.request_len as usize])),
                    "details": serde_json::from_slice::<serde_json::Value>(&s.detail[..s.detail_len as usize])
                        .unwrap_or_else(|_| serde_json::json!({})),
                })
            })
            .collect(),
    ))
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The request's context as the gate set it.
struct RequestContext {
    tenant: [u8; 16],
    user: Option<[u8; 16]>,
    request_id: Option<String>,
}

fn request_context() -> Option<RequestContext> {
    let tenant = crate::context::setting_text(crate::context::Setting::Tenant)?;
    Some(RequestContext {
        tenant: uuid_bytes(&tenant)?,
        user: crate::context::setting_text(crate::context::Setting::User)
            .as_deref()
            .and_then(uuid_bytes),
        request_id: crate::context::setting_text(crate::context::Setting::RequestId),
    })
}

static mut PREV_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Every `42501` reported inside a request (the gate has set a tenant) is a security event.
/// Runs while the error is being reported: no allocation beyond the message's copy, no
/// database access, nothing that could raise.
#[pg_guard]
unsafe extern "C-unwind" fn on_emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: the previous hook, set once in the postmaster.
    unsafe {
        if let Some(prev) = PREV_EMIT_LOG_HOOK {
            prev(edata);
        }
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: PostgreSQL hands a valid ErrorData for the duration of the call.
        let e = unsafe { &*edata };
        if e.elevel < pg_sys::PGERROR as i32
            || e.sqlerrcode != PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32
        {
            return;
        }
        let Some(ctx) = request_context() else {
            return;
        };
        let message = if e.message.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string owned by the ErrorData.
            unsafe { std::ffi::CStr::from_ptr(e.message) }
                .to_string_lossy()
                .chars()
                .take(160)
                .collect()
        };
        let kind = if message.contains("row-level security") {
            "policy_violation"
        } else {
            "permission_denied"
        };
        let detail = serde_json::json!({ "message": message }).to_string();
        push(&Event {
            stream: Stream::Security,
            kind,
            tenant: Some(ctx.tenant),
            user: ctx.user,
            request_id: ctx.request_id.as_deref(),
            detail: &detail,
        });
    });
}

/// Records an access event for the current request: `action` on one record (or a search
/// or export, with `details`). Nothing outside a request context. Never raises.
#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
fn log_access(
    action: &str,
    object_type: &str,
    object_id: Option<pgrx::Uuid>,
    details: default!(Option<JsonB>, "NULL"),
) {
    if !ACCESS_LOG.get() {
        return;
    }
    let Some(ctx) = request_context() else {
        return;
    };
    let mut detail = details
        .map(|d| d.0)
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    detail["object_type"] = object_type.into();
    if let Some(id) = object_id {
        detail["object_id"] = id.to_string().into();
    }
    push(&Event {
        stream: Stream::Access,
        kind: action,
        tenant: Some(ctx.tenant),
        user: ctx.user,
        request_id: ctx.request_id.as_deref(),
        detail: &detail.to_string(),
    });
}

/// Records a security event of `kind` for the current request (or, outside one, for
/// `tenant` and `user`). For pg_crm's own SQL (cross-tenant probes). Never raises.
#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
fn record_security_event(
    kind: &str,
    details: Option<JsonB>,
    tenant: default!(Option<pgrx::Uuid>, "NULL"),
    user_id: default!(Option<pgrx::Uuid>, "NULL"),
) {
    let (ctx_tenant, ctx_user, request_id) = match request_context() {
        Some(ctx) => (Some(ctx.tenant), ctx.user, ctx.request_id),
        None => (None, None, None),
    };
    let detail = details
        .map(|d| d.0.to_string())
        .unwrap_or_else(|| "{}".into());
    push(&Event {
        stream: Stream::Security,
        kind,
        tenant: ctx_tenant.or(tenant.map(|t| *t.as_bytes())),
        user: ctx_user.or(user_id.map(|u| *u.as_bytes())),
        request_id: request_id.as_deref(),
        detail: &detail,
    });
}

/// The queue's counters: `{waiting, pushed, dropped, slots}` (since the server started).
#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
fn event_queue_status() -> JsonB {
    if !READY.load(Ordering::Acquire) {
        return JsonB(serde_json::json!({ "preloaded": false }));
    }
    let queue = QUEUE.share();
    JsonB(serde_json::json!({
        "preloaded": true,
        "waiting": queue.waiting,
        "pushed": queue.pushed,
        "dropped": queue.dropped,
        "slots": SLOTS,
    }))
}

/// Takes this database's waiting events and stores them now (what the worker does ten
/// times a second); returns how many. For tests and operators.
#[pg_extern(volatile, parallel_unsafe, requires = ["schema"])]
fn flush_events() -> i64 {
    store_taken()
}

/// Takes this database's events and stores them through `crm_private.store_events`.
pub(crate) fn store_taken() -> i64 {
    match take_for_this_database() {
        Some(events) => Spi::get_one_with_args::<i64>(
            "SELECT crm_private.store_events($1)",
            &[JsonB(events).into()],
        )
        .ok()
        .flatten()
        .unwrap_or(0),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_into, uuid_bytes, uuid_text};

    #[test]
    fn uuids_round_trip() {
        let text = "0b8f6c2e-5a4d-4e1f-9c3b-7d2a1e0f4b6c";
        assert_eq!(uuid_text(&uuid_bytes(text).unwrap()), text);
        assert_eq!(
            uuid_bytes("0B8F6C2E5A4D4E1F9C3B7D2A1E0F4B6C"),
            uuid_bytes(text)
        );
        assert_eq!(uuid_bytes("not-a-uuid"), None);
        assert_eq!(uuid_bytes(""), None);
    }

    #[test]
    fn strings_are_cut_at_character_boundaries() {
        let mut buf = [0u8; 5];
        assert_eq!(copy_into(&mut buf, "abc"), 3);
        assert_eq!(copy_into(&mut buf, "abcdéf"), 4);
        assert_eq!(&buf[..4], b"abcd");
    }
}
