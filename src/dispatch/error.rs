//! [`DispatchError`]: every way a call to a provider can fail, classified.

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

/// A failed dispatch. Messages from providers are kept (they say what was
/// wrong) with any API key scrubbed out; no variant holds a key or a header
/// value, so `Debug` and `Display` are safe to log.
#[derive(Debug)]
#[non_exhaustive]
pub enum DispatchError {
    /// Nothing was sent: an unknown provider, a missing API key, no model
    /// to send to, a bad `providers.yaml`.
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The prompt cannot be prepared for the target model (it does not fit
    /// the model's context window even after truncation).
    Prompt(crate::Error),
    /// A transient failure worth retrying: the connection failed or broke,
    /// or the provider answered 408 or 409. Retried; this is what remained
    /// after the last attempt.
    Retryable {
        /// The provider's name.
        provider: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
    /// 429: the provider's rate limit.
    RateLimited {
        /// The provider's name.
        provider: String,
        /// How long the provider asked us to wait (`retry-after-ms` or
        /// `retry-after`), when it said.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// 401 or 403: the key is missing, wrong or not allowed this model.
    Authentication {
        /// The provider's name.
        provider: String,
        /// 401 or 403.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// Another 4xx: the provider rejected the request; its message says why.
    InvalidRequest {
        /// The provider's name.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 5xx, or Anthropic's 529 "overloaded".
    Unavailable {
        /// The provider's name.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// A timeout expired.
    Timeout {
        /// The provider's name.
        provider: String,
        /// Which one.
        kind: TimeoutKind,
        /// Its length.
        after: Duration,
    },
    /// The response could not be understood (malformed JSON, an unexpected
    /// shape), or a stream failed after part of the reply was delivered.
    /// `partial` holds what was received; a stream that delivered text is
    /// never retried behind the caller's back.
    Stream {
        /// The provider's name.
        provider: String,
        /// What went wrong.
        message: String,
        /// What had arrived: text, tool calls, usage so far.
        partial: Box<Response>,
    },
}

impl DispatchError {
    /// Whether another attempt may succeed (retryable, rate-limited,
    /// unavailable, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DispatchError::Retryable { .. }
                | DispatchError::RateLimited { .. }
                | DispatchError::Unavailable { .. }
                | DispatchError::Timeout { .. }
        )
    }

    /// The wait the provider asked for, for [`DispatchError::RateLimited`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DispatchError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The provider the error comes from, when it comes from one.
    pub fn provider(&self) -> Option<&str> {
        match self {
            DispatchError::Config { .. } | DispatchError::Prompt(_) => None,
            DispatchError::Retryable { provider, .. }
            | DispatchError::RateLimited { provider, .. }
            | DispatchError::Authentication { provider, .. }
            | DispatchError::InvalidRequest { provider, .. }
            | DispatchError::Unavailable { provider, .. }
            | DispatchError::Timeout { provider, .. }
            | DispatchError::Stream { provider, .. } => Some(provider),
        }
    }

    /// A short name of the class: `config`, `prompt`, `retryable`,
    /// `rate_limited`, `authentication`, `invalid_request`, `unavailable`,
    /// `timeout`, `stream`.
    pub fn class(&self) -> &'static str {
        match self {
            DispatchError::Config { .. } => "config",
            DispatchError::Prompt(_) => "prompt",
            DispatchError::Retryable { .. } => "retryable",
            DispatchError::RateLimited { .. } => "rate_limited",
            DispatchError::Authentication { .. } => "authentication",
            DispatchError::InvalidRequest { .. } => "invalid_request",
            DispatchError::Unavailable { .. } => "unavailable",
            DispatchError::Timeout { .. } => "timeout",
            DispatchError::Stream { .. } => "stream",
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> DispatchError {
        DispatchError::Config {
            message: message.into(),
        }
    }
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::Config { message } => write!(f, "configuration: {message}"),
            DispatchError::Prompt(e) => write!(f, "prompt: {e}"),
            DispatchError::Retryable {
                provider,
                status,
                message,
            } => match status {
                Some(s) => write!(f, "{provider}: transient error (HTTP {s}): {message}"),
                None => write!(f, "{provider}: connection error: {message}"),
            },
            DispatchError::RateLimited {
                provider,
                retry_after,
                message,
            } => {
                write!(f, "{provider}: rate limited (HTTP 429")?;
                if let Some(d) = retry_after {
                    write!(f, ", retry after {:.3} s", d.as_secs_f64())?;
                }
                write!(f, "): {message}")
            }
            DispatchError::Authentication {
                provider,
                status,
                message,
            } => write!(
                f,
                "{provider}: authentication failed (HTTP {status}): {message}"
            ),
            DispatchError::InvalidRequest {
                provider,
                status,
                message,
            } => write!(f, "{provider}: invalid request (HTTP {status}): {message}"),
            DispatchError::Unavailable {
                provider,
                status,
                message,
            } => write!(
                f,
                "{provider}: provider unavailable (HTTP {status}): {message}"
            ),
            DispatchError::Timeout {
                provider,
                kind,
                after,
            } => write!(
                f,
                "{provider}: {kind} timeout after {:.3} s",
                after.as_secs_f64()
            ),
            DispatchError::Stream {
                provider,
                message,
                partial,
            } => write!(
                f,
                "{provider}: stream failed after {} characters of reply: {message}",
                partial.text.chars().count()
            ),
        }
    }
}

impl std::error::Error for DispatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DispatchError::Prompt(e) => Some(e),
            _ => None,
        }
    }
}
