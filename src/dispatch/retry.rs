//! When to try again: the retry policy (exponential backoff with full
//! jitter), the wait a provider asks for in `retry-after-ms` /
//! `retry-after`, and the retry-and-fallback loop, written once for whole
//! answers and streams.
//!
//! The loop tries the model, then each fallback in order. At one model it
//! tries again while the failure is retryable (a connection error, a
//! timeout, 408, 409, 429, 5xx) and nothing reached the caller yet,
//! waiting [`RetryPolicy::delay`] between; the next model gets its turn
//! after such a failure, never after a request error (the next model
//! would not fix it) or once part of a stream was delivered. Every attempt
//! first waits for the provider's client-side limits. The whole call, all
//! attempts and waits included, runs within one [`Budget`].
//!
//! Every header value comes from the server and is untrusted: it is parsed
//! without panicking, and capped before it becomes a [`Duration`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use reqwest::header::HeaderMap;

use super::breaker::{Breakers, Gate};
use super::error::DispatchError;
use super::{Prepared, Target};

/// When and how often to retry.
///
/// Defaults follow the official OpenAI and Anthropic SDKs: 2 retries (3
/// attempts), exponential backoff from 0.5 s up to 8 s with full jitter
/// (each wait is uniform in `[0, min(max_delay, initial_delay * 2^n)]`),
/// and a provider's `retry-after-ms`/`retry-after` honoured up to 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The backoff's first ceiling.
    pub initial_delay: Duration,
    /// The backoff's largest ceiling.
    pub max_delay: Duration,
    /// The longest `retry-after` honoured; longer ones are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// `max_retries` retries, other settings as default.
    pub fn retries(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        }
    }

    /// Sets the backoff's first and largest ceilings.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> RetryPolicy {
        self.initial_delay = initial;
        self.max_delay = max.max(initial);
        self
    }

    /// Sets the longest `retry-after` honoured.
    pub fn max_retry_after(mut self, max: Duration) -> RetryPolicy {
        self.max_retry_after = max;
        self
    }

    /// The wait before retry number `retry` (1-based): the provider's
    /// `retry_after` (capped) when it gave one, else full jitter.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_retry_after);
        }
        let ceiling = self
            .initial_delay
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20))
            .min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// What one attempt came to.
pub(crate) enum Outcome<T> {
    /// An answer.
    Done(T),
    /// An answer that took no request (from the cache).
    Reused(T),
    /// The caller went away (a dropped stream): stop, quietly.
    Gone,
    /// A failure; `delivered` when part of the answer had already reached
    /// the caller.
    Failed {
        error: DispatchError,
        delivered: bool,
    },
}

/// What the loop came to: the answer, from which target, after how many
/// attempts (requests made).
#[derive(Debug)]
pub(crate) struct Finished<T> {
    pub value: T,
    pub target: usize,
    pub attempts: u32,
    /// The targets skipped because their circuit was open
    /// (`provider:model`).
    pub open_circuits: Vec<String>,
}

