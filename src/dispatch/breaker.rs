//! Circuit breakers, one per provider and model: after `failures` failed
//! attempts within `window` (connection failures, timeouts, 5xx and 529,
//! 408 and 409: the classes worth retrying, rate limits aside), the model
//! is *open* for `cooldown`: calls skip it, so a fallback answers at once
//! instead of after the primary's timeouts and retries. When the cooldown
//! ends, one call is let through as a probe (*half-open*); its success
//! closes the circuit, its failure opens it for another cooldown.
//!
//! A 429 opens the circuit only for the time its `retry-after` names (no
//! probe follows), and is never counted as a failure: the model is busy,
//! not broken. Calls then go to a fallback at once; a call with no
//! fallback left waits that time, as it would for its own `retry-after`.
//!
//! State lives where the client's shared state does (see
//! [`StateConfig`](super::StateConfig)): in this process, or in Redis so
//! that every replica skips a model one replica found down (each replica
//! takes what Redis said of a circuit as true for 100 ms, so a call to a
//! healthy model costs no round trip; an opening reaches every replica
//! within that). When Redis cannot be reached, the breakers of this
//! process decide.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::error::{DispatchError, ErrorKind};

/// When to stop sending to a model for a while (`providers.yaml`:
/// `circuit_breaker: {failures: 5, window: 60s, cooldown: 30s}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreaker {
    /// Failed attempts within `window` that open the circuit; 0 turns the
    /// breaker off. Default 5.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// The time over which failures count. Default 60 s.
    #[serde(
        default = "default_window",
        deserialize_with = "super::duration::required"
    )]
    pub window: Duration,
    /// How long the circuit stays open before a probe. Default 30 s.
    #[serde(
        default = "default_cooldown",
        deserialize_with = "super::duration::required"
    )]
    pub cooldown: Duration,
}

fn default_failures() -> u32 {
    5
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}

impl Default for CircuitBreaker {
    fn default() -> CircuitBreaker {
        CircuitBreaker {
            failures: default_failures(),
            window: default_window(),
            cooldown: default_cooldown(),
        }
    }
}

impl CircuitBreaker {
    /// Opens after `failures` failed attempts within `window`, for
    /// `cooldown`.
    pub fn new(failures: u32, window: Duration, cooldown: Duration) -> CircuitBreaker {
        CircuitBreaker {
            failures,
            window,
            cooldown,
        }
    }

    /// No breaker: every call goes to the model.
    pub fn off() -> CircuitBreaker {
        CircuitBreaker {
            failures: 0,
            ..CircuitBreaker::default()
        }
    }

    pub(crate) fn is_off(&self) -> bool {
        self.failures == 0
    }

    /// Settings Redis and the clock can hold: `window` and `cooldown`
    /// within (0, 1 day].
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.is_off() {
            return Ok(());
        }
        super::duration::check("circuit_breaker.window", self.window)?;
        super::duration::check("circuit_breaker.cooldown", self.cooldown)
    }
}

/// What the breaker says about the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Send.
    Closed,
    /// Send: this attempt is the probe of a half-open circuit.
    Probe,
    /// Skip this model for now (it failed too often); a probe may go in
    /// the given time.
    Open(Duration),
    /// The model asked every caller to wait this long (a 429's
    /// `retry-after`): skip it when a fallback can answer, else wait.
    Waiting(Duration),
}

/// How a failed attempt counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A failure of the retryable classes: counts toward `failures`.
    Down,
    /// A 429 with a wait: opens the circuit for that long only.
    RateLimited(Duration),
}

impl Failure {
    /// How `e` counts, or `None` when it says nothing about the model's
    /// health (a bad request, a bad key, an unreadable answer).
    pub(crate) fn of(e: &DispatchError, longest_wait: Duration) -> Option<Failure> {
        match e.kind() {
            ErrorKind::Retryable | ErrorKind::Unavailable | ErrorKind::Timeout => {
                Some(Failure::Down)
            }
            ErrorKind::RateLimited => e
                .retry_after()
                .filter(|d| !d.is_zero())
                .map(|d| Failure::RateLimited(d.min(longest_wait))),
            _ => None,
        }
    }
}

/// The state of one model's circuit in this process.
#[derive(Default)]
struct Circuit {
    /// When recent failures happened (within the window).
    failures: VecDeque<Instant>,
    /// Open until then.
    open_until: Option<Instant>,
    /// Whether the end of the opening lets a probe through (a cooldown)
    /// or simply closes (a rate limit's wait).
    probe_after: bool,
    /// A probe is out until then (then another may go).
    probe_until: Option<Instant>,
}

/// The breakers of this process, by `provider\0model`.
#[derive(Default)]
pub(crate) struct LocalBreakers {
    circuits: Mutex<HashMap<String, Circuit>>,
}

