//! Client-side limits per provider: requests per minute, prompt tokens per
//! minute, requests in flight. A call waits for its turn; it never fails
//! for a limit.
//!
//! Rates use governor's GCRA (a token bucket without a refill thread) on
//! tokio's clock, so a wait is a tokio sleep for exactly the time governor
//! names (and tests can run it on tokio's paused clock); concurrency is a
//! tokio semaphore whose permit a call holds until its answer (or its
//! stream) ends.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::Limits;
use super::error::DispatchError;

/// governor's clock read from tokio's: the time since the limiter was made.
#[derive(Debug, Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type RateLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// One provider's limits, in this process.
pub(crate) struct Local {
    requests: Option<RateLimiter>,
    tokens: Option<TokenQuota>,
    concurrent: Option<Arc<Semaphore>>,
}

/// A GCRA quota of prompt tokens that charges every token of a prompt
/// larger than the burst: such a prompt goes once the quota is full, and
/// the calls after it wait for the excess (the rule `redis/acquire.lua`
/// runs in Redis). governor's GCRA refuses more cells than the burst
/// (`InsufficientCapacity`) and cannot charge a debt, so tokens keep their
/// own; requests (one cell each) stay on governor.
struct TokenQuota {
    /// Time per token.
    interval: Duration,
    burst: u32,
    /// The theoretical arrival time: when the quota is full again.
    tat: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl TokenQuota {
    async fn take(&self, cells: u32) {
        loop {
            let wait = {
                let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
                let now = tokio::time::Instant::now();
                let from = tat.map_or(now, |t| t.max(now));
                // The quota may be drawn once no more than `burst - cells`
                // (at most the whole burst) is owed.
                let headroom = self.burst - cells.min(self.burst);
                let owed = from - now;
                let allowed = self.interval.saturating_mul(headroom);
                if owed <= allowed {
                    *tat = Some(from + self.interval.saturating_mul(cells));
                    return;
                }
                owed - allowed
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Local {
    /// Limits as configured (none when the configuration sets none). A
    /// per-minute quota of `n` allows a burst of `n` (or the
    /// [`window`](Limits::window)'s share), then one more every `60 s / n`.
    pub(crate) fn new(limits: &Limits) -> Local {
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        let quota = |n: u32| {
            let burst = NonZeroU32::new(limits.burst(n))?;
            governor::Quota::with_period(Duration::from_secs(60) / n.max(1))
                .map(|q| q.allow_burst(burst))
        };
        let limiter = |quota| RateLimiter::direct_with_clock(quota, clock.clone());
        Local {
            requests: limits
                .requests_per_minute
                .filter(|n| *n > 0)
                .and_then(quota)
                .map(limiter),
            tokens: limits
                .tokens_per_minute
                .filter(|n| *n > 0)
                .map(|n| TokenQuota {
                    interval: Duration::from_secs(60) / n,
                    burst: limits.burst(n),
                    tat: std::sync::Mutex::new(None),
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
            until_ready(r, NonZeroU32::MIN).await;
        }
        if let Some(q) = &self.tokens {
            q.take(u32::try_from(tokens).unwrap_or(u32::MAX).max(1))
                .await;
        }
        permit
    }
}

/// One provider's limits: in this process, or shared through Redis.
pub(crate) struct Limiter {
    local: Local,
    #[cfg(feature = "redis")]
    shared: Option<super::shared_limits::SharedLimits>,
}

/// The right to send one request; dropping it gives back the
/// `concurrent` slot (and its lease, when shared).
#[derive(Default)]
pub(crate) struct Permit {
    _local: Option<OwnedSemaphorePermit>,
    #[cfg(feature = "redis")]
    _shared: Option<super::shared_limits::Lease>,
}

impl Limiter {
    /// `limits` kept in this process.
    pub(crate) fn new(limits: &Limits) -> Limiter {
        Limiter {
            local: Local::new(limits),
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// `limits` of provider `provider`, kept where `state` says.
    pub(crate) fn shared(
        provider: &str,
        limits: &Limits,
        state: &Arc<super::state::Shared>,
    ) -> Limiter {
        #[cfg(feature = "redis")]
        if let Some(store) = &state.redis {
            return Limiter {
                local: Local::new(&Limits::default()),
                shared: Some(super::shared_limits::SharedLimits::new(
                    provider,
                    limits,
                    store.clone(),
                    state.clone(),
                )),
            };
        }
        let _ = (provider, state);
        Limiter::new(limits)
    }

    /// Waits until a request of `tokens` prompt tokens may start.
    ///
    /// # Errors
    /// [`ErrorKind::SharedState`](super::ErrorKind::SharedState) when the
    /// limits live in Redis, Redis stayed unreachable for
    /// `state.outage_wait`, and the outage policy is `fail_closed`.
    pub(crate) async fn acquire(
        &self,
        tokens: usize,
        call_started: tokio::time::Instant,
    ) -> Result<Permit, DispatchError> {
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            return shared.acquire(tokens, call_started).await;
        }
        let _ = call_started;
        Ok(Permit {
            _local: self.local.acquire(tokens).await,
            ..Permit::default()
        })
    }
}

impl Permit {
    /// Gives back what the permit holds, waiting for Redis to take a
    /// shared slot back (dropping it does that in the background).
    pub(crate) async fn release(self) {
        #[cfg(feature = "redis")]
        if let Some(lease) = self._shared {
            lease.release().await;
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn new(
        local: Option<OwnedSemaphorePermit>,
        shared: Option<super::shared_limits::Lease>,
    ) -> Permit {
        Permit {
            _local: local,
            _shared: shared,
        }
    }
}

/// Takes `n` cells from `r`, sleeping (on tokio's clock) until governor
/// says they are there.
async fn until_ready(r: &RateLimiter, n: NonZeroU32) {
    loop {
        match r.check_n(n) {
            Ok(Ok(())) => return,
            Ok(Err(not_until)) => {
                tokio::time::sleep(not_until.wait_time_from(r.clock().now())).await;
            }
            // More than the burst: `acquire` clamps, so this cannot
            // happen; never wait forever for it.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u32>, concurrent: Option<u32>) -> Limits {
        Limits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            concurrent,
            window: None,
        }
    }

    /// How long `acquire` took on the paused clock.
    async fn timed(l: &Limiter, tokens: usize) -> Duration {
        let start = tokio::time::Instant::now();
        drop(
            l.acquire(tokens, tokio::time::Instant::now())
                .await
                .unwrap(),
        );
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_rate_lets_a_burst_through_then_one_per_interval() {
        // 2 per minute: a burst of 2, then one every 30 s.
        let l = Limiter::new(&limits(Some(2), None, None));
        assert_eq!(timed(&l, 1).await, Duration::ZERO);
        assert_eq!(timed(&l, 1).await, Duration::ZERO);
        assert_eq!(timed(&l, 1).await, Duration::from_secs(30));
        assert_eq!(timed(&l, 1).await, Duration::from_secs(30));
        // After a quiet minute, the burst is back.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(timed(&l, 1).await, Duration::ZERO);
        assert_eq!(timed(&l, 1).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_rate_waits_for_as_many_tokens_as_the_prompt_has() {
        // 1,000 tokens a minute: one every 60 ms.
        let l = Limiter::new(&limits(None, Some(1_000), None));
        assert_eq!(timed(&l, 600).await, Duration::ZERO);
        // 400 left; 600 more need 200 more cells: 12 s.
        assert_eq!(timed(&l, 600).await, Duration::from_secs(12));
        // A prompt over a minute's budget waits until the quota is full
        // (a minute: it was empty), not forever...
        assert_eq!(timed(&l, 5_000).await, Duration::from_secs(60));
        // ... and is charged in full: the next call waits for the 4,000
        // tokens over the burst (four minutes) and a minute for its own.
        assert_eq!(timed(&l, 1_000).await, Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_holds_a_permit_until_the_answer_ends() {
        let l = Arc::new(Limiter::new(&limits(None, None, Some(1))));
        let first = l.acquire(1, tokio::time::Instant::now()).await.unwrap();
        assert!(first._local.is_some());
        let waiting = {
            let l = l.clone();
            tokio::spawn(async move {
                l.acquire(1, tokio::time::Instant::now())
                    .await
                    .unwrap()
                    ._local
                    .is_some()
            })
        };
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished(), "a second call waits for the permit");
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), waiting)
                .await
                .unwrap()
                .unwrap()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_spends_only_its_share_of_the_quota_at_once() {
        // 600 a minute over 1 s windows: 10 at once, then one every 100 ms.
        let l = Limiter::new(&limits(Some(600), None, None).window(Duration::from_secs(1)));
        for _ in 0..10 {
            assert_eq!(timed(&l, 1).await, Duration::ZERO);
        }
        assert_eq!(timed(&l, 1).await, Duration::from_millis(100));
        // A window longer than a minute lets no more than the quota go.
        assert_eq!(
            limits(Some(5), None, None)
                .window(Duration::from_secs(600))
                .burst(5),
            5
        );
        assert_eq!(
            limits(Some(5), None, None)
                .window(Duration::from_millis(1))
                .burst(5),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limits_never_wait() {
        let l = Limiter::new(&Limits::default());
        for _ in 0..1_000 {
            assert_eq!(timed(&l, 1_000_000).await, Duration::ZERO);
        }
    }
}