/// Runs the loop of the module docs over `targets`: `prepare` makes a
/// target's request (an error ends the loop: the prompt does not fit, a
/// key is missing), `attempt` makes one attempt with it. `Ok(None)` when
/// the caller went away.
///
/// # Errors
/// The last failure, when no target answered.
pub(crate) async fn run<'c, T>(
    targets: &'c [Target],
    policy: &RetryPolicy,
    budget: Budget,
    breakers: &Breakers,
    mut prepare: impl FnMut(&Target) -> Result<Prepared, DispatchError>,
    mut attempt: impl FnMut(&'c Target, Arc<Prepared>, u32) -> BoxFuture<'c, Outcome<T>>,
) -> Result<Option<Finished<T>>, DispatchError> {
    let call_started = tokio::time::Instant::now();
    let deadline = call_started + budget.whole;
    let mut attempts = 0;
    let mut last = None;
    let mut open_circuits = Vec::new();
    // The soonest an open circuit lets a call through, and whose it is.
    let mut soonest_open: Option<(Duration, &str)> = None;
    for (i, target) in targets.iter().enumerate() {
        let gate = breakers.check(target).await;
        let skip = match gate {
            Gate::Open(wait) => Some(wait),
            Gate::Waiting(wait) if i + 1 < targets.len() => Some(wait),
            // The last model asked every caller to wait (a 429 another
            // call or replica got): wait, as for a retry-after of one's
            // own, when the budget allows.
            Gate::Waiting(wait) => {
                let wait = wait.min(policy.max_retry_after);
                if tokio::time::Instant::now() + wait >= deadline {
                    Some(wait)
                } else {
                    tokio::time::sleep(wait).await;
                    None
                }
            }
            Gate::Closed | Gate::Probe => None,
        };
        if let Some(wait) = skip {
            let name = format!("{}:{}", target.provider.name, target.model);
            tracing::info!(
                model = %name,
                reopens_in_ms = wait.as_millis() as u64,
                "circuit open; skipping this model"
            );
            open_circuits.push(name);
            if soonest_open.is_none_or(|(w, _)| wait < w) {
                soonest_open = Some((wait, &target.provider.name));
            }
            continue;
        }
        let prepared = Arc::new(prepare(target)?);
        let mut retry = 0;
        let failed = loop {
            let out_of_time = |made: u32| {
                DispatchError::timed_out(&target.provider.name, budget.kind, budget.whole)
                    .after(made, &open_circuits)
            };
            let permit = tokio::time::timeout_at(
                deadline,
                target
                    .provider
                    .limiter
                    .acquire(prepared.prompt_tokens, call_started),
            )
            .await
            .map_err(|_| out_of_time(attempts))?
            .map_err(|e| e.after(attempts, &open_circuits))?;
            let started = std::time::Instant::now();
            let outcome =
                tokio::time::timeout_at(deadline, attempt(target, prepared.clone(), retry))
                    .await
                    .map_err(|_| out_of_time(attempts + 1))?;
            permit.release().await;
            let (error, delivered) = match outcome {
                Outcome::Reused(value) => {
                    return Ok(Some(Finished {
                        value,
                        target: i,
                        attempts,
                        open_circuits,
                    }));
                }
                Outcome::Done(value) => {
                    if gate == Gate::Probe {
                        breakers.success(target).await;
                    }
                    return Ok(Some(Finished {
                        value,
                        target: i,
                        attempts: attempts + 1,
                        open_circuits,
                    }));
                }
                Outcome::Gone => return Ok(None),
                Outcome::Failed { error, delivered } => (error, delivered),
            };
            attempts += 1;
            let opened = breakers
                .failure(target, &error, policy.max_retry_after)
                .await;
            tracing::debug!(
                provider = %target.provider.name,
                model = %target.model,
                attempt = attempts,
                latency_ms = started.elapsed().as_millis() as u64,
                error = %error,
                "attempt failed"
            );
            if delivered || !error.is_retryable() || retry >= policy.max_retries {
                break (error, delivered);
            }
            // A model whose circuit just opened is not tried again while
            // a fallback can answer now.
            if opened && i + 1 < targets.len() {
                break (error, delivered);
            }
            retry += 1;
            let delay = policy.delay(retry, error.retry_after());
            // No attempt that could not start before the budget ends.
            if tokio::time::Instant::now() + delay >= deadline {
                break (error, delivered);
            }
            tracing::info!(
                provider = %target.provider.name,
                error = %error,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(delay).await;
        };
        match failed {
            // The model is down or overloaded, not the request wrong: the
            // next one may answer.
            (error, false) if error.is_retryable() && i + 1 < targets.len() => {
                tracing::warn!(
                    provider = %target.provider.name,
                    model = %target.model,
                    error = %error,
                    "model failed; trying the next fallback"
                );
                last = Some(error);
            }
            (error, _) => return Err(error.after(attempts, &open_circuits)),
        }
    }
    if let Some((wait, provider)) = soonest_open.filter(|_| last.is_none()) {
        return Err(DispatchError::circuit_open(
            provider,
            wait,
            format!(
                "{} {} skipped: {} failed too often lately or asked to wait (429); the first \
                 takes calls again in {:.1} s",
                open_circuits.join(", "),
                if open_circuits.len() == 1 {
                    "is"
                } else {
                    "are"
                },
                if open_circuits.len() == 1 {
                    "it"
                } else {
                    "each"
                },
                wait.as_secs_f64()
            ),
        )
        .after(attempts, &open_circuits));
    }
    Err(last
        .map(|e| e.after(attempts, &open_circuits))
        .unwrap_or_else(|| DispatchError::config("no model to send to")))
}

/// How long a whole call may take, retries, waits and fallbacks
/// included: no attempt starts after it, and one still running is stopped
/// as a timeout of `kind` (its length is the longer of
/// [`Timeouts::request`](super::Timeouts) and `stream`, 600 s by default).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub whole: Duration,
    pub kind: super::TimeoutKind,
}

/// The longest wait read from a header before the policy's own cap: one
/// day. Larger values (`1e20`, `18446744073709551616`) are cut to it
/// before they become a `Duration`, which would overflow.
const MAX_HEADER_WAIT: f64 = 86_400.0;