/// At most this many circuits are kept; closed ones go first.
const MAX_CIRCUITS: usize = 4096;

pub(crate) fn key(provider: &str, model: &str) -> String {
    format!("{provider}\0{model}")
}

impl LocalBreakers {
    pub(crate) fn check(&self, key: &str, settings: &CircuitBreaker) -> Gate {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = circuits.get_mut(key) else {
            return Gate::Closed;
        };
        let now = Instant::now();
        let Some(until) = c.open_until else {
            return Gate::Closed;
        };
        if now < until {
            return if c.probe_after {
                Gate::Open(until - now)
            } else {
                Gate::Waiting(until - now)
            };
        }
        if !c.probe_after {
            c.open_until = None;
            return Gate::Closed;
        }
        if let Some(probe) = c.probe_until
            && now < probe
        {
            return Gate::Open(probe - now);
        }
        // One probe at a time; a probe that never reports back frees the
        // way for another after a cooldown.
        c.probe_until = Some(now + settings.cooldown);
        Gate::Probe
    }

    /// Counts a failure; says whether the circuit is now open.
    pub(crate) fn failure(&self, key: &str, settings: &CircuitBreaker, failure: Failure) -> bool {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        if circuits.len() >= MAX_CIRCUITS && !circuits.contains_key(key) {
            circuits.retain(|_, c| c.open_until.is_some());
            if circuits.len() >= MAX_CIRCUITS {
                circuits.clear();
            }
        }
        let c = circuits.entry(key.to_owned()).or_default();
        let now = Instant::now();
        match failure {
            Failure::RateLimited(wait) => {
                let until = now + wait;
                if c.open_until.is_none_or(|u| u < until) {
                    c.open_until = Some(until);
                }
                true
            }
            Failure::Down => {
                let half_open = c.probe_until.is_some();
                while c
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > settings.window)
                {
                    c.failures.pop_front();
                }
                c.failures.push_back(now);
                if half_open || c.failures.len() >= settings.failures as usize {
                    c.open_until = Some(now + settings.cooldown);
                    c.probe_after = true;
                    c.probe_until = None;
                    c.failures.clear();
                    true
                } else {
                    c.open_until.is_some_and(|u| now < u)
                }
            }
        }
    }

    /// A probe answered: the circuit closes.
    pub(crate) fn success(&self, key: &str) {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        circuits.remove(key);
    }
}

/// The breakers of a client: each model's circuit, kept where the
/// client's shared state is, with the settings of its provider.
pub(crate) struct Breakers {
    default: CircuitBreaker,
    local: LocalBreakers,
    #[cfg(feature = "redis")]
    state: Option<std::sync::Arc<super::state::Shared>>,
    /// With Redis: what it said of each circuit lately, so that a call to
    /// a closed circuit costs no round trip (see [`SEEN_FOR`]).
    #[cfg(feature = "redis")]
    seen: Mutex<HashMap<String, (Instant, Seen)>>,
}

/// How long a circuit Redis said was closed (or open until a time) is
/// taken as such without asking again: another replica's opening reaches
/// this process within this long.
#[cfg(feature = "redis")]
pub(crate) const SEEN_FOR: Duration = Duration::from_millis(100);

#[cfg(feature = "redis")]
#[derive(Clone, Copy)]
enum Seen {
    Closed,
    OpenUntil(Instant),
    WaitingUntil(Instant),
}

