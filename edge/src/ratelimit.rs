//! Rate limits per user (PRD NFR-S7), shared by every edge without a database round trip
//! per request.
//!
//! Each edge counts the requests it admits per user in fixed one-minute windows (aligned to
//! the clock, so every edge agrees which minute it is). About once a second ([`run`]) it
//! reports its counts to `crm_private.rate_limit_sync` and gets back the other edges' counts
//! for the same minute and the per-tenant limits operators set; a user is refused once
//! their count here plus the others' reaches the limit. The limit therefore holds across
//! edges to within what they admit between two reports. If the database cannot be reached,
//! each edge goes on with what it last heard (at worst, each edge alone enforces the limit).
//!
//! Every reply to a rate-limited request carries `RateLimit-Limit`, `RateLimit-Remaining`
//! and `RateLimit-Reset` (seconds until the window ends); a refusal is 429 with
//! `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::db::Database;

const WINDOW_SECS: u64 = 60;

/// The limiter of one edge.
pub struct RateLimiter {
    /// Requests per user and minute unless a tenant has its own; 0 turns limiting off.
    default_limit: u32,
    edge_id: Uuid,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Minutes since the epoch.
    window: u64,
    /// What this edge admitted in `window`, per subject.
    mine: HashMap<String, u32>,
    /// What the other edges had admitted in `window` at the last report.
    others: HashMap<String, u32>,
    /// Per-tenant limits from the last report.
    limits: HashMap<Uuid, u32>,
}

impl State {
    /// Moves to `window` (minutes since the epoch): a new minute starts with no counts.
    fn enter(&mut self, window: u64) {
        if self.window != window {
            self.window = window;
            self.mine.clear();
            self.others.clear();
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window ends.
    pub reset: u64,
}

impl Decision {
    /// The `RateLimit-*` headers (and `Retry-After` on a refusal).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let number = |n: u64| HeaderValue::from(n);
        headers.insert("ratelimit-limit", number(self.limit.into()));
        headers.insert("ratelimit-remaining", number(self.remaining.into()));
        headers.insert("ratelimit-reset", number(self.reset));
        if !self.allowed {
            headers.insert("retry-after", number(self.reset.max(1)));
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RateLimiter {
    pub fn new(default_limit: u32) -> RateLimiter {
        RateLimiter {
            default_limit,
            edge_id: Uuid::new_v4(),
            state: Mutex::new(State::default()),
        }
    }

    /// Counts one request of `subject` (a user) in `tenant`, unless the limit is reached.
    /// `None` when limiting is off.
    pub fn check(&self, subject: &str, tenant: Option<Uuid>) -> Option<Decision> {
        self.check_at(subject, tenant, now_secs())
    }

    fn check_at(&self, subject: &str, tenant: Option<Uuid>, now: u64) -> Option<Decision> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let limit = tenant
            .and_then(|t| state.limits.get(&t).copied())
            .unwrap_or(self.default_limit);
        if limit == 0 {
            return None;
        }
        state.enter(now / WINDOW_SECS);
        let reset = WINDOW_SECS - now % WINDOW_SECS;
        let others = state.others.get(subject).copied().unwrap_or(0);
        let mine = state.mine.entry(subject.to_owned()).or_insert(0);
        let used = *mine + others;
        if used >= limit {
            return Some(Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset,
            });
        }
        *mine += 1;
        Some(Decision {
            allowed: true,
            limit,
            remaining: limit - used - 1,
            reset,
        })
    }

    /// What to report: the clock's current window and this edge's counts in it. An edge that
    /// admitted nothing yet this minute still moves to it, so it learns the other edges'
    /// counts before its first request of the minute.
    fn snapshot_at(&self, now: u64) -> (u64, Vec<String>, Vec<i32>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let window = now / WINDOW_SECS;
        state.enter(window);
        let (subjects, hits) = state
            .mine
            .iter()
            .map(|(s, n)| (s.clone(), i32::try_from(*n).unwrap_or(i32::MAX)))
            .unzip();
        (window, subjects, hits)
    }

    /// Takes in a report's answer for `window`.
    fn absorb(&self, window: u64, answer: &Value) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let count = |v: &Value| v.as_u64().map(|n| n.min(u32::MAX as u64) as u32);
        if let Some(limits) = answer["limits"].as_object() {
            state.limits = limits
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, count(v)?)))
                .collect();
        }
        if state.window == window {
            if let Some(others) = answer["others"].as_object() {
                state.others = others
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), count(v)?)))
                    .collect();
            }
        }
    }

    /// One report to the database and its answer.
    pub async fn sync(&self, db: &Database) -> Result<(), crate::error::Error> {
        let (window, subjects, hits) = self.snapshot_at(now_secs());
        let window_param = i64::try_from(window).unwrap_or(i64::MAX);
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&self.edge_id, Type::UUID),
            (&window_param, Type::INT8),
            (&subjects, Type::TEXT_ARRAY),
            (&hits, Type::INT4_ARRAY),
        ];
        let answer = db
            .as_auth_service(
                "SELECT crm_private.rate_limit_sync($1, $2, $3, $4)",
                &params,
                true,
            )
            .await?;
        if let Some(answer) = answer.first() {
            self.absorb(window, answer);
        }
        Ok(())
    }
}

