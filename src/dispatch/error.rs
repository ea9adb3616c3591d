//! [`DispatchError`]: every way a call to a provider can fail, classified.
//!
//! One opaque error, as [`crate::Error`] is for loading and rendering (and
//! as reqwest's is): a [`kind`](DispatchError::kind) to match on, and
//! predicates and accessors for what a caller decides by (whether to try
//! again and when, who failed, with what status, what arrived before a
//! stream broke). New kinds and fields can come without breaking callers.

use std::fmt;
use std::time::Duration;

use super::response::Response;

/// Which timeout expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Opening the connection.
    Connect,
    /// The whole request (for a stream: until the response headers).
    Request,
    /// The time between two events of a stream.
    Idle,
    /// A whole stream, from the request to its last event.
    Stream,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Request => "request",
            TimeoutKind::Idle => "stream idle",
            TimeoutKind::Stream => "whole stream",
        })
    }
}

/// What kind of failure a [`DispatchError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing was sent: an unknown provider, a missing API key, no model
    /// to send to, a bad `providers.yaml`.
    Config,
    /// The prompt cannot be prepared for the target model (it does not fit
    /// the model's context window even after truncation); see
    /// [`DispatchError::prompt_error`].
    Prompt,
    /// A transient failure worth retrying: the connection failed or broke,
    /// or the provider answered 408 or 409. Retried; this is what remained
    /// after the last attempt.
    Retryable,
    /// 429: the provider's rate limit; see
    /// [`DispatchError::retry_after`].
    RateLimited,
    /// 401 or 403: the key is missing, wrong or not allowed this model.
    Authentication,
    /// Another 4xx (or a redirect, which is never followed): the provider
    /// rejected the request; its message says why.
    InvalidRequest,
    /// 5xx, or Anthropic's 529 "overloaded".
    Unavailable,
    /// A timeout expired; see [`DispatchError::timeout`].
    Timeout,
    /// The answer could not be understood (malformed JSON, an unexpected
    /// shape, over a size bound), or a stream failed after part of the
    /// reply was delivered; see [`DispatchError::partial`].
    Stream,
    /// The answer is not what the template's `output:` schema asks for:
    /// not JSON, breaking the schema (see [`DispatchError::output_problem`]
    /// for the JSON pointer and the rule), or cut off by `max_tokens`
    /// before its JSON ended. The raw answer is in
    /// [`DispatchError::partial`].
    InvalidOutput,
    /// Every model to try had its circuit open: each failed often enough
    /// lately that calls skip it for a while (see
    /// [`CircuitBreaker`](super::CircuitBreaker)). Nothing was sent;
    /// [`DispatchError::retry_after`] says when the first may take calls
    /// again.
    CircuitOpen,
    /// The shared state (Redis) could not be reached for
    /// `state.outage_wait` and the outage policy is `fail_closed`: nothing
    /// was sent.
    SharedState,
}

impl ErrorKind {
    /// A short name: `config`, `prompt`, `retryable`, `rate_limited`,
    /// `authentication`, `invalid_request`, `unavailable`, `timeout`,
    /// `stream`, `invalid_output`, `circuit_open`, `shared_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Prompt => "prompt",
            ErrorKind::Retryable => "retryable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Authentication => "authentication",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Stream => "stream",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::SharedState => "shared_state",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed dispatch. Messages from providers are kept (they say what was
/// wrong) with any API key scrubbed out; nothing here holds a key or a
/// header value, so `Debug` and `Display` are safe to log.
pub struct DispatchError {
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    provider: Option<String>,
    status: Option<u16>,
    message: String,
    retry_after: Option<Duration>,
    timeout: Option<(TimeoutKind, Duration)>,
    partial: Option<Box<Response>>,
    prompt: Option<crate::error::Error>,
    output: Option<OutputProblem>,
    attempts: u32,
    open_circuits: Vec<String>,
}

/// Where and how an answer broke the output schema.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputProblem {
    /// The JSON pointer into the answer (`/lines/0/qty`; empty for the
    /// whole answer).
    pub pointer: String,
    /// The JSON Schema keyword broken (`required`, `type`, `enum`, ...),
    /// `json` for an answer that is not JSON, `length` for one cut off by
    /// `max_tokens`.
    pub rule: String,
}

