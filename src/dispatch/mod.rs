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

mod anthropic;
mod breaker;
mod cache;
mod config;
mod duration;
mod error;
mod limiter;
mod openai;
#[cfg(feature = "otel")]
mod otel;
mod output;
mod partial;
mod price;
#[cfg(feature = "redis")]
mod redis;
mod request;
mod response;
mod retry;
mod secret;
#[cfg(feature = "redis")]
mod shared_limits;
mod sse;
mod state;
mod stream;
mod trace;
mod wire;

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use anthropic::{ANTHROPIC_FIRST_TURN, ANTHROPIC_VERSION, DEFAULT_ANTHROPIC_MAX_TOKENS};
pub use config::{
    CircuitBreaker, Limits, ProviderConfig, ProviderKind, STATE_KEY, SizeLimits, StructuredOutput,
    Timeouts,
};
pub use error::{DispatchError, ErrorKind, OutputProblem, TimeoutKind};
#[cfg(feature = "otel")]
pub use otel::CAPTURE_CONTENT_ENV;
pub use price::Prices;
pub use response::{FinishReason, Response, StreamEvent, ToolCall, Usage};
pub use retry::RetryPolicy;
pub use state::{OutagePolicy, REDIS_URL_ENV, StateConfig};

use crate::render::Rendered;
use breaker::Breakers;
use cache::Cache;
use limiter::Limiter;
use retry::Outcome;
use secret::ApiKey;
use trace::CallTrace;

/// A stream of [`StreamEvent`]s ending in [`StreamEvent::Done`], or in an
/// error.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, DispatchError>> + Send>>;

/// Sends rendered prompts. Cheap to clone; share one per process (it keeps
/// the connection pool, the rate limiters and the cache).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    providers: BTreeMap<String, Arc<Provider>>,
    retry: RetryPolicy,
    timeouts: Timeouts,
    sizes: SizeLimits,
    cache: Option<Cache>,
    output_retries: u32,
    breakers: Breakers,
    state: Arc<state::Shared>,
    #[cfg(feature = "otel")]
    otel: otel::Instruments,
}

/// A configured provider with its limits.
pub(crate) struct Provider {
    name: String,
    config: ProviderConfig,
    limiter: Limiter,
    /// `server.address` and `server.port` of its base URL, read once.
    #[cfg(feature = "otel")]
    server: otel::Server,
}

