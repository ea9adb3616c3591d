//! Sending rendered prompts to providers (feature `dispatch`).
//!
//! [`Client`] speaks OpenAI's chat completions (OpenAI and every compatible
//! server) and Anthropic's messages API, with or without streaming. Each
//! call: picks the model (the template's `model:` block, or an override),
//! fits the prompt to that model's budget, waits for the provider's
//! client-side limits, sends, retries what is worth retrying with
//! exponential backoff and full jitter (honouring `retry-after`), and falls
//! back to `model.fallbacks` in order when a model stays down. Errors come
//! back as one classified [`DispatchError`].
//!
//! Keys are read from the environment at every call and live only in the
//! request's headers (marked sensitive); nothing that `Debug` or `Display`
//! prints holds one, and provider messages are scrubbed of it.

mod config;
mod error;
mod response;
mod retry;
mod secret;
mod sse;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::Stream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::Instrument;

pub use config::{Limits, ProviderConfig, ProviderKind, SizeLimits, Timeouts};
pub use error::{DispatchError, TimeoutKind};
pub use response::{FinishReason, Response, StreamEvent, ToolCall, Usage};
pub use retry::RetryPolicy;
pub use wire::{ANTHROPIC_FIRST_TURN, DEFAULT_ANTHROPIC_MAX_TOKENS};

use crate::render::Rendered;
use secret::{ApiKey, redact};
use wire::{Accumulator, Step};

/// A stream of [`StreamEvent`]s ending in [`StreamEvent::Done`], or in an
/// error.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, DispatchError>> + Send>>;

/// Sends rendered prompts. Cheap to clone; share one per process (it keeps
/// the connection pool, the rate limiters and the cache).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    providers: BTreeMap<String, Provider>,
    retry: RetryPolicy,
    timeouts: Timeouts,
    sizes: SizeLimits,
    cache: Option<Cache>,
}