/// Reports every `interval` for as long as the edge runs.
pub async fn run(
    limiter: std::sync::Arc<RateLimiter>,
    state: std::sync::Arc<crate::http::AppState>,
    interval: Duration,
) {
    let mut failing = false;
    loop {
        tokio::time::sleep(interval).await;
        match limiter.sync(&state.db).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("rate limit counts are shared again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "could not share rate limit counts; limiting with what this edge knows");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_to_the_limit_then_refuses_until_the_next_minute() {
        let rl = RateLimiter::new(3);
        let t0 = 600; // the start of a minute
        let seen: Vec<_> = (0..4)
            .map(|_| rl.check_at("u", None, t0 + 10).unwrap())
            .collect();
        assert_eq!(
            seen.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(
            seen.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert_eq!(seen[3].reset, 50);
        assert!(
            rl.check_at("other", None, t0 + 10).unwrap().allowed,
            "per subject"
        );
        assert!(
            rl.check_at("u", None, t0 + 60).unwrap().allowed,
            "a new minute"
        );
    }

    #[test]
    fn other_edges_counts_and_tenant_limits_apply() {
        let rl = RateLimiter::new(10);
        let tenant = Uuid::new_v4();
        rl.check_at("u", Some(tenant), 6000).unwrap();
        rl.absorb(
            100,
            &json!({"others": {"u": 8}, "limits": {tenant.to_string(): 20}}),
        );
        let d = rl.check_at("u", None, 6001).unwrap();
        assert_eq!(
            (d.allowed, d.remaining),
            (true, 0),
            "1 here + 8 elsewhere + this one = 10"
        );
        assert!(!rl.check_at("u", None, 6002).unwrap().allowed);
        let d = rl.check_at("u", Some(tenant), 6003).unwrap();
        assert_eq!((d.allowed, d.limit, d.remaining), (true, 20, 9));
        // An answer about a past minute does not count against the current one.
        rl.absorb(99, &json!({"others": {"u": 100}}));
        assert!(rl.check_at("u", Some(tenant), 6004).unwrap().allowed);
    }

    #[test]
    fn an_idle_edge_learns_the_new_minute_from_its_report() {
        let rl = RateLimiter::new(10);
        rl.check_at("u", None, 6000); // minute 100
        let (window, subjects, _) = rl.snapshot_at(6061); // minute 101, nothing admitted yet
        assert_eq!((window, subjects.len()), (101, 0));
        rl.absorb(101, &json!({"others": {"u": 9}}));
        let d = rl.check_at("u", None, 6062).unwrap();
        assert_eq!(
            (d.allowed, d.remaining),
            (true, 0),
            "the other edges' 9 count"
        );
    }

    #[test]
    fn zero_turns_limiting_off_unless_a_tenant_has_a_limit() {
        let rl = RateLimiter::new(0);
        let tenant = Uuid::new_v4();
        assert_eq!(rl.check_at("u", Some(tenant), 10), None);
        rl.absorb(0, &json!({"others": {}, "limits": {tenant.to_string(): 1}}));
        assert!(rl.check_at("u", Some(tenant), 10).unwrap().allowed);
        assert!(!rl.check_at("u", Some(tenant), 11).unwrap().allowed);
    }

    #[test]
    fn headers() {
        let mut h = HeaderMap::new();
        Decision {
            allowed: false,
            limit: 100,
            remaining: 0,
            reset: 7,
        }
        .apply(&mut h);
        assert_eq!(h["ratelimit-limit"], "100");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-reset"], "7");
        assert_eq!(h["retry-after"], "7");
    }
}