impl Provider {
    pub(crate) fn new(name: String, config: ProviderConfig, limiter: Limiter) -> Provider {
        Provider {
            #[cfg(feature = "otel")]
            server: otel::Server::of(&config.base_url),
            name,
            config,
            limiter,
        }
    }
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
            .field("state", &self.inner.state.config)
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
    output_retries: u32,
    state: StateConfig,
    circuit_breaker: CircuitBreaker,
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
            output_retries: 0,
            state: StateConfig::default(),
            circuit_breaker: CircuitBreaker::default(),
        }
    }

    /// Where the client keeps the rate limits, `concurrent` leases, the
    /// response cache and the circuit breakers: this process (the
    /// default), or Redis (feature `redis`) for replicas that share one
    /// set of limits. `PROMPTBOOK_REDIS_URL` wins over the URL given here.
    pub fn state(mut self, state: StateConfig) -> ClientBuilder {
        self.state = state;
        self
    }

    /// The circuit breaker for providers whose configuration sets none
    /// (default: open after 5 failed attempts within 60 s, for 30 s; see
    /// [`CircuitBreaker`]). [`CircuitBreaker::off`] turns it off.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> ClientBuilder {
        self.circuit_breaker = breaker;
        self
    }

    /// How many times to ask again when an answer breaks the template's
    /// output schema, for templates that do not say (`output_retries:`);
    /// each repair sends the answer back with the validation error as a
    /// user turn. Default 0; at most 10.
    pub fn output_retries(mut self, n: u32) -> ClientBuilder {
        self.output_retries = n.min(10);
        self
    }

    /// Adds or replaces a provider.
    pub fn provider(mut self, name: impl Into<String>, config: ProviderConfig) -> ClientBuilder {
        self.providers.insert(name.into(), config);
        self
    }

    /// Adds the providers of a `providers.yaml` file (see `docs/dispatch.md`); an
    /// entry named `openai` or `anthropic` adjusts the built-in one.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] error naming the file and the problem.
    pub fn providers_file(
        mut self,
        path: impl AsRef<Path>,
    ) -> Result<ClientBuilder, DispatchError> {
        let found = config::read_providers_file(path.as_ref(), &self.providers)?;
        self.providers.extend(found.providers);
        if let Some(state) = found.state {
            self.state = state;
        }
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
    /// 3xx answer is an [`ErrorKind::InvalidRequest`] error naming where it
    /// pointed (without its query).
    ///
    /// Nothing connects to Redis yet: the first call does, within its
    /// tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] error when the HTTP client cannot be built,
    /// or the shared state is misconfigured (a Redis URL that does not
    /// parse, or one given to a build without the `redis` feature).
    pub fn build(self) -> Result<Client, DispatchError> {
        let state =
            Arc::new(state::Shared::new(self.state.with_env()).map_err(DispatchError::config)?);
        self.circuit_breaker
            .check()
            .map_err(DispatchError::config)?;
        for (name, p) in &self.providers {
            p.limits
                .check()
                .and_then(|()| p.circuit_breaker.map_or(Ok(()), |b| b.check()))
                .and_then(|()| {
                    p.prices.iter().try_for_each(|(model, price)| {
                        price.check().map_err(|e| format!("model `{model}`: {e}"))
                    })
                })
                .map_err(|e| DispatchError::config(format!("provider `{name}`: {e}")))?;
        }
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
                let limiter = Limiter::shared(&name, &config.limits, &state);
                (name.clone(), Arc::new(Provider::new(name, config, limiter)))
            })
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                providers,
                retry: self.retry,
                timeouts: self.timeouts,
                sizes: self.sizes,
                cache: self.cache_ttl.map(|ttl| Cache::shared(ttl, &state)),
                output_retries: self.output_retries,
                breakers: Breakers::new(self.circuit_breaker, Some(state.clone())),
                state,
                #[cfg(feature = "otel")]
                otel: otel::Instruments::new(),
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
    /// Ask again this many times when the answer breaks the output schema,
    /// instead of the template's `output_retries` (or the client's).
    pub output_retries: Option<u32>,
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

    /// Asks again up to `n` times (at most 10) when the answer breaks the
    /// output schema, instead of the template's `output_retries`.
    pub fn output_retries(mut self, n: u32) -> SendOptions {
        self.output_retries = Some(n.min(10));
        self
    }
}

/// One model to try: a provider and a model name.
pub(crate) struct Target {
    provider: Arc<Provider>,
    model: String,
}

impl Target {
    /// Says in `response` who answered.
    fn label(&self, response: &mut Response) {
        response.provider.clone_from(&self.provider.name);
        response.model.clone_from(&self.model);
    }
}

/// A request ready to go to one target.
pub(crate) struct Prepared {
    body: Value,
    prompt_tokens: usize,
    key: Option<ApiKey>,
    deterministic: bool,
    /// Whether a stream sends [`StreamEvent::Output`]s: the template
    /// declares an output schema and the answer comes as text.
    partial_output: bool,
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

    /// `r` with its cost, when the answering provider has prices for its
    /// model and the provider reported usage.
    fn priced(&self, mut r: Response) -> Response {
        if let Some(p) = self.inner.providers.get(&r.provider)
            && let Some(prices) = p.config.prices.get(&r.model)
            && let Some(usage) = &r.usage
        {
            r.cost = Some(prices.cost(p.config.kind, usage));
        }
        r
    }

    /// Gives back what calls given up midway still hold (a cancelled
    /// call's `concurrent` slot in Redis goes back in the background),
    /// waiting at most 1 s. Call it before a process exits right after
    /// cancelling calls (`promptbook send` does on Ctrl-C or SIGTERM);
    /// otherwise such slots come back when their lease expires.
    pub async fn close(&self) {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.inner.state.redis {
            store.settle(Duration::from_secs(1)).await;
        }
    }

    /// The configured providers by name, each with whether a call could
    /// be made now: its key's variable is set (or it needs no key). Never
    /// the key itself.
    pub fn providers(&self) -> Vec<(String, bool)> {
        self.inner
            .providers
            .values()
            .map(|p| {
                let ready = p
                    .config
                    .api_key_env
                    .as_deref()
                    .is_none_or(|var| ApiKey::from_env(var).is_some());
                (p.name.clone(), ready)
            })
            .collect()
    }