struct Provider {
    name: String,
    config: ProviderConfig,
    limiter: Limiter,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "providers",
                &self
                    .inner
                    .providers
                    .values()
                    .map(|p| (&p.name, &p.config))
                    .collect::<Vec<_>>(),
            )
            .field("retry", &self.inner.retry)
            .field("timeouts", &self.inner.timeouts)
            .field("cache", &self.inner.cache.as_ref().map(|c| c.ttl))
            .finish()
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    providers: BTreeMap<String, ProviderConfig>,
    retry: RetryPolicy,
    timeouts: Timeouts,
    sizes: SizeLimits,
    cache_ttl: Option<Duration>,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    /// The built-in providers `openai` and `anthropic`, their base URLs from
    /// `OPENAI_BASE_URL` and `ANTHROPIC_BASE_URL` when set; default retries
    /// and timeouts; no cache.
    pub fn new() -> ClientBuilder {
        let mut providers = BTreeMap::new();
        providers.insert("openai".to_owned(), ProviderConfig::openai_from_env());
        providers.insert("anthropic".to_owned(), ProviderConfig::anthropic_from_env());
        ClientBuilder {
            providers,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            sizes: SizeLimits::default(),
            cache_ttl: None,
        }
    }

    /// Adds or replaces a provider.
    pub fn provider(mut self, name: impl Into<String>, config: ProviderConfig) -> ClientBuilder {
        self.providers.insert(name.into(), config);
        self
    }

    /// Adds the providers of a `providers.yaml` file (see the README); an
    /// entry named `openai` or `anthropic` adjusts the built-in one.
    ///
    /// # Errors
    /// [`DispatchError::Config`] naming the file and the problem.
    pub fn providers_file(
        mut self,
        path: impl AsRef<Path>,
    ) -> Result<ClientBuilder, DispatchError> {
        let found = config::read_providers_file(path.as_ref(), &self.providers)?;
        self.providers.extend(found);
        Ok(self)
    }

    /// Reads `providers.yaml` in a template root when there is one.
    ///
    /// # Errors
    /// As [`providers_file`](ClientBuilder::providers_file).
    pub fn template_root(self, dir: impl AsRef<Path>) -> Result<ClientBuilder, DispatchError> {
        let path = dir.as_ref().join("providers.yaml");
        if path.is_file() {
            self.providers_file(path)
        } else {
            Ok(self)
        }
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> ClientBuilder {
        self.retry = retry;
        self
    }

    /// Sets the timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> ClientBuilder {
        self.timeouts = timeouts;
        self
    }

    /// Sets how much of a provider's answers is read.
    pub fn size_limits(mut self, sizes: SizeLimits) -> ClientBuilder {
        self.sizes = sizes;
        self
    }

    /// Caches answers to deterministic calls (`temperature: 0`) for `ttl`,
    /// in memory, keyed by provider, model, messages and parameters. Off by
    /// default; streams are never cached.
    pub fn cache(mut self, ttl: Duration) -> ClientBuilder {
        self.cache_ttl = Some(ttl);
        self
    }

    /// Builds the client.
    ///
    /// Redirects are never followed: a provider call carries a key (in
    /// `Authorization`, `x-api-key` or a custom header) and the prompt, and
    /// neither may travel to an address the configuration did not name. A
    /// 3xx answer is an [`DispatchError::InvalidRequest`] naming where it
    /// pointed (without its query).
    ///
    /// # Errors
    /// [`DispatchError::Config`] when the HTTP client cannot be built.
    pub fn build(self) -> Result<Client, DispatchError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.timeouts.connect)
            .user_agent(concat!("promptbook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DispatchError::config(format!("cannot build the HTTP client: {e}")))?;
        let providers = self
            .providers
            .into_iter()
            .map(|(name, config)| {
                let limiter = Limiter::new(&config.limits);
                (
                    name.clone(),
                    Provider {
                        name,
                        config,
                        limiter,
                    },
                )
            })
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                providers,
                retry: self.retry,
                timeouts: self.timeouts,
                sizes: self.sizes,
                cache: self.cache_ttl.map(Cache::new),
            }),
        })
    }
}

/// Per-call settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SendOptions {
    /// Send to this model (`provider:name`, or a name whose provider is
    /// inferred) instead of the template's.
    pub model: Option<String>,
    /// Use these fallbacks instead of the template's `model.fallbacks`.
    pub fallbacks: Option<Vec<String>>,
}

impl SendOptions {
    /// No overrides.
    pub fn new() -> SendOptions {
        SendOptions::default()
    }

    /// Sends to `model` (`provider:name`) instead of the template's.
    pub fn model(mut self, model: impl Into<String>) -> SendOptions {
        self.model = Some(model.into());
        self
    }

    /// Replaces the template's fallbacks.
    pub fn fallbacks(mut self, fallbacks: Vec<String>) -> SendOptions {
        self.fallbacks = Some(fallbacks);
        self
    }
}

/// One model to try: a provider and a model name.
struct Target<'a> {
    provider: &'a Provider,
    model: String,
}

impl Target<'_> {
    /// Says in `response` who answered.
    fn label(&self, response: &mut Response) {
        response.provider.clone_from(&self.provider.name);
        response.model.clone_from(&self.model);
    }
}

/// A request ready to go to one target.
struct Prepared {
    body: Value,
    prompt_tokens: usize,
    key: Option<ApiKey>,
    deterministic: bool,
}

