//! One streamed attempt: the request, then server-sent events read by
//! [`super::sse`], folded by the provider's wire format, and forwarded to
//! the caller as they come.
//!
//! Bounds: the request timeout until the response head; then the idle
//! timeout between events and the whole stream's timeout, whichever comes
//! first; one event at most `SizeLimits::event_bytes`, the whole answer at
//! most `SizeLimits::response_bytes`. A failure after something was
//! delivered is an [`ErrorKind::Stream`] error holding what arrived, and is
//! neither retried nor handed to a fallback (see [`super::retry`]).

use std::time::Instant;

use tokio::sync::mpsc;

use super::error::{DispatchError, ErrorKind, TimeoutKind};
use super::request::{post, within_request};
use super::response::{Response, StreamEvent};
use super::retry::Outcome;
use super::secret::redact;
use super::wire::{self, Accumulator, Step};
use super::{Inner, Prepared, Target, sse};

/// One streamed attempt: the request, then its events forwarded to `tx`
/// as they arrive; see the module docs for its bounds.
pub(crate) async fn attempt(
    client: &Inner,
    target: &Target,
    prepared: &Prepared,
    tx: &mpsc::Sender<Result<StreamEvent, DispatchError>>,
    first_chunk: &std::sync::OnceLock<std::time::Instant>,
) -> Outcome<Response> {
    let provider = &target.provider.name;
    let timeouts = client.timeouts;
    let started = Instant::now();
    // Until the response head arrives; the body then streams under
    // the idle timeout and the whole stream's bound.
    let res = match within_request(provider, timeouts.request, post(client, target, prepared)).await
    {
        Ok(res) => res,
        Err(error) => {
            return Outcome::Failed {
                error,
                delivered: false,
            };
        }
    };
    let sizes = client.sizes;
    let mut events = sse::Reader::new(res, sizes.event_bytes);
    let deadline = started + timeouts.stream;
    let format = wire::wire(target.provider.config.kind);
    let mut acc = Accumulator::default();
    let mut partial = super::partial::Partial::default();
    let mut delivered = false;
    let fail = |e: DispatchError, acc: Accumulator, delivered: bool| {
        if delivered {
            let message = match &e {
                e if e.kind() == ErrorKind::Stream => e.message().to_owned(),
                other => other.to_string(),
            };
            let mut partial = acc.response;
            target.label(&mut partial);
            Outcome::Failed {
                error: DispatchError::stream(provider, message, partial),
                delivered: true,
            }
        } else {
            Outcome::Failed {
                error: e,
                delivered: false,
            }
        }
    };
    loop {
        // The idle timeout, unless the whole stream's bound comes first.
        let left = deadline.saturating_duration_since(Instant::now());
        let (wait, kind, after) = if left < timeouts.idle {
            (left, TimeoutKind::Stream, timeouts.stream)
        } else {
            (timeouts.idle, TimeoutKind::Idle, timeouts.idle)
        };
        let next = match tokio::time::timeout(wait, events.next()).await {
            Ok(next) => next,
            Err(_) => {
                let e = DispatchError::timed_out(provider, kind, after);
                return fail(e, acc, delivered);
            }
        };
        let event = match next {
            None if acc.finished => break,
            None => {
                let e = DispatchError::from_provider(
                    ErrorKind::Retryable,
                    provider,
                    None,
                    "the stream ended before the reply was complete",
                );
                return fail(e, acc, delivered);
            }
            Some(Err(sse::ReadError::Transport(e))) => {
                let message = redact(
                    &format!("the stream broke: {e}"),
                    prepared.key.as_ref(),
                    false,
                );
                let e = DispatchError::from_provider(ErrorKind::Retryable, provider, None, message);
                return fail(e, acc, delivered);
            }
            Some(Err(sse::ReadError::TooLarge(t))) => {
                let e = DispatchError::stream(
                    provider,
                    format!(
                        "a stream event is over SizeLimits::event_bytes ({} bytes)",
                        t.max_event
                    ),
                    Response::default(),
                );
                return fail(e, acc, delivered);
            }
            Some(Ok(event)) => event,
        };
        let step = format.step(&mut acc, &event.event, &event.data);
        match step {
            Ok(Step::Done) => break,
            Ok(Step::Events(out)) => {
                if acc.size() > sizes.response_bytes {
                    let e = DispatchError::stream(
                        provider,
                        format!(
                            "the answer is over SizeLimits::response_bytes ({} bytes)",
                            sizes.response_bytes
                        ),
                        Response::default(),
                    );
                    return fail(e, acc, delivered);
                }
                let texts = out.iter().any(|e| matches!(e, StreamEvent::Text(_)));
                for e in out {
                    delivered = true;
                    first_chunk.get_or_init(std::time::Instant::now);
                    if tx.send(Ok(e)).await.is_err() {
                        return Outcome::Gone;
                    }
                }
                if texts
                    && prepared.partial_output
                    && let Some(value) = partial.next(&acc.response.text)
                    && tx.send(Ok(StreamEvent::Output(value))).await.is_err()
                {
                    return Outcome::Gone;
                }
            }
            Err(message) => {
                let message = redact(&message, prepared.key.as_ref(), false);
                // A provider's own error event before any text is
                // worth another attempt; garbage is not.
                let e = if message.starts_with("the provider sent an error") {
                    DispatchError::from_provider(ErrorKind::Retryable, provider, None, message)
                } else {
                    DispatchError::stream(provider, message, Response::default())
                };
                return fail(e, acc, delivered);
            }
        }
    }
    acc.finish();
    Outcome::Done(acc.response)
}