    /// How a request to provider `name` went: its configuration, or for
    /// one not configured (a template's own connection) the wire its name
    /// says, with the default structured output.
    fn sent_to(&self, name: &str) -> output::Sent {
        match self.inner.providers.get(name) {
            Some(p) => output::Sent::of(&p.config),
            None => output::Sent {
                kind: if name == "anthropic" {
                    ProviderKind::Anthropic
                } else {
                    ProviderKind::Openai
                },
                mode: config::StructuredOutput::default(),
            },
        }
    }

    /// Sends `rendered` and returns its validated output as a `T`: the
    /// answer is checked against the template's output schema (repairs
    /// included, as [`send`](Client::send) does), then deserialized. Pair
    /// it with [`Registry::check_output_type::<T>`](crate::Registry::check_output_type)
    /// in a test, so that a template change that `T` cannot take fails
    /// there rather than here.
    ///
    /// # Errors
    /// As [`send`](Client::send); [`ErrorKind::Config`] when the template
    /// declares no output schema; [`ErrorKind::InvalidOutput`] (rule
    /// `tool_calls`) when the model called tools instead of answering, or
    /// (rule `deserialize`) when the valid output does not fit `T`.
    pub async fn send_as<T>(&self, rendered: &Rendered) -> Result<T, DispatchError>
    where
        T: serde::de::DeserializeOwned + schemars::JsonSchema,
    {
        if rendered.output_schema.is_none() {
            return Err(DispatchError::config(format!(
                "{} declares no output schema (`output:`): use `send` for text",
                rendered.template
            )));
        }
        let mut response = self.send(rendered).await?;
        let Some(output) = response.output.take() else {
            return Err(output::called_instead(response, ""));
        };
        serde_json::from_value::<T>(output.clone()).map_err(|e| {
            response.output = Some(output);
            let message = format!(
                "the output is valid for the template but does not fit `{}`: {e}",
                <T as schemars::JsonSchema>::schema_name()
            );
            DispatchError::invalid_output(response, "", "deserialize", message)
        })
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
        let trace = CallTrace::start(&self.inner, rendered, options, false);
        let result = self
            .send_repaired(rendered, options)
            .instrument(trace.span.clone())
            .await
            .map(|r| self.priced(r));
        match &result {
            Ok(r) => trace.success(&self.inner, r, None),
            Err(e) => trace.failure(&self.inner, e, None),
        }
        result
    }

