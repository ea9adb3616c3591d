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
use super::redis::{Acquired, LimitKeys, Outage, RETRY_AFTER_OUTAGE, RedisStore};
use super::state::{OutagePolicy, Shared};

/// How often a caller waiting for Redis to come back (fail_closed) asks
/// again.
const OUTAGE_RETRY: Duration = Duration::from_millis(100);

/// One provider's shared limits.
pub(crate) struct SharedLimits {
    limits: Limits,
    store: Arc<RedisStore>,
    state: Arc<Shared>,
    keys: LimitKeys,
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

impl Lease {
    /// Gives the slot back before the call returns, so that a process that
    /// exits right after (`promptbook send`) leaves nothing held.
    pub(crate) async fn release(mut self) {
        if let Some(id) = self.id.take() {
            self.store.release(&id).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.store.release_later(id);
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
            keys: LimitKeys {
                leases: store.key(&["leases", provider]),
                requests: store.key(&["rate", provider, "requests"]),
                tokens: store.key(&["rate", provider, "tokens"]),
            },
            gate: limits
                .concurrent
                .filter(|n| *n > 0)
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            outage_share: Local::new(&limits.divided(state.config.replicas)),
            store,
            state,
        }
    }

    /// Waits for a slot and the quotas; `call_started` is when the call
    /// began (fail_closed's `outage_wait` counts from then).
    pub(crate) async fn acquire(
        &self,
        tokens: usize,
        call_started: tokio::time::Instant,
    ) -> Result<Permit, DispatchError> {
        let gate: Option<OwnedSemaphorePermit> = match &self.gate {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        // fail_closed waits `outage_wait` from the call's start, the first
        // failed command (the breaker's, or this) included.
        let started = call_started;
        loop {
            let outage = match self.in_redis(tokens).await {
                Ok(lease) => return Ok(Permit::new(gate, lease)),
                Err(outage) => outage,
            };
            self.state.warn_outage(&outage);
            match self.state.config.on_outage {
                OutagePolicy::FailOpen => return Ok(Permit::new(gate, None)),
                OutagePolicy::Local => {
                    // This process's share while Redis is away. A caller
                    // that waits for it asks Redis again every second, so
                    // that the shared limits take over once it is back
                    // (rather than a queue of callers going out on local
                    // shares long after). The share's permit, when there
                    // is one, is the tighter bound.
                    if let Ok(share) =
                        tokio::time::timeout(RETRY_AFTER_OUTAGE, self.outage_share.acquire(tokens))
                            .await
                    {
                        return Ok(Permit::new(share.or(gate), None));
                    }
                }
                OutagePolicy::FailClosed => {
                    let waited = started.elapsed();
                    let left = self.state.config.outage_wait.saturating_sub(waited);
                    if left.is_zero() {
                        return Err(DispatchError::shared_state(format!(
                            "{outage}; the call waited {} ms for it (state.on_outage: \
                             fail_closed, state.outage_wait)",
                            waited.as_millis()
                        )));
                    }
                    tokio::time::sleep(left.min(OUTAGE_RETRY)).await;
                }
            }
        }
    }

    /// Takes a slot and the quotas in Redis, all at once, waiting while
    /// they are short.
    async fn in_redis(&self, tokens: usize) -> Result<Option<Lease>, Outage> {
        // Every token is charged; a prompt larger than the burst goes once
        // the quota is full (see acquire.lua).
        let cells = u32::try_from(tokens).unwrap_or(u32::MAX).max(1);
        let mut pause = Duration::from_millis(1);
        loop {
            match self.store.acquire(&self.keys, &self.limits, cells).await? {
                Acquired::Taken(id) => {
                    return Ok(id.map(|id| Lease {
                        store: self.store.clone(),
                        id: Some(id),
                    }));
                }
                Acquired::Wait(wait) => tokio::time::sleep(wait).await,
                Acquired::SlotsHeld => {
                    // Held by this or another process: ask again soon,
                    // less often the longer it takes.
                    tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
            }
        }
    }
}
