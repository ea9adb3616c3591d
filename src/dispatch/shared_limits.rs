//! A provider's limits kept in Redis (feature `redis`), so that every
//! replica counts against one quota: requests and prompt tokens per minute
//! as GCRA quotas in one atomic script each, `concurrent` as leases that
//! expire unless their process renews them.
//!
//! Each process first takes a slot of an in-process semaphore of
//! `concurrent` permits (no process can use more than the whole limit), so
//! that only that many of its callers poll Redis for a lease at once.
//! While Redis cannot be reached, the outage policy decides (see
//! [`OutagePolicy`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::Limits;
use super::error::DispatchError;
use super::limiter::{Local, Permit};
use super::redis::{Outage, RedisStore};
use super::state::{OutagePolicy, Shared};

/// How often a caller waiting for Redis to come back (fail_closed) asks
/// again.
const OUTAGE_RETRY: Duration = Duration::from_millis(100);

/// One provider's shared limits.
pub(crate) struct SharedLimits {
    limits: Limits,
    store: Arc<RedisStore>,
    state: Arc<Shared>,
    requests_key: String,
    tokens_key: String,
    leases_key: String,
    /// In-process gate of `concurrent` permits.
    gate: Option<Arc<Semaphore>>,
    /// This process's share, for the `local` outage policy.
    outage_share: Local,
}

/// A `concurrent` slot held in Redis; given back when dropped.
pub(crate) struct Lease {
    store: Arc<RedisStore>,
    id: Option<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.store.release(id);
        }
    }
}

impl SharedLimits {
    pub(crate) fn new(
        provider: &str,
        limits: &Limits,
        store: Arc<RedisStore>,
        state: Arc<Shared>,
    ) -> SharedLimits {
        SharedLimits {
            limits: *limits,
            requests_key: store.key(&["rate", provider, "requests"]),
            tokens_key: store.key(&["rate", provider, "tokens"]),
            leases_key: store.key(&["leases", provider]),
            gate: limits
                .concurrent
                .filter(|n| *n > 0)
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            outage_share: Local::new(&limits.divided(state.config.replicas)),
            store,
            state,
        }
    }

    pub(crate) async fn acquire(&self, tokens: usize) -> Result<Permit, DispatchError> {
        let gate: Option<OwnedSemaphorePermit> = match &self.gate {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        let mut first_outage: Option<tokio::time::Instant> = None;
        loop {
            let outage = match self.in_redis(tokens).await {
                Ok(lease) => return Ok(Permit::new(gate, lease)),
                Err(outage) => outage,
            };
            self.state.warn_outage(&outage);
            match self.state.config.on_outage {
                OutagePolicy::FailOpen => return Ok(Permit::new(gate, None)),
                OutagePolicy::Local => {
                    // The share's permit, when there is one, is the
                    // tighter bound.
                    let share = self.outage_share.acquire(tokens).await;
                    return Ok(Permit::new(share.or(gate), None));
                }
                OutagePolicy::FailClosed => {
                    let since = *first_outage.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= self.state.config.outage_wait {
                        return Err(DispatchError::shared_state(format!(
                            "{outage}; the call waited {} ms for it (state.on_outage: \
                             fail_closed, state.outage_wait)",
                            since.elapsed().as_millis()
                        )));
                    }
                    tokio::time::sleep(OUTAGE_RETRY).await;
                }
            }
        }
    }

    /// Takes a lease (when `concurrent` is set), then the request and
    /// token quotas; a lease taken before Redis failed is given back.
    async fn in_redis(&self, tokens: usize) -> Result<Option<Lease>, Outage> {
        let lease = match self.limits.concurrent.filter(|n| *n > 0) {
            Some(limit) => Some(self.lease(limit).await?),
            None => None,
        };
        if let Some(n) = self.limits.requests_per_minute.filter(|n| *n > 0) {
            self.quota(&self.requests_key, n, 1).await?;
        }
        if let Some(n) = self.limits.tokens_per_minute.filter(|n| *n > 0) {
            let burst = self.limits.burst(n);
            let cells = u32::try_from(tokens).unwrap_or(u32::MAX).clamp(1, burst);
            self.quota(&self.tokens_key, n, cells).await?;
        }
        Ok(lease)
    }

    async fn lease(&self, limit: u32) -> Result<Lease, Outage> {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(id) = self.store.try_lease(&self.leases_key, limit).await? {
                return Ok(Lease {
                    store: self.store.clone(),
                    id: Some(id),
                });
            }
            // Every slot is held, by this or another process: ask again
            // soon, less often the longer it takes.
            tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    async fn quota(&self, key: &str, per_minute: u32, cells: u32) -> Result<(), Outage> {
        let interval = Duration::from_secs(60) / per_minute;
        let burst = self.limits.burst(per_minute);
        while let Some(wait) = self.store.take(key, interval, burst, cells).await? {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}