impl Client {
    /// A client with the built-in providers configured from the
    /// environment (see [`ClientBuilder::new`]). Keys are read when a call
    /// is made, not now.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn from_env() -> Result<Client, DispatchError> {
        ClientBuilder::new().build()
    }

    /// A builder, to add providers or change retries, timeouts and caching.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Sends `rendered` to its template's model and returns the whole
    /// answer.
    ///
    /// # Errors
    /// A classified [`DispatchError`]; see its variants.
    pub async fn send(&self, rendered: &Rendered) -> Result<Response, DispatchError> {
        self.send_with(rendered, &SendOptions::new()).await
    }

    /// [`send`](Client::send) with overrides.
    ///
    /// # Errors
    /// As [`send`](Client::send).
    pub async fn send_with(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
    ) -> Result<Response, DispatchError> {
        let span = call_span(rendered, false);
        let started = Instant::now();
        self.send_inner(rendered, options)
            .instrument(span.clone())
            .await
            .inspect(|r| record_success(&span, r, started))
            .inspect_err(|e| record_failure(&span, e, started))
    }

    async fn send_inner(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
    ) -> Result<Response, DispatchError> {
        let targets = self.targets(rendered, options)?;
        let mut attempts = 0;
        let mut last = None;
        for (i, target) in targets.iter().enumerate() {
            let prepared = self.prepare(rendered, target, false)?;
            let cache_key = prepared
                .deterministic
                .then(|| {
                    self.inner
                        .cache
                        .as_ref()
                        .map(|_| cache_key(target, &prepared.body))
                })
                .flatten();
            if let (Some(cache), Some(key)) = (&self.inner.cache, cache_key)
                && let Some(mut hit) = cache.get(key)
            {
                hit.cached = true;
                hit.fallback = i > 0;
                hit.attempts = attempts;
                return Ok(hit);
            }
            match self.send_one(target, &prepared, &mut attempts).await {
                Ok(mut response) => {
                    target.label(&mut response);
                    response.fallback = i > 0;
                    response.attempts = attempts;
                    if let (Some(cache), Some(key)) = (&self.inner.cache, cache_key) {
                        cache.put(key, &response);
                    }
                    return Ok(response);
                }
                Err(e) if allows_fallback(&e) && i + 1 < targets.len() => {
                    tracing::warn!(
                        provider = %target.provider.name,
                        model = %target.model,
                        error = %e,
                        "model failed; trying the next fallback"
                    );
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DispatchError::config("no model to send to")))
    }

    /// One target, with retries.
    async fn send_one(
        &self,
        target: &Target<'_>,
        prepared: &Prepared,
        attempts: &mut u32,
    ) -> Result<Response, DispatchError> {
        let policy = self.inner.retry;
        let mut retry = 0;
        loop {
            *attempts += 1;
            let _permit = target
                .provider
                .limiter
                .acquire(prepared.prompt_tokens)
                .await;
            let started = Instant::now();
            let result = self.attempt_whole(target, prepared).await;
            tracing::debug!(
                provider = %target.provider.name,
                model = %target.model,
                attempt = *attempts,
                latency_ms = started.elapsed().as_millis() as u64,
                ok = result.is_ok(),
                "attempt"
            );
            match result {
                Err(e) if e.is_retryable() && retry < policy.max_retries => {
                    retry += 1;
                    let delay = policy.delay(retry, e.retry_after());
                    tracing::info!(
                        provider = %target.provider.name,
                        error = %e,
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// One non-streaming HTTP attempt, under the whole-request timeout.
    async fn attempt_whole(
        &self,
        target: &Target<'_>,
        prepared: &Prepared,
    ) -> Result<Response, DispatchError> {
        let provider = &target.provider.name;
        let timeout = self.inner.timeouts.request;
        let work = async {
            let res = self.post(target, prepared).await?;
            let limit = self.inner.sizes.response_bytes;
            let bytes = match read_capped(res, limit).await {
                Ok((bytes, false)) => bytes,
                Ok((_, true)) => {
                    return Err(DispatchError::Stream {
                        provider: provider.clone(),
                        message: format!(
                            "the answer is over SizeLimits::response_bytes ({limit} bytes)"
                        ),
                        partial: Box::default(),
                    });
                }
                Err(e) => {
                    return Err(transport_error(
                        provider,
                        &e,
                        prepared.key.as_ref(),
                        &self.inner.timeouts,
                    ));
                }
            };
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|e| DispatchError::Stream {
                    provider: provider.clone(),
                    message: format!("the response is not valid JSON: {e}"),
                    partial: Box::default(),
                })?;
            let parsed = match target.provider.config.kind {
                ProviderKind::Openai => wire::openai_response(&value),
                ProviderKind::Anthropic => wire::anthropic_response(&value),
            };
            parsed.map_err(|message| DispatchError::Stream {
                provider: provider.clone(),
                message,
                partial: Box::default(),
            })
        };
        within_request(provider, timeout, work).await
    }

    /// Sends the request; a non-2xx answer becomes its classified error.
    async fn post(
        &self,
        target: &Target<'_>,
        prepared: &Prepared,
    ) -> Result<reqwest::Response, DispatchError> {
        let config = &target.provider.config;
        let provider = &target.provider.name;
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                DispatchError::config(format!("provider `{provider}`: bad header name `{k}`"))
            })?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                DispatchError::config(format!("provider `{provider}`: bad value for header `{k}`"))
            })?;
            headers.insert(name, value);
        }
        if config.kind == ProviderKind::Anthropic && !headers.contains_key("anthropic-version") {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        if let Some(key) = &prepared.key {
            let (name, value) = match (&config.auth_header, config.kind) {
                (Some(h), _) => (h.clone(), key.expose().to_owned()),
                (None, ProviderKind::Openai) => (
                    "authorization".to_owned(),
                    format!("Bearer {}", key.expose()),
                ),
                (None, ProviderKind::Anthropic) => {
                    ("x-api-key".to_owned(), key.expose().to_owned())
                }
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                DispatchError::config(format!("provider `{provider}`: bad auth_header name"))
            })?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                DispatchError::config(format!(
                    "provider `{provider}`: the API key holds characters a header cannot carry"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let body = serde_json::to_vec(&prepared.body)
            .map_err(|e| DispatchError::config(format!("cannot encode the request: {e}")))?;
        let res = self
            .inner
            .http
            .post(config.endpoint())
            .query(&config.query)
            .headers(headers)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                transport_error(provider, &e, prepared.key.as_ref(), &self.inner.timeouts)
            })?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        if status.is_redirection() {
            return Err(redirect_error(provider, &res, prepared.key.as_ref()));
        }
        let retry_after = retry::retry_after(res.headers(), SystemTime::now());
        // Only the start of an error body is read: its message is all we
        // keep, and a hostile endpoint may send gigabytes.
        let (body, cut) = read_capped(res, self.inner.sizes.error_bytes)
            .await
            .unwrap_or_default();
        let message = redact(&wire::error_message(&body), prepared.key.as_ref(), cut);
        Err(classify(provider, status.as_u16(), retry_after, message))
    }

    /// Streams the answer of `rendered`'s model: [`StreamEvent::Text`] and
    /// [`StreamEvent::ToolCall`] pieces as they arrive, then
    /// [`StreamEvent::Done`] with the whole [`Response`]. Retries and
    /// fallbacks apply until the first piece is delivered; after that a
    /// failure ends the stream with [`DispatchError::Stream`] holding what
    /// was received.
    ///
    /// The request runs on a tokio task of its own, which stops when the
    /// stream is dropped; outside a tokio runtime the stream yields one
    /// [`DispatchError::Config`].
    pub fn stream(&self, rendered: &Rendered) -> EventStream {
        self.stream_with(rendered, &SendOptions::new())
    }

    /// [`stream`](Client::stream) with overrides.
    pub fn stream_with(&self, rendered: &Rendered, options: &SendOptions) -> EventStream {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let e = DispatchError::config("Client::stream must be called within a tokio runtime");
            return Box::pin(futures_util::stream::iter([Err(e)]));
        };
        // Forward each event as it comes: a channel of one.
        let (tx, rx) = mpsc::channel(1);
        let client = self.clone();
        let rendered = rendered.clone();
        let options = options.clone();
        let span = call_span(&rendered, true);
        let started = Instant::now();
        runtime.spawn(
            async move {
                let result = client.stream_inner(&rendered, &options, &tx).await;
                let span = tracing::Span::current();
                match result {
                    Ok(Some(response)) => {
                        record_success(&span, &response, started);
                        let _ = tx.send(Ok(StreamEvent::Done(response))).await;
                    }
                    Ok(None) => {} // the caller went away
                    Err(e) => {
                        record_failure(&span, &e, started);
                        let _ = tx.send(Err(e)).await;
                    }
                }
            }
            .instrument(span),
        );
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    async fn stream_inner(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
        tx: &mpsc::Sender<Result<StreamEvent, DispatchError>>,
    ) -> Result<Option<Response>, DispatchError> {
        let targets = self.targets(rendered, options)?;
        let policy = self.inner.retry;
        let mut attempts = 0;
        let mut last = None;
        for (i, target) in targets.iter().enumerate() {
            let prepared = self.prepare(rendered, target, true)?;
            let mut retry = 0;
            let outcome = loop {
                attempts += 1;
                let permit = target
                    .provider
                    .limiter
                    .acquire(prepared.prompt_tokens)
                    .await;
                match self.attempt_stream(target, &prepared, tx).await {
                    Attempt::Done(r) => break Ok(r),
                    Attempt::CallerGone => return Ok(None),
                    Attempt::Failed(e, delivered) => {
                        drop(permit);
                        if !delivered && e.is_retryable() && retry < policy.max_retries {
                            retry += 1;
                            let delay = policy.delay(retry, e.retry_after());
                            tracing::info!(provider = %target.provider.name, error = %e,
                                delay_ms = delay.as_millis() as u64, "retrying stream");
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        break Err((e, delivered));
                    }
                }
            };
            match outcome {
                Ok(mut response) => {
                    target.label(&mut response);
                    response.fallback = i > 0;
                    response.attempts = attempts;
                    return Ok(Some(response));
                }
                Err((e, false)) if allows_fallback(&e) && i + 1 < targets.len() => {
                    tracing::warn!(provider = %target.provider.name, model = %target.model,
                        error = %e, "model failed; trying the next fallback");
                    last = Some(e);
                }
                Err((e, _)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DispatchError::config("no model to send to")))
    }

    async fn attempt_stream(
        &self,
        target: &Target<'_>,
        prepared: &Prepared,
        tx: &mpsc::Sender<Result<StreamEvent, DispatchError>>,
    ) -> Attempt {
        let provider = &target.provider.name;
        let timeouts = self.inner.timeouts;
        let started = Instant::now();
        // Until the response head arrives; the body then streams under
        // the idle timeout and the whole stream's bound.
        let res =
            match within_request(provider, timeouts.request, self.post(target, prepared)).await {
                Ok(res) => res,
                Err(e) => return Attempt::Failed(e, false),
            };
        let sizes = self.inner.sizes;
        let mut events = sse::Reader::new(res, sizes.event_bytes);
        let deadline = started + timeouts.stream;
        let mut acc = Accumulator::default();
        let mut delivered = false;
        let fail = |e: DispatchError, acc: Accumulator, delivered: bool| {
            if delivered {
                let message = match &e {
                    DispatchError::Stream { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                let mut partial = acc.response;
                target.label(&mut partial);
                Attempt::Failed(
                    DispatchError::Stream {
                        provider: provider.clone(),
                        message,
                        partial: Box::new(partial),
                    },
                    true,
                )
            } else {
                Attempt::Failed(e, false)
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
                    let e = DispatchError::Timeout {
                        provider: provider.clone(),
                        kind,
                        after,
                    };
                    return fail(e, acc, delivered);
                }
            };
            let event = match next {
                None if acc.finished => break,
                None => {
                    let e = DispatchError::Retryable {
                        provider: provider.clone(),
                        status: None,
                        message: "the stream ended before the reply was complete".into(),
                    };
                    return fail(e, acc, delivered);
                }
                Some(Err(sse::ReadError::Transport(e))) => {
                    let e = DispatchError::Retryable {
                        provider: provider.clone(),
                        status: None,
                        message: redact(
                            &format!("the stream broke: {e}"),
                            prepared.key.as_ref(),
                            false,
                        ),
                    };
                    return fail(e, acc, delivered);
                }
                Some(Err(sse::ReadError::TooLarge(t))) => {
                    let e = DispatchError::Stream {
                        provider: provider.clone(),
                        message: format!(
                            "a stream event is over SizeLimits::event_bytes ({} bytes)",
                            t.max_event
                        ),
                        partial: Box::default(),
                    };
                    return fail(e, acc, delivered);
                }
                Some(Ok(event)) => event,
            };
            let step = match target.provider.config.kind {
                ProviderKind::Openai => acc.openai(&event.event, &event.data),
                ProviderKind::Anthropic => acc.anthropic(&event.event, &event.data),
            };
            match step {
                Ok(Step::Done) => break,
                Ok(Step::Events(out)) => {
                    if acc.size() > sizes.response_bytes {
                        let e = DispatchError::Stream {
                            provider: provider.clone(),
                            message: format!(
                                "the answer is over SizeLimits::response_bytes ({} bytes)",
                                sizes.response_bytes
                            ),
                            partial: Box::default(),
                        };
                        return fail(e, acc, delivered);
                    }
                    for e in out {
                        delivered = true;
                        if tx.send(Ok(e)).await.is_err() {
                            return Attempt::CallerGone;
                        }
                    }
                }
                Err(message) => {
                    let message = redact(&message, prepared.key.as_ref(), false);
                    // A provider's own error event before any text is
                    // worth another attempt; garbage is not.
                    let e = if message.starts_with("the provider sent an error") {
                        DispatchError::Retryable {
                            provider: provider.clone(),
                            status: None,
                            message,
                        }
                    } else {
                        DispatchError::Stream {
                            provider: provider.clone(),
                            message,
                            partial: Box::default(),
                        }
                    };
                    return fail(e, acc, delivered);
                }
            }
        }
        acc.finish();
        Attempt::Done(acc.response)
    }

    /// The primary model and its fallbacks, each checked (known provider,
    /// key present) before anything is sent.
    fn targets(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
    ) -> Result<Vec<Target<'_>>, DispatchError> {
        let block = rendered.model.as_ref();
        let primary = match (&options.model, block) {
            (Some(m), _) => m.clone(),
            (None, Some(b)) => {
                let name = b.name.clone().ok_or_else(|| {
                    DispatchError::config(format!(
                        "{}: the `model:` block names no model; set `model.name` or pass a model",
                        rendered.template
                    ))
                })?;
                match &b.provider {
                    Some(p) => format!("{p}:{name}"),
                    None => name,
                }
            }
            (None, None) => {
                return Err(DispatchError::config(format!(
                    "{} has no `model:` block; pass a model (`--model provider:name`)",
                    rendered.template
                )));
            }
        };
        let fallbacks = options
            .fallbacks
            .clone()
            .unwrap_or_else(|| block.map(|b| b.fallbacks.clone()).unwrap_or_default());
        std::iter::once(primary)
            .chain(fallbacks)
            .map(|spec| self.target(&spec))
            .collect()
    }

    fn target(&self, spec: &str) -> Result<Target<'_>, DispatchError> {
        let providers = &self.inner.providers;
        let (provider, model) = match spec.split_once(':') {
            Some((p, m)) if providers.contains_key(p) => (p, m),
            Some((p, _)) if !p.contains(['.', '/']) && !p.is_empty() => {
                return Err(DispatchError::config(format!(
                    "unknown provider `{p}` in `{spec}` (known: {}; declare others in providers.yaml)",
                    providers.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            _ if spec.starts_with("claude") => ("anthropic", spec),
            _ => ("openai", spec),
        };
        if model.is_empty() {
            return Err(DispatchError::config(format!("`{spec}` names no model")));
        }
        let provider = providers.get(provider).ok_or_else(|| {
            DispatchError::config(format!("provider `{provider}` is not configured"))
        })?;
        read_key(provider)?;
        Ok(Target {
            provider,
            model: model.to_owned(),
        })
    }

    fn prepare(
        &self,
        rendered: &Rendered,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<Prepared, DispatchError> {
        let fitted = rendered
            .for_model(&target.model)
            .map_err(DispatchError::Prompt)?;
        let empty = Map::new();
        let params = rendered.model.as_ref().map_or(&empty, |m| &m.parameters);
        let body = match target.provider.config.kind {
            ProviderKind::Openai => {
                wire::openai_body(&target.model, &fitted.messages, params, stream)
            }
            ProviderKind::Anthropic => {
                wire::anthropic_body(&target.model, &fitted.messages, params, stream)
            }
        };
        let deterministic = params
            .get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t == 0.0);
        Ok(Prepared {
            body,
            prompt_tokens: fitted.tokens.total,
            key: read_key(target.provider)?,
            deterministic,
        })
    }
}

/// The `anthropic-version` header sent unless a provider sets its own.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

enum Attempt {
    Done(Response),
    Failed(DispatchError, bool),
    CallerGone,
}

/// Errors after which the next fallback is tried: the model is down or
/// overloaded, not the request wrong.
fn allows_fallback(e: &DispatchError) -> bool {
    e.is_retryable()
}

fn read_key(provider: &Provider) -> Result<Option<ApiKey>, DispatchError> {
    let Some(var) = &provider.config.api_key_env else {
        return Ok(None);
    };
    match ApiKey::from_env(var) {
        Some(key) => Ok(Some(key)),
        None => Err(DispatchError::config(format!(
            "provider `{}` needs an API key in the environment variable {var}, which is not set",
            provider.name
        ))),
    }
}

fn classify(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    message: String,
) -> DispatchError {
    let provider = provider.to_owned();
    match status {
        401 | 403 => DispatchError::Authentication {
            provider,
            status,
            message,
        },
        408 | 409 => DispatchError::Retryable {
            provider,
            status: Some(status),
            message,
        },
        429 => DispatchError::RateLimited {
            provider,
            retry_after,
            message,
        },
        500..=599 => DispatchError::Unavailable {
            provider,
            status,
            message,
        },
        _ => DispatchError::InvalidRequest {
            provider,
            status,
            message,
        },
    }
}

/// Reads a body, at most `limit` bytes of it: the bytes, and whether
/// there was more (the rest is not read).
async fn read_capped(
    mut res: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    if res.content_length().is_some_and(|n| n > limit as u64) {
        // Read what the cap allows of it anyway: an error body's start
        // holds its message.
        out.reserve(limit.min(1 << 20));
    }
    while let Some(chunk) = res.chunk().await? {
        let room = limit - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false))
}

/// A 3xx answer: where it pointed (scheme, host, port and path; no query,
/// fragment or credentials), as an error.
fn redirect_error(provider: &str, res: &reqwest::Response, key: Option<&ApiKey>) -> DispatchError {
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| res.url().join(l).ok())
        .map(|mut url| {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        });
    let to = location.map_or_else(
        || "nowhere (no Location)".to_owned(),
        |l| redact(&l, key, false),
    );
    DispatchError::InvalidRequest {
        provider: provider.to_owned(),
        status,
        message: format!(
            "the provider redirected to {to}; redirects are not followed (they would carry the \
             API key and the prompt elsewhere): set the provider's base_url to the new address"
        ),
    }
}

fn transport_error(
    provider: &str,
    e: &reqwest::Error,
    key: Option<&ApiKey>,
    timeouts: &Timeouts,
) -> DispatchError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let message = redact(&message, key, false);
    if e.is_timeout() {
        let (kind, after) = if e.is_connect() {
            (TimeoutKind::Connect, timeouts.connect)
        } else {
            (TimeoutKind::Request, timeouts.request)
        };
        return DispatchError::Timeout {
            provider: provider.to_owned(),
            kind,
            after,
        };
    }
    DispatchError::Retryable {
        provider: provider.to_owned(),
        status: None,
        message,
    }
}

fn call_span(rendered: &Rendered, stream: bool) -> tracing::Span {
    tracing::info_span!(
        "promptbook.dispatch",
        template = %rendered.template,
        stream,
        provider = tracing::field::Empty,
        model = tracing::field::Empty,
        attempts = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
        input_tokens = tracing::field::Empty,
        output_tokens = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

fn record_success(span: &tracing::Span, r: &Response, started: Instant) {
    span.record("latency_ms", started.elapsed().as_millis() as u64);
    span.record("provider", r.provider.as_str());
    span.record("model", r.model.as_str());
    span.record("attempts", r.attempts);
    if let Some(u) = r.usage {
        span.record("input_tokens", u.input_tokens);
        span.record("output_tokens", u.output_tokens);
    }
    span.record("outcome", if r.cached { "cached" } else { "ok" });
    span.in_scope(|| tracing::info!(fallback = r.fallback, "answered"));
}

fn record_failure(span: &tracing::Span, e: &DispatchError, started: Instant) {
    span.record("latency_ms", started.elapsed().as_millis() as u64);
    if let Some(p) = e.provider() {
        span.record("provider", p);
    }
    span.record("outcome", e.class());
    span.in_scope(|| tracing::warn!(error = %e, "failed"));
}

// ------------------------------------------------------------- limiting

type RateLimiter = governor::DefaultDirectRateLimiter;

struct Limiter {
    requests: Option<RateLimiter>,
    tokens: Option<(RateLimiter, NonZeroU32)>,
    concurrent: Option<Arc<Semaphore>>,
}

impl Limiter {
    fn new(limits: &Limits) -> Limiter {
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
    async fn acquire(&self, tokens: usize) -> Option<OwnedSemaphorePermit> {
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

// ---------------------------------------------------------------- cache

/// Answers to deterministic calls, kept for a TTL. Bounded: when full,
/// expired entries go, then everything.
struct Cache {
    ttl: Duration,
    entries: Mutex<HashMap<u128, (Instant, Response)>>,
}

const CACHE_ENTRIES: usize = 4096;

impl Cache {
    fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: u128) -> Option<Response> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, response) = entries.get(&key)?;
        (at.elapsed() < self.ttl).then(|| response.clone())
    }

    fn put(&self, key: u128, response: &Response) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), response.clone()));
    }
}

/// Provider, model, messages and parameters: the body says it all.
fn cache_key(target: &Target<'_>, body: &Value) -> u128 {
    let mut bytes = target.provider.name.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend(target.provider.config.base_url.as_bytes());
    bytes.push(0);
    bytes.extend(body.to_string().as_bytes());
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

/// `work` under the request timeout: running out of it is a classified
/// [`DispatchError::Timeout`].
async fn within_request<T>(
    provider: &str,
    after: Duration,
    work: impl std::future::Future<Output = Result<T, DispatchError>>,
) -> Result<T, DispatchError> {
    tokio::time::timeout(after, work).await.unwrap_or_else(|_| {
        Err(DispatchError::Timeout {
            provider: provider.to_owned(),
            kind: TimeoutKind::Request,
            after,
        })
    })
}
