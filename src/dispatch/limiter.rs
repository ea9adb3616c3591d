//! Client-side limits per provider: requests per minute, prompt tokens per
//! minute, requests in flight. A call waits for its turn; it never fails
//! for a limit.
//!
//! Rates use governor's GCRA (a token bucket without a refill thread);
//! concurrency is a tokio semaphore whose permit a call holds until its
//! answer (or its stream) ends.

use std::num::NonZeroU32;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::Limits;

type RateLimiter = governor::DefaultDirectRateLimiter;

/// One provider's limits.
pub(crate) struct Limiter {
    requests: Option<RateLimiter>,
    tokens: Option<(RateLimiter, NonZeroU32)>,
    concurrent: Option<Arc<Semaphore>>,
}

impl Limiter {
    /// Limits as configured (none when the configuration sets none).
    pub(crate) fn new(limits: &Limits) -> Limiter {
        let per_minute = |n: u32| NonZeroU32::new(n).map(governor::Quota::per_minute);
        Limiter {
            requests: limits
                .requests_per_minute
                .and_then(per_minute)
                .map(governor::RateLimiter::direct),
            tokens: limits.tokens_per_minute.and_then(|n| {
                let quota = per_minute(n)?;
                Some((governor::RateLimiter::direct(quota), NonZeroU32::new(n)?))
            }),
            concurrent: limits
                .concurrent
                .filter(|n| *n > 0)
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        }
    }

    /// Waits until a request of `tokens` prompt tokens may start; the
    /// permit (when limiting concurrency) is held until dropped.
    pub(crate) async fn acquire(&self, tokens: usize) -> Option<OwnedSemaphorePermit> {
        let permit = match &self.concurrent {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some(r) = &self.requests {
            r.until_ready().await;
        }
        if let Some((r, burst)) = &self.tokens {
            // A prompt larger than a minute's budget waits for a full
            // minute's budget rather than forever.
            let n = u32::try_from(tokens)
                .unwrap_or(u32::MAX)
                .clamp(1, burst.get());
            if let Some(n) = NonZeroU32::new(n) {
                let _ = r.until_n_ready(n).await;
            }
        }
        permit
    }
}
