//! Per-tenant fairness in front of the connection pool.
//!
//! The pool's own wait queue is first come, first served: one tenant sending requests
//! faster than they finish fills it, and every other tenant's requests wait behind them
//! (measured: another tenant's one-row read went from 3 ms to 0.6–1.4 s under a flood of 64
//! connections). So before a request may ask the pool for a connection it must hold one of
//! its tenant's permits: a tenant holds at most `per_tenant` connections at once, leaving
//! the rest of the pool to everyone else. Its further requests wait their turn in a bounded
//! queue; past the bound, or after waiting too long, they get 429 with `Retry-After`.
//!
//! Requests without a tenant (a token without `app_metadata.tenant_id`) share one bucket.
//! Buckets exist only while a tenant has requests in flight or waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::error::Error;

pub struct Fairness {
    per_tenant: usize,
    max_waiting: usize,
    wait: Duration,
    buckets: Mutex<HashMap<Option<Uuid>, Bucket>>,
}

struct Bucket {
    permits: Arc<Semaphore>,
    /// Requests holding or waiting for a permit.
    users: usize,
}

/// A tenant's turn: held for as long as the request uses a pooled connection.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    _leave: Leave,
}

/// Unregisters a request from its bucket (and drops an unused bucket) however it ends.
struct Leave {
    fairness: Arc<Fairness>,
    key: Option<Uuid>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut buckets = self.fairness.lock();
        if let Some(bucket) = buckets.get_mut(&self.key) {
            bucket.users = bucket.users.saturating_sub(1);
            if bucket.users == 0 {
                buckets.remove(&self.key);
            }
        }
    }
}

impl Fairness {
    /// `per_tenant` connections per tenant at once; at most `max_waiting` more of its
    /// requests may wait, each for at most `wait`.
    pub fn new(per_tenant: usize, max_waiting: usize, wait: Duration) -> Arc<Fairness> {
        Arc::new(Fairness {
            per_tenant: per_tenant.max(1),
            max_waiting,
            wait,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<Uuid>, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for one of `tenant`'s turns, or says 429 ([`Error::TenantBusy`]).
    pub async fn acquire(self: &Arc<Self>, tenant: Option<Uuid>) -> Result<Turn, Error> {
        let permits = {
            let mut buckets = self.lock();
            let bucket = buckets.entry(tenant).or_insert_with(|| Bucket {
                permits: Arc::new(Semaphore::new(self.per_tenant)),
                users: 0,
            });
            if bucket.users >= self.per_tenant + self.max_waiting {
                return Err(Error::TenantBusy);
            }
            bucket.users += 1;
            bucket.permits.clone()
        };
        let leave = Leave {
            fairness: self.clone(),
            key: tenant,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout(self.wait, permits.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // Timed out (or closed, which never happens): `leave` unregisters.
                _ => return Err(Error::TenantBusy),
            },
        };
        Ok(Turn {
            _permit: permit,
            _leave: leave,
        })
    }

    /// Tenants with requests in flight or waiting.
    #[cfg(test)]
    fn active_tenants(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> Option<Uuid> {
        Some(Uuid::from_bytes([n; 16]))
    }

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_and_others_are_not_held_up() {
        let f = Fairness::new(2, 1, Duration::from_millis(200));
        let a1 = f.acquire(tenant(1)).await.expect("first");
        let a2 = f.acquire(tenant(1)).await.expect("second");
        // The third waits (queue of one) and times out; the fourth is refused at once.
        let waiting = tokio::spawn({
            let f = f.clone();
            async move { f.acquire(tenant(1)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        assert!(matches!(f.acquire(tenant(1)).await, Err(Error::TenantBusy)));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "refused at once"
        );
        // Another tenant is served immediately meanwhile.
        let b = f.acquire(tenant(2)).await.expect("other tenant");
        assert!(matches!(waiting.await, Ok(Err(Error::TenantBusy))));
        drop((a1, a2, b));
        assert_eq!(f.active_tenants(), 0, "buckets go away when unused");
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_next_turn() {
        let f = Fairness::new(1, 4, Duration::from_secs(5));
        let first = f.acquire(tenant(1)).await.expect("first");
        let next = tokio::spawn({
            let f = f.clone();
            async move { f.acquire(tenant(1)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!next.is_finished(), "waits while the share is taken");
        drop(first);
        assert!(matches!(next.await, Ok(Ok(()))));
        assert_eq!(f.active_tenants(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_wait_leaves_no_trace() {
        let f = Fairness::new(1, 4, Duration::from_secs(5));
        let first = f.acquire(None).await.expect("first");
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.acquire(None).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(first);
        assert_eq!(f.active_tenants(), 0);
    }
}