    /// [`send_inner`](Client::send_inner), asking again while the answer
    /// breaks the output schema and repairs are left: the answer goes back
    /// as an assistant turn and the validation error as a user turn. An
    /// answer cut off by `max_tokens` is not repaired (asking again would
    /// cut it off again).
    async fn send_repaired(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
    ) -> Result<Response, DispatchError> {
        let allowed = options
            .output_retries
            .or(rendered.output_retries)
            .unwrap_or(self.inner.output_retries)
            .min(10);
        let mut current = std::borrow::Cow::Borrowed(rendered);
        let mut repairs = 0;
        // The answers that needed repair were paid for too.
        let mut spent: Option<Usage> = None;
        let add = |spent: &mut Option<Usage>, u: Option<Usage>| {
            if let Some(u) = u {
                *spent = Some(spent.unwrap_or_default().plus(u));
            }
        };
        loop {
            match self.send_inner(&current, options).await {
                Ok(mut response) => {
                    response.repairs = repairs;
                    if repairs > 0 {
                        let last = response.usage.take();
                        add(&mut spent, last);
                        response.usage = spent;
                    }
                    return Ok(response);
                }
                // A cut or a refusal would come again; a model that called
                // a tool instead is not helped by a repair either.
                Err(e)
                    if e.kind() == ErrorKind::InvalidOutput
                        && repairs < allowed
                        && e.output_problem().is_some_and(|p| {
                            !matches!(p.rule.as_str(), "length" | "refusal" | "tool_calls")
                        }) =>
                {
                    add(&mut spent, e.partial().and_then(|r| r.usage));
                    let answer = e.partial().map(|r| r.text.clone()).unwrap_or_default();
                    let at = e
                        .output_problem()
                        .filter(|p| !p.pointer.is_empty())
                        .map_or_else(String::new, |p| format!(" at `{}` ({})", p.pointer, p.rule));
                    let mut next = current.into_owned();
                    next.messages.push(crate::message::Message::new(
                        crate::message::Role::Assistant,
                        answer,
                    ));
                    next.messages.push(crate::message::Message::new(
                        crate::message::Role::User,
                        format!(
                            "That answer does not match the required JSON Schema{at}: {}. Answer again with only JSON that matches the schema.",
                            e.message()
                        ),
                    ));
                    let counter = crate::tokens::counter_for_model(next.rendered_for());
                    next.recount(counter.as_ref());
                    current = std::borrow::Cow::Owned(next);
                    repairs += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_inner(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
    ) -> Result<Response, DispatchError> {
        let targets = self.targets(rendered, options)?;
        let cache = self.inner.cache.as_ref();
        let finished = retry::run(
            &targets,
            &self.inner.retry,
            self.budget(TimeoutKind::Request),
            &self.inner.breakers,
            |target| self.prepare(rendered, target, false),
            |target, prepared, retry| {
                Box::pin(async move {
                    let key = cache.filter(|_| prepared.deterministic).map(|_| {
                        cache::key(
                            &target.provider.name,
                            &target.provider.config.base_url,
                            &prepared.body,
                        )
                    });
                    if retry == 0
                        && let (Some(cache), Some(key)) = (cache, key)
                        && let Some(mut hit) = cache.get(key).await
                    {
                        hit.cached = true;
                        return Outcome::Reused(hit);
                    }
                    match request::whole(&self.inner, target, &prepared).await {
                        Ok(mut response) => {
                            target.label(&mut response);
                            if let (Some(cache), Some(key)) = (cache, key) {
                                cache.put(key, &response).await;
                            }
                            Outcome::Done(response)
                        }
                        Err(error) => Outcome::Failed {
                            error,
                            delivered: false,
                        },
                    }
                })
            },
        )
        .await?;
        let finished =
            finished.ok_or_else(|| DispatchError::config("the call ended without an answer"))?;
        let mut response = finished.value;
        response.fallback = finished.target > 0;
        response.attempts = finished.attempts;
        response.open_circuits = finished.open_circuits;
        let sent = output::Sent::of(&targets[finished.target].provider.config);
        output::check(rendered, response, sent)
    }

    /// The request [`send_with`](Client::send_with) makes first (to the
    /// primary model, before any retry or fallback): the provider's name,
    /// the model, and the JSON body as sent. No headers, never a key; no
    /// key is needed to build it. `promptbook test --record` stores it in
    /// a cassette beside the answer.
    ///
    /// # Errors
    /// As [`send`](Client::send), for the problems found before sending:
    /// no model, an unknown provider, a prompt the wire cannot carry.
    pub fn request_body(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
    ) -> Result<RequestBody, DispatchError> {
        let targets = self.targets(rendered, options)?;
        let target = targets
            .first()
            .ok_or_else(|| DispatchError::config("no model to send to"))?;
        let (body, _) = body_for(rendered, target, false)?;
        Ok(RequestBody {
            provider: target.provider.name.clone(),
            model: target.model.clone(),
            body,
        })
    }

    /// Streams the answer of `rendered`'s model: [`StreamEvent::Text`] and
    /// [`StreamEvent::ToolCall`] pieces as they arrive, then
    /// [`StreamEvent::Done`] with the whole [`Response`]. Retries and
    /// fallbacks apply until the first piece is delivered; after that a
    /// failure ends the stream with an [`ErrorKind::Stream`] error holding what
    /// was received.
    ///
    /// The request runs on a tokio task of its own, which stops when the
    /// stream is dropped; outside a tokio runtime the stream yields one
    /// [`ErrorKind::Config`] error.
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
        let trace = CallTrace::start(&self.inner, &rendered, &options, true);
        let span = trace.span.clone();
        runtime.spawn(
            async move {
                // The whole answer is checked against the declarations
                // before `Done` (no repair: its text was already streamed).
                let first_chunk = std::sync::OnceLock::new();
                let result = client
                    .stream_inner(&rendered, &options, &tx, &first_chunk)
                    .await
                    .and_then(|r| {
                        r.map(|r| {
                            let sent = client.sent_to(&r.provider);
                            output::check(&rendered, r, sent)
                        })
                        .transpose()
                    });
                let first_chunk = first_chunk.get().copied();
                match result.map(|r| r.map(|r| client.priced(r))) {
                    Ok(Some(response)) => {
                        trace.success(&client.inner, &response, first_chunk);
                        let _ = tx.send(Ok(StreamEvent::Done(response))).await;
                    }
                    Ok(None) => {} // the caller went away
                    Err(e) => {
                        trace.failure(&client.inner, &e, first_chunk);
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
        first_chunk: &std::sync::OnceLock<Instant>,
    ) -> Result<Option<Response>, DispatchError> {
        let targets = self.targets(rendered, options)?;
        let finished = retry::run(
            &targets,
            &self.inner.retry,
            self.budget(TimeoutKind::Stream),
            &self.inner.breakers,
            |target| self.prepare(rendered, target, true),
            |target, prepared, _retry| {
                Box::pin(async move {
                    stream::attempt(&self.inner, target, &prepared, tx, first_chunk).await
                })
            },
        )
        .await?;
        Ok(finished.map(|f| {
            let mut response = f.value;
            targets[f.target].label(&mut response);
            response.fallback = f.target > 0;
            response.attempts = f.attempts;
            response.open_circuits = f.open_circuits;
            response
        }))
    }

    /// The whole call's time: the longer of the request and stream
    /// timeouts.
    fn budget(&self, kind: TimeoutKind) -> retry::Budget {
        let t = &self.inner.timeouts;
        retry::Budget {
            whole: t.request.max(t.stream),
            kind,
        }
    }

    /// The primary model and its fallbacks, each checked (known provider,
    /// key present) before anything is sent.
    fn targets(
        &self,
        rendered: &Rendered,
        options: &SendOptions,
    ) -> Result<Vec<Target>, DispatchError> {
        let block = rendered.model.as_ref();
        let primary = primary(rendered, options)?;
        let fallbacks = options
            .fallbacks
            .clone()
            .unwrap_or_else(|| block.map(|b| b.fallbacks.clone()).unwrap_or_default());
        let own = block
            .and_then(|b| b.connection.as_ref())
            .filter(|_| options.model.is_none());
        let first = match own {
            Some(connection) => connected_target(
                block.map(|b| b.as_ref()),
                connection,
                &primary,
                &self.inner.providers,
            )?,
            None => self.target(&primary)?,
        };
        std::iter::once(Ok(first))
            .chain(fallbacks.iter().map(|spec| self.target(spec)))
            .collect()
    }

    fn target(&self, spec: &str) -> Result<Target, DispatchError> {
        let providers = &self.inner.providers;
        let (provider, model) = split_target(spec, providers)?;
        if model.is_empty() {
            return Err(DispatchError::config(format!("`{spec}` names no model")));
        }
        let provider = providers.get(provider).ok_or_else(|| {
            DispatchError::config(format!("provider `{provider}` is not configured"))
        })?;
        read_key(provider)?;
        Ok(Target {
            provider: provider.clone(),
            model: model.to_owned(),
        })
    }

    fn prepare(
        &self,
        rendered: &Rendered,
        target: &Target,
        stream: bool,
    ) -> Result<Prepared, DispatchError> {
        let (body, prompt_tokens) = body_for(rendered, target, stream)?;
        let params = rendered.model.as_ref().map(|m| &m.parameters);
        let deterministic = params
            .and_then(|p| p.get("temperature"))
            .and_then(Value::as_f64)
            .is_some_and(|t| t == 0.0);
        Ok(Prepared {
            body,
            prompt_tokens,
            key: read_key(&target.provider)?,
            deterministic,
            partial_output: rendered.output_schema.is_some()
                && target.provider.config.structured_output != config::StructuredOutput::Tool,
        })
    }
}

/// The model a call asks for first (`provider:name` or a bare name): the
/// override, else the template's `model:` block.
///
/// # Errors
/// [`ErrorKind::Config`] when neither names a model.
pub(crate) fn primary(rendered: &Rendered, options: &SendOptions) -> Result<String, DispatchError> {
    match (&options.model, rendered.model.as_ref()) {
        (Some(m), _) => Ok(m.clone()),
        (None, Some(b)) => {
            let name = b.name.clone().ok_or_else(|| {
                DispatchError::config(format!(
                    "{}: the `model:` block names no model; set `model.name` or pass a model",
                    rendered.template
                ))
            })?;
            Ok(match &b.provider {
                Some(p) => format!("{p}:{name}"),
                None => name,
            })
        }
        (None, None) => Err(DispatchError::config(format!(
            "{} has no `model:` block; pass a model (`--model provider:name`)",
            rendered.template
        ))),
    }
}

/// The provider and model of `spec`: a known provider's prefix
/// (`ollama:llama3.1:8b`), else a bare name whose provider is inferred
/// (`claude*` goes to `anthropic`, any other to `openai`).
///
/// # Errors
/// [`ErrorKind::Config`] for a prefix that names no configured provider.
pub(crate) fn split_target<'s>(
    spec: &'s str,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Result<(&'s str, &'s str), DispatchError> {
    Ok(match spec.split_once(':') {
        Some((p, m)) if providers.contains_key(p) => (p, m),
        Some((p, _)) if !p.contains(['.', '/']) && !p.is_empty() => {
            return Err(DispatchError::config(format!(
                "unknown provider `{p}` in `{spec}` (known: {}; declare others in providers.yaml)",
                providers.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        _ if spec.starts_with("claude") => ("anthropic", spec),
        _ => ("openai", spec),
    })
}

/// The JSON body of `rendered` for `target` (fitted to the target model's
/// budget), and its prompt tokens.
fn body_for(
    rendered: &Rendered,
    target: &Target,
    stream: bool,
) -> Result<(Value, usize), DispatchError> {
    let fitted = rendered
        .for_model(&target.model)
        .map_err(DispatchError::prompt)?;
    let empty = Map::new();
    let params = rendered.model.as_ref().map_or(&empty, |m| &m.parameters);
    let wire = wire::wire(target.provider.config.kind);
    let breakpoints = &fitted.cache_breakpoints;
    let mut body = wire
        .body_cached(&target.model, &fitted.messages, params, stream, breakpoints)
        .map_err(|message| {
            DispatchError::prompt(crate::error::Error::new(
                crate::error::ErrorKind::InvalidInput,
                format!("{}: {message}", rendered.template),
            ))
        })?;
    let cache_key = (!breakpoints.is_empty()).then(|| prompt_cache_key(&fitted));
    if let Value::Object(map) = &mut body {
        wire.answer(
            map,
            &wire::Answer {
                output: rendered.output_schema.as_deref(),
                tools: &rendered.tools,
                tool_choice: rendered.tool_choice.as_ref(),
                mode: target.provider.config.structured_output,
                cache_tools: breakpoints.iter().find(|b| b.messages == 0).map(|b| b.ttl),
                prompt_cache_key: cache_key.as_deref(),
            },
        );
    }
    Ok((body, fitted.tokens.total))
}

/// OpenAI's `prompt_cache_key` for a render that marks cache breakpoints:
/// `NAME@VERSION:HASH`, where HASH is 16 hex digits of the xxh3 of the
/// messages before its last static (not conversation) breakpoint, at most
/// 64 characters (OpenAI's limit; the name is shortened when it must be).
/// Two renders share a key exactly when their static prefixes are the
/// same, so requests that can share a cached prefix are routed together.
fn prompt_cache_key(rendered: &Rendered) -> String {
    let n = rendered
        .cache_breakpoints
        .iter()
        .filter(|b| !b.conversation)
        .map(|b| b.messages)
        .max()
        .unwrap_or(0)
        .min(rendered.messages.len());
    let prefix = serde_json::to_vec(&rendered.messages[..n]).unwrap_or_default();
    let hash = xxhash_rust::xxh3::xxh3_64(&prefix);
    let name: String = rendered.template.chars().take(64 - 17).collect();
    format!("{name}:{hash:016x}")
}

/// What [`Client::request_body`] returns.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RequestBody {
    /// The provider's name (`openai`, `anthropic`, a `providers.yaml` name).
    pub provider: String,
    /// The model.
    pub model: String,
    /// The JSON body.
    pub body: Value,
}

/// The target a template's own `model.connection` names (a Prompty file's):
/// its endpoint (`${env:VAR}` read now) as the base URL, the key from its
/// variable, Anthropic's wire for `provider: anthropic` and OpenAI's for
/// anything else; for `provider: azure`, Azure OpenAI's deployment path,
/// `api-version` and `api-key` header. No client-side limits apply (they
/// belong to configured providers).
///
/// A template file is not trusted to say where keys go: a key is sent only
/// to an endpoint read from the environment. An endpoint written in the
/// file (literally, or as the default of `${env:VAR:default}` when VAR is
/// unset) is used only without a key. The key of a configured provider
/// (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, or a `providers.yaml` entry's
/// `api_key_env`) goes only to that provider's origin, wherever the
/// template says the endpoint comes from. Values read from the environment
/// are never printed, only the variables' names.
fn connected_target(
    block: Option<&crate::template::ModelConfig>,
    connection: &crate::template::Connection,
    spec: &str,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Result<Target, DispatchError> {
    let provider = block
        .and_then(|b| b.provider.as_deref())
        .unwrap_or("openai");
    let name = spec.rsplit_once(':').map_or(spec, |(_, n)| n);
    // The endpoint, and the variable it came from (`None`: the file's).
    let (endpoint, from_env) = match connection.endpoint.as_deref().map(str::trim) {
        Some(e) if e.starts_with("${env:") && e.ends_with('}') => {
            // `${env:VAR}` or `${env:VAR:default}` (Prompty's spelling; the
            // default may hold colons, as a URL does).
            let inner = &e["${env:".len()..e.len() - 1];
            let (var, default) = match inner.split_once(':') {
                Some((var, default)) => (var.trim(), Some(default.trim())),
                None => (inner.trim(), None),
            };
            match std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
                Some(value) => (value, Some(var.to_owned())),
                None => match default.filter(|d| !d.is_empty()) {
                    Some(d) => (d.to_owned(), None),
                    None => {
                        return Err(DispatchError::config(format!(
                            "the template's model.connection takes its endpoint from the \
                             environment variable {var}, which is not set"
                        )));
                    }
                },
            }
        }
        Some(e) => (e.to_owned(), None),
        None => {
            return Err(DispatchError::config(
                "the template's model.connection names no endpoint",
            ));
        }
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(DispatchError::config(match &from_env {
            Some(var) => format!(
                "the template's model.connection endpoint, read from the environment \
                 variable {var}, must start with http:// or https://"
            ),
            None => format!(
                "the template's model.connection endpoint `{endpoint}` must start with \
                 http:// or https://"
            ),
        }));
    }
    if from_env.is_none()
        && let Some(key) = &connection.key_env
    {
        return Err(DispatchError::config(format!(
            "the template's model.connection would send the key in {key} to an endpoint the \
             template file itself names; a key goes only to an endpoint read from the \
             environment: write `endpoint: ${{env:VAR}}` and set VAR"
        )));
    }
    // A configured provider's key goes only to that provider.
    if let Some(key) = &connection.key_env
        && let Some((owner, own)) = providers
            .iter()
            .find(|(_, p)| p.config.api_key_env.as_deref() == Some(key.as_str()))
        && config::origin(&own.config.base_url) != config::origin(&endpoint)
    {
        let from = from_env.as_deref().unwrap_or("the template");
        return Err(DispatchError::config(format!(
            "the template's model.connection would send {key}, the key of provider `{owner}`, \
             to the endpoint read from {from}, which is another server; that key goes only to \
             `{owner}`'s base URL. Give the connection a key variable of its own (for Azure, \
             AZURE_OPENAI_API_KEY), or send without the connection: --model {owner}:{name}"
        )));
    }
    let kind = if provider == "anthropic" {
        ProviderKind::Anthropic
    } else {
        ProviderKind::Openai
    };
    let mut config = ProviderConfig::new(kind, endpoint.trim_end_matches('/'), None);
    config.api_key_env = connection.key_env.clone();
    if provider == "azure" {
        config.base_url = format!("{}/openai/deployments/{name}", config.base_url);
        config.auth_header = Some("api-key".into());
        config.query.insert(
            "api-version".into(),
            connection
                .api_version
                .clone()
                .unwrap_or_else(|| "2024-10-21".into()),
        );
    }
    let provider = Provider::new(
        provider.to_owned(),
        config,
        Limiter::new(&Limits::default()),
    );
    read_key(&provider)?;
    Ok(Target {
        provider: Arc::new(provider),
        model: name.to_owned(),
    })
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