impl DispatchError {
    fn new(kind: ErrorKind, provider: Option<&str>, message: String) -> DispatchError {
        DispatchError {
            inner: Box::new(Inner {
                kind,
                provider: provider.map(str::to_owned),
                status: None,
                message,
                retry_after: None,
                timeout: None,
                partial: None,
                prompt: None,
                output: None,
                attempts: 0,
                open_circuits: Vec::new(),
            }),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> DispatchError {
        DispatchError::new(ErrorKind::Config, None, message.into())
    }

    pub(crate) fn prompt(e: crate::error::Error) -> DispatchError {
        let mut err = DispatchError::new(ErrorKind::Prompt, None, e.to_string());
        err.inner.prompt = Some(e);
        err
    }

    /// An error of `kind` from `provider`, with its HTTP status when there
    /// was one.
    pub(crate) fn from_provider(
        kind: ErrorKind,
        provider: &str,
        status: Option<u16>,
        message: impl Into<String>,
    ) -> DispatchError {
        let mut err = DispatchError::new(kind, Some(provider), message.into());
        err.inner.status = status;
        err
    }

    pub(crate) fn rate_limited(
        provider: &str,
        retry_after: Option<Duration>,
        message: String,
    ) -> DispatchError {
        let mut err =
            DispatchError::from_provider(ErrorKind::RateLimited, provider, Some(429), message);
        err.inner.retry_after = retry_after;
        err
    }

    /// Every target's circuit was open; the first reopens after
    /// `retry_after`.
    pub(crate) fn circuit_open(
        provider: &str,
        retry_after: Duration,
        message: String,
    ) -> DispatchError {
        let mut err = DispatchError::new(ErrorKind::CircuitOpen, Some(provider), message);
        err.inner.retry_after = Some(retry_after);
        err
    }

    #[cfg(feature = "redis")]
    /// The shared state could not be reached (`fail_closed`).
    pub(crate) fn shared_state(message: String) -> DispatchError {
        DispatchError::new(ErrorKind::SharedState, None, message)
    }

    pub(crate) fn timed_out(provider: &str, kind: TimeoutKind, after: Duration) -> DispatchError {
        let mut err = DispatchError::new(ErrorKind::Timeout, Some(provider), String::new());
        err.inner.timeout = Some((kind, after));
        err
    }

    /// A [`ErrorKind::Stream`] error, with what had arrived.
    pub(crate) fn stream(
        provider: &str,
        message: impl Into<String>,
        partial: Response,
    ) -> DispatchError {
        let mut err = DispatchError::new(ErrorKind::Stream, Some(provider), message.into());
        err.inner.partial = Some(Box::new(partial));
        err
    }

    /// An [`ErrorKind::InvalidOutput`] error about `answer`.
    pub(crate) fn invalid_output(
        answer: Response,
        pointer: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> DispatchError {
        let provider = answer.provider.clone();
        let mut err = DispatchError::new(
            ErrorKind::InvalidOutput,
            Some(provider.as_str()).filter(|p| !p.is_empty()),
            message.into(),
        );
        err.inner.output = Some(OutputProblem {
            pointer: pointer.into(),
            rule: rule.into(),
        });
        err.inner.partial = Some(Box::new(answer));
        err
    }

    /// Where and how the answer broke the output schema, for
    /// [`ErrorKind::InvalidOutput`].
    pub fn output_problem(&self) -> Option<&OutputProblem> {
        self.inner.output.as_ref()
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// A short name of the kind (see [`ErrorKind::as_str`]).
    pub fn class(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    /// Whether another attempt may succeed (retryable, rate-limited,
    /// unavailable, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Retryable
                | ErrorKind::RateLimited
                | ErrorKind::Unavailable
                | ErrorKind::Timeout
        )
    }

    /// The wait the provider asked for (`retry-after-ms` or `retry-after`,
    /// capped at a day), for [`ErrorKind::RateLimited`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// HTTP attempts the call made before it failed, over all models
    /// tried (0 when it failed before sending, as for a missing key or an
    /// open circuit).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// The models (`provider:model`) the call skipped because their
    /// circuit was open, as [`Response::open_circuits`] says for an answer.
    pub fn open_circuits(&self) -> &[String] {
        &self.inner.open_circuits
    }

    /// The same error, saying the call made `attempts` attempts and
    /// skipped the models of `open_circuits`.
    pub(crate) fn after(mut self, attempts: u32, open_circuits: &[String]) -> DispatchError {
        self.inner.attempts = attempts;
        self.inner.open_circuits = open_circuits.to_vec();
        self
    }

    /// The provider the error comes from, when it comes from one.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// The HTTP status of the provider's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// What went wrong: the provider's own message (scrubbed of the key,
    /// at most 500 characters of it), or ours.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Which timeout expired and its length, for [`ErrorKind::Timeout`].
    pub fn timeout(&self) -> Option<(TimeoutKind, Duration)> {
        self.inner.timeout
    }

    /// What a stream delivered before it failed (text, tool calls, usage
    /// so far), for [`ErrorKind::Stream`]; empty when nothing had arrived.
    /// For [`ErrorKind::InvalidOutput`], the whole answer as it came.
    pub fn partial(&self) -> Option<&Response> {
        self.inner.partial.as_deref()
    }

    /// The render error behind an [`ErrorKind::Prompt`] error.
    pub fn prompt_error(&self) -> Option<&crate::error::Error> {
        self.inner.prompt.as_ref()
    }
}

impl fmt::Debug for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("DispatchError");
        d.field("kind", &i.kind);
        if let Some(p) = &i.provider {
            d.field("provider", p);
        }
        if let Some(s) = i.status {
            d.field("status", &s);
        }
        if !i.message.is_empty() {
            d.field("message", &i.message);
        }
        if let Some(r) = i.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(t) = i.timeout {
            d.field("timeout", &t);
        }
        if let Some(p) = &i.partial {
            d.field("partial_chars", &p.text.chars().count());
        }
        d.finish()
    }
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let provider = i.provider.as_deref().unwrap_or("");
        let message = &i.message;
        match i.kind {
            ErrorKind::Config => write!(f, "configuration: {message}"),
            ErrorKind::Prompt => write!(f, "prompt: {message}"),
            ErrorKind::Retryable => match i.status {
                Some(s) => write!(f, "{provider}: transient error (HTTP {s}): {message}"),
                None => write!(f, "{provider}: connection error: {message}"),
            },
            ErrorKind::RateLimited => {
                write!(f, "{provider}: rate limited (HTTP 429")?;
                if let Some(d) = i.retry_after {
                    write!(f, ", retry after {:.3} s", d.as_secs_f64())?;
                }
                write!(f, "): {message}")
            }
            ErrorKind::Authentication => write!(
                f,
                "{provider}: authentication failed (HTTP {}): {message}",
                i.status.unwrap_or(401)
            ),
            ErrorKind::InvalidRequest => write!(
                f,
                "{provider}: invalid request (HTTP {}): {message}",
                i.status.unwrap_or(400)
            ),
            ErrorKind::Unavailable => write!(
                f,
                "{provider}: provider unavailable (HTTP {}): {message}",
                i.status.unwrap_or(500)
            ),
            ErrorKind::Timeout => {
                let (kind, after) = i.timeout.unwrap_or((TimeoutKind::Request, Duration::ZERO));
                write!(
                    f,
                    "{provider}: {kind} timeout after {:.3} s",
                    after.as_secs_f64()
                )
            }
            ErrorKind::Stream => match i.partial.as_ref().map_or(0, |p| p.text.chars().count()) {
                0 => write!(f, "{provider}: the answer could not be read: {message}"),
                n => write!(
                    f,
                    "{provider}: the answer broke off after {n} characters: {message}"
                ),
            },
            ErrorKind::InvalidOutput => {
                let at = i
                    .output
                    .as_ref()
                    .filter(|o| !o.pointer.is_empty())
                    .map_or_else(String::new, |o| format!(" at `{}`", o.pointer));
                let rule = i
                    .output
                    .as_ref()
                    .map_or_else(String::new, |o| format!(" ({})", o.rule));
                write!(f, "{provider}: invalid output{at}{rule}: {message}")
            }
            ErrorKind::CircuitOpen => write!(f, "{provider}: circuit open: {message}"),
            ErrorKind::SharedState => write!(f, "shared state unreachable: {message}"),
        }
    }
}

impl std::error::Error for DispatchError {
    /// A prompt error's own cause: its message is already this error's
    /// (the prompt error itself is [`DispatchError::prompt_error`]), so a
    /// chain printed cause by cause says it once.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .prompt
            .as_ref()
            .and_then(|e| std::error::Error::source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_retries_and_print_their_class() {
        let e = DispatchError::rate_limited("openai", Some(Duration::from_secs(2)), "slow".into());
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.class(), "rate_limited");
        assert_eq!(
            e.to_string(),
            "openai: rate limited (HTTP 429, retry after 2.000 s): slow"
        );
        let e = DispatchError::from_provider(ErrorKind::InvalidRequest, "a", Some(400), "bad");
        assert!(!e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        let e = DispatchError::timed_out("a", TimeoutKind::Idle, Duration::from_secs(1));
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "a: stream idle timeout after 1.000 s");
        let e = DispatchError::stream("a", "cut", Response::default());
        assert_eq!(e.partial().map(|p| p.text.as_str()), Some(""));
    }

    #[test]
    fn the_error_is_small_and_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DispatchError>();
        assert_eq!(
            std::mem::size_of::<DispatchError>(),
            std::mem::size_of::<usize>()
        );
    }
}