/// The wait a provider asked for, when it said: `retry-after-ms`
/// (milliseconds, sent by OpenAI), else `retry-after` (RFC 9110 section
/// 10.2.3: delay-seconds, or an HTTP-date measured from `now`; a date in
/// the past is no wait). Fractional seconds are accepted. A value that
/// does not parse, is negative or is not finite is ignored; a huge one is
/// cut to a day (the policy's `max_retry_after` cuts further).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let number =
        |s: &str| -> Option<f64> { s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0) };
    let capped = |seconds: f64| Duration::from_secs_f64(seconds.min(MAX_HEADER_WAIT));
    if let Some(ms) = text("retry-after-ms").and_then(number) {
        return Some(capped(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Some(s) = number(value) {
        return Some(capped(s));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(wait.min(Duration::from_secs_f64(MAX_HEADER_WAIT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(pairs: &[(&str, &str)]) -> Option<Duration> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        retry_after(&h, now)
    }

    #[test]
    fn both_forms_of_retry_after_are_read() {
        assert_eq!(after(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
        assert_eq!(
            after(&[("retry-after", " 1.5 ")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            after(&[("retry-after-ms", "250"), ("retry-after", "9")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            after(&[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            after(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(after(&[]), None);
    }

    #[test]
    fn hostile_values_never_panic_and_are_capped() {
        let day = Some(Duration::from_secs(86_400));
        for huge in [
            "1e20",
            "18446744073709551616",
            "1e308",
            "99999999999999999999999",
        ] {
            assert_eq!(after(&[("retry-after", huge)]), day, "{huge}");
        }
        assert_eq!(after(&[("retry-after-ms", "1e30")]), day);
        for junk in [
            "-1",
            "NaN",
            "inf",
            "-inf",
            "",
            "soon",
            "1e",
            "0x10",
            "Sun, 99 Nov",
        ] {
            assert_eq!(after(&[("retry-after", junk)]), None, "{junk}");
            assert_eq!(after(&[("retry-after-ms", junk)]), None, "{junk}");
        }
        assert_eq!(
            RetryPolicy::default().delay(1, after(&[("retry-after", "1e20")])),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn backoff_stays_inside_its_full_jitter_bounds() {
        let p = RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        for retry in 1..40 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << (retry - 1).min(20))
                .min(Duration::from_secs(1));
            for _ in 0..50 {
                let d = p.delay(retry, None);
                assert!(d <= ceiling, "retry {retry}: {d:?} over {ceiling:?}");
            }
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }
}

#[cfg(test)]
mod loop_tests {
    use std::sync::Mutex;

    use super::*;
    use crate::dispatch::breaker::CircuitBreaker;
    use crate::dispatch::error::ErrorKind;
    use crate::dispatch::limiter::Limiter;
    use crate::dispatch::{Provider, ProviderConfig, ProviderKind};

    fn provider(name: &str) -> Provider {
        Provider::new(
            name.into(),
            ProviderConfig::new(ProviderKind::Openai, "http://127.0.0.1:9", None),
            Limiter::new(&Default::default()),
        )
    }

    fn prepared() -> Prepared {
        Prepared {
            body: serde_json::Value::Null,
            prompt_tokens: 0,
            key: None,
            deterministic: false,
            partial_output: false,
        }
    }

    fn unavailable(after: Option<u64>) -> DispatchError {
        match after {
            Some(s) => {
                DispatchError::rate_limited("p", Some(Duration::from_secs(s)), "wait".into())
            }
            None => DispatchError::from_provider(ErrorKind::Unavailable, "p", Some(503), "down"),
        }
    }

    /// Runs the loop over providers `names` with a script of outcomes per
    /// call; returns what it came to, the calls made (target index, retry
    /// number) and the virtual time that passed.
    async fn run_script(
        names: &[&str],
        policy: RetryPolicy,
        script: Vec<Outcome<&'static str>>,
    ) -> (
        Result<Option<Finished<&'static str>>, DispatchError>,
        Vec<(String, u32)>,
        Duration,
    ) {
        let providers: Vec<Provider> = names.iter().map(|n| provider(n)).collect();
        let targets: Vec<Target> = providers
            .into_iter()
            .map(|p| Target {
                provider: Arc::new(p),
                model: "m".into(),
            })
            .collect();
        let script = Mutex::new(script.into_iter());
        let calls = Mutex::new(Vec::new());
        let started = tokio::time::Instant::now();
        let result = run(
            &targets,
            &policy,
            Budget {
                whole: Duration::from_secs(600),
                kind: super::super::TimeoutKind::Request,
            },
            &Breakers::new(CircuitBreaker::off(), None),
            |_| Ok(prepared()),
            |target, _, retry| {
                calls
                    .lock()
                    .unwrap()
                    .push((target.provider.name.clone(), retry));
                let next = script.lock().unwrap().next().expect("the script ran out");
                Box::pin(async move { next })
            },
        )
        .await;
        let calls = calls.into_inner().unwrap();
        (result, calls, started.elapsed())
    }

    fn failed(e: DispatchError) -> Outcome<&'static str> {
        Outcome::Failed {
            error: e,
            delivered: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_the_wait_taken_and_is_capped() {
        let policy = RetryPolicy::retries(2).max_retry_after(Duration::from_secs(60));
        let (result, calls, waited) = run_script(
            &["a"],
            policy,
            vec![
                failed(unavailable(Some(3))),
                failed(unavailable(Some(90))),
                Outcome::Done("answer"),
            ],
        )
        .await;
        let finished = result.unwrap().unwrap();
        assert_eq!((finished.value, finished.attempts), ("answer", 3));
        assert_eq!(calls, [("a".into(), 0), ("a".into(), 1), ("a".into(), 2)]);
        assert_eq!(
            waited,
            Duration::from_secs(3 + 60),
            "3 s, then 90 s cut to 60 s"
        );
    }

    /// Attempts that each run 400 s before timing out: the second is
    /// stopped when the call's 600 s are up, and no third starts. (Three
    /// full attempts took 1,800 s before.)
    #[tokio::test(start_paused = true)]
    async fn the_whole_call_ends_within_its_budget() {
        let targets = [
            Target {
                provider: Arc::new(provider("a")),
                model: "m".into(),
            },
            Target {
                provider: Arc::new(provider("b")),
                model: "m".into(),
            },
        ];
        let calls = Mutex::new(0u32);
        let started = tokio::time::Instant::now();
        let result: Result<Option<Finished<()>>, _> = run(
            &targets,
            &RetryPolicy::retries(2),
            Budget {
                whole: Duration::from_secs(600),
                kind: super::super::TimeoutKind::Stream,
            },
            &Breakers::new(CircuitBreaker::off(), None),
            |_| Ok(prepared()),
            |target, _, _| {
                *calls.lock().unwrap() += 1;
                let name = target.provider.name.clone();
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_secs(400)).await;
                    failed_unit(DispatchError::timed_out(
                        &name,
                        super::super::TimeoutKind::Request,
                        Duration::from_secs(400),
                    ))
                })
            },
        )
        .await;
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(
            e.timeout(),
            Some((super::super::TimeoutKind::Stream, Duration::from_secs(600)))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(600));
        assert_eq!(*calls.lock().unwrap(), 2);
    }

    fn failed_unit(e: DispatchError) -> Outcome<()> {
        Outcome::Failed {
            error: e,
            delivered: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_waits_stay_inside_their_jitter_bounds() {
        let policy =
            RetryPolicy::retries(3).backoff(Duration::from_millis(400), Duration::from_secs(1));
        let (result, _, waited) = run_script(
            &["a"],
            policy,
            vec![
                failed(unavailable(None)),
                failed(unavailable(None)),
                failed(unavailable(None)),
                failed(unavailable(None)),
            ],
        )
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unavailable);
        // Ceilings 400 ms, 800 ms, then 1 s (the cap).
        assert!(
            waited <= Duration::from_millis(400 + 800 + 1000),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_that_stays_down_hands_over_to_the_next() {
        let (result, calls, _) = run_script(
            &["a", "b"],
            RetryPolicy::retries(1).backoff(Duration::from_millis(1), Duration::from_millis(1)),
            vec![
                failed(unavailable(None)),
                failed(unavailable(None)),
                Outcome::Done("from b"),
            ],
        )
        .await;
        let finished = result.unwrap().unwrap();
        assert_eq!(
            (finished.value, finished.target, finished.attempts),
            ("from b", 1, 3)
        );
        assert_eq!(calls, [("a".into(), 0), ("a".into(), 1), ("b".into(), 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn request_errors_and_delivered_streams_are_final() {
        let bad = DispatchError::from_provider(ErrorKind::InvalidRequest, "p", Some(400), "bad");
        let (result, calls, _) =
            run_script(&["a", "b"], RetryPolicy::retries(2), vec![failed(bad)]).await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidRequest);
        assert_eq!(calls.len(), 1, "not retried, no fallback");

        let (result, calls, _) = run_script(
            &["a", "b"],
            RetryPolicy::retries(2),
            vec![Outcome::Failed {
                error: unavailable(None),
                delivered: true,
            }],
        )
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(calls.len(), 1, "part of it reached the caller: final");
    }

    #[tokio::test(start_paused = true)]
    async fn reused_answers_take_no_attempt_and_gone_callers_stop() {
        let (result, _, _) = run_script(
            &["a"],
            RetryPolicy::retries(2),
            vec![Outcome::Reused("cached")],
        )
        .await;
        let finished = result.unwrap().unwrap();
        assert_eq!((finished.value, finished.attempts), ("cached", 0));
        let (result, calls, _) =
            run_script(&["a", "b"], RetryPolicy::retries(2), vec![Outcome::Gone]).await;
        assert!(result.unwrap().is_none());
        assert_eq!(calls.len(), 1);
    }
}