impl Breakers {
    /// Breakers with `default` settings for providers that set none,
    /// shared through `state` when it is in Redis.
    pub(crate) fn new(
        default: CircuitBreaker,
        state: Option<std::sync::Arc<super::state::Shared>>,
    ) -> Breakers {
        #[cfg(not(feature = "redis"))]
        let _ = state;
        Breakers {
            default,
            local: LocalBreakers::default(),
            #[cfg(feature = "redis")]
            state,
            #[cfg(feature = "redis")]
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn settings(&self, target: &super::Target) -> CircuitBreaker {
        target
            .provider
            .config
            .circuit_breaker
            .unwrap_or(self.default)
    }

    /// The Redis store and the circuit's key there, when shared.
    #[cfg(feature = "redis")]
    fn shared(&self, target: &super::Target) -> Option<(&super::redis::RedisStore, String)> {
        let store = self.state.as_ref()?.redis.as_deref()?;
        let key = store.key(&["breaker", &target.provider.name, &target.model]);
        Some((store, key))
    }

    /// Drops what Redis said of a circuit, so the next check asks again.
    #[cfg(feature = "redis")]
    fn forget(&self, key: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    #[cfg(feature = "redis")]
    fn warn(&self, e: &dyn std::fmt::Display) {
        if let Some(state) = &self.state {
            state.warn_outage(e);
        }
    }

    /// Whether the next attempt at `target` may go.
    pub(crate) async fn check(&self, target: &super::Target) -> Gate {
        let settings = self.settings(target);
        if settings.is_off() {
            return Gate::Closed;
        }
        #[cfg(feature = "redis")]
        if let Some((store, key)) = self.shared(target) {
            let now = Instant::now();
            let seen = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .copied();
            match seen {
                Some((at, Seen::Closed)) if now.duration_since(at) < SEEN_FOR => {
                    return Gate::Closed;
                }
                Some((at, Seen::OpenUntil(until)))
                    if now.duration_since(at) < SEEN_FOR && now < until =>
                {
                    return Gate::Open(until - now);
                }
                Some((at, Seen::WaitingUntil(until)))
                    if now.duration_since(at) < SEEN_FOR && now < until =>
                {
                    return Gate::Waiting(until - now);
                }
                _ => {}
            }
            match store.breaker_check(&key, &settings).await {
                Ok(gate) => {
                    let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                    if seen.len() >= MAX_CIRCUITS {
                        seen.clear();
                    }
                    match gate {
                        Gate::Closed => seen.insert(key, (now, Seen::Closed)),
                        Gate::Open(wait) => seen.insert(key, (now, Seen::OpenUntil(now + wait))),
                        Gate::Waiting(wait) => {
                            seen.insert(key, (now, Seen::WaitingUntil(now + wait)))
                        }
                        // Each call after the probe asks Redis again.
                        Gate::Probe => seen.remove(&key),
                    };
                    return gate;
                }
                Err(e) => self.warn(&e),
            }
        }
        self.local
            .check(&key(&target.provider.name, &target.model), &settings)
    }

    /// Counts a failed attempt at `target`; whether its circuit is now
    /// open. A 429's wait opens it for at most `longest_wait` (the retry
    /// policy's `max_retry_after`).
    pub(crate) async fn failure(
        &self,
        target: &super::Target,
        error: &DispatchError,
        longest_wait: Duration,
    ) -> bool {
        let settings = self.settings(target);
        let Some(failure) = Failure::of(error, longest_wait).filter(|_| !settings.is_off()) else {
            return false;
        };
        #[cfg(feature = "redis")]
        if let Some((store, key)) = self.shared(target) {
            self.forget(&key);
            match store.breaker_failure(&key, &settings, failure).await {
                Ok(open) => return open,
                Err(e) => self.warn(&e),
            }
        }
        self.local.failure(
            &key(&target.provider.name, &target.model),
            &settings,
            failure,
        )
    }

    /// The probe at `target` answered: its circuit closes.
    pub(crate) async fn success(&self, target: &super::Target) {
        #[cfg(feature = "redis")]
        if let Some((store, key)) = self.shared(target) {
            self.forget(&key);
            if let Err(e) = store.breaker_success(&key).await {
                self.warn(&e);
            }
        }
        self.local
            .success(&key(&target.provider.name, &target.model));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CircuitBreaker {
        CircuitBreaker::new(3, Duration::from_secs(10), Duration::from_secs(5))
    }

    #[tokio::test(start_paused = true)]
    async fn failures_open_the_circuit_a_probe_closes_it() {
        let b = LocalBreakers::default();
        let s = settings();
        assert_eq!(b.check("k", &s), Gate::Closed);
        assert!(!b.failure("k", &s, Failure::Down));
        assert!(!b.failure("k", &s, Failure::Down));
        assert_eq!(b.check("k", &s), Gate::Closed, "two failures of three");
        assert!(b.failure("k", &s, Failure::Down));
        assert_eq!(b.check("k", &s), Gate::Open(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.check("k", &s), Gate::Probe);
        assert!(
            matches!(b.check("k", &s), Gate::Open(_)),
            "one probe at a time"
        );
        b.success("k");
        assert_eq!(b.check("k", &s), Gate::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_and_old_failures_expire() {
        let b = LocalBreakers::default();
        let s = settings();
        for _ in 0..3 {
            b.failure("k", &s, Failure::Down);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.check("k", &s), Gate::Probe);
        assert!(b.failure("k", &s, Failure::Down), "the probe failed");
        assert_eq!(b.check("k", &s), Gate::Open(Duration::from_secs(5)));
        b.success("k");
        // Failures further apart than the window never add up.
        for _ in 0..5 {
            assert!(!b.failure("other", &s, Failure::Down));
            tokio::time::advance(Duration::from_secs(6)).await;
        }
        assert_eq!(b.check("other", &s), Gate::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_opens_only_for_its_wait_and_needs_no_probe() {
        let b = LocalBreakers::default();
        let s = settings();
        assert!(b.failure("k", &s, Failure::RateLimited(Duration::from_secs(2))));
        assert_eq!(b.check("k", &s), Gate::Waiting(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.check("k", &s), Gate::Closed);
        assert_eq!(b.check("k", &s), Gate::Closed);
    }
}
