//! The dev server: a JSON API and a browser playground over a
//! [`WatchedRegistry`] (axum on tokio).
//!
//! [`router`] builds the whole app; serve it with `axum::serve` on a
//! listener of your choice, or run `promptbook serve`. Routes:
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /` | the playground page (self-contained: no CDN, works offline) |
//! | `GET /api/templates` | the catalog, as `promptbook list --json` |
//! | `POST /api/render` | `{"template", "inputs", "model"?}` → the JSON of `promptbook render --json` |
//! | `POST /api/diff` | `{"old", "new", "inputs", "model"?}` → `{"old", "new", "diff"}`: both renders and `promptbook diff --json` |
//! | `POST /api/test` | `{"template"}` → `{"results", "problems"}`: that version's tests, as `promptbook test --json` (snapshots are never written) |
//! | `GET /api/providers` | `{"providers": [{"name", "key"}], "error"}`: which providers have their key in the server's environment (never the key; with the `dispatch` feature) |
//! | `POST /api/send` | `{"template", "inputs", "model"?}` → the answer streamed as JSON lines (see `send.rs`; with the `dispatch` feature) |
//! | `GET /api/status` | `{"generation", "errors", "root"}` |
//! | `GET /api/events` | server-sent events: one `reload` event per reload |
//!
//! Errors are JSON: `{"error": {"message", "kind", "file", "line",
//! "column", "parameter", "rule"}}` (fields that do not apply are `null`),
//! with status 400 for a malformed request, 403 for a `Host` or `Origin`
//! that is not this server's (see below), 404 for an unknown template or
//! route, 413 for a body over [`MAX_BODY`], 415 for an API request body
//! that is not `application/json`, 422 for inputs, templates or budgets
//! that fail, and 503 (with `Retry-After`) when every render slot stayed
//! busy or a render took longer than [`Options::render_timeout`].
//!
//! There is no authentication: the server is for a developer's own machine,
//! and `promptbook serve` binds loopback unless told otherwise. What keeps
//! it safe to run there:
//!
//! - a web page in the user's browser cannot use it: DNS-rebound `Host`
//!   names, foreign `Origin`s and non-JSON API bodies are refused (see
//!   `guard.rs`);
//! - hostile templates and requests cannot exhaust the machine: at most
//!   [`Options::max_renders`] renders run at once (each under the
//!   registry's [`RenderLimits`](crate::RenderLimits), so memory is bounded
//!   by the limits times the slots; a render that the server gave up on
//!   keeps its slot until its fuel runs out), request bodies are capped at
//!   [`MAX_BODY`] and must arrive within [`Options::body_read_timeout`];
//! - idle or trickling connections cannot starve the others when served
//!   with [`serve`]: request heads must arrive within
//!   [`Options::header_read_timeout`], at most
//!   [`Options::max_connections`] are open at once, and at the cap a new
//!   client takes the place of the connection idle the longest.

mod guard;
mod listen;
mod prescan;
#[cfg(feature = "dispatch")]
mod send;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast};

use crate::error::{Error, ErrorKind};
use crate::render::RenderOptions;
use crate::watch::{ReloadEvent, WatchedRegistry};

/// The largest request body accepted (16 MiB: room for long histories).
pub const MAX_BODY: usize = 16 << 20;

/// How long a render may take before the server answers 503 (the default
/// of [`Options::render_timeout`]).
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(10);

const PLAYGROUND: &str = include_str!("playground.html");

/// The dev server's bounds and the names it answers to. Every bound has a
/// default fit for a developer's machine; see the module docs for what
/// each protects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Renders running at once. Default: the number of CPU cores.
    pub max_renders: usize,
    /// How long a render request waits for a free slot before the answer
    /// is 503 with `Retry-After: 1`. Default 1 s.
    pub render_queue_wait: Duration,
    /// How long a render may take before the answer is 503. Default
    /// [`RENDER_TIMEOUT`] (10 s).
    pub render_timeout: Duration,
    /// How long a request body may take to arrive. Default 10 s (a
    /// [`MAX_BODY`] body over loopback takes milliseconds).
    pub body_read_timeout: Duration,
    /// How long a client may take to send a request head (on a new
    /// connection, or the next request on a kept-alive one) before the
    /// connection is closed. Default 5 s. Used by [`serve`].
    pub header_read_timeout: Duration,
    /// How long a response may go without any of it being taken by the
    /// client before the connection is closed (a client that stops
    /// reading holds the response in memory). Default 10 s. Used by
    /// [`serve`].
    pub write_timeout: Duration,
    /// Connections open at once. At the cap a new client takes the place
    /// of the connection idle the longest (no request in flight); when all
    /// have one, new clients wait to be accepted. Default 256, or half the
    /// process's open-file limit when that is lower. Used by [`serve`].
    pub max_connections: usize,
    /// `Host` names accepted besides IP literals, `localhost` and
    /// `*.localhost` (lowercase, without port). Default none.
    pub allowed_hosts: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_renders: std::thread::available_parallelism().map_or(2, |n| n.get()),
            render_queue_wait: Duration::from_secs(1),
            render_timeout: RENDER_TIMEOUT,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_connections: listen::default_max_connections(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl Options {
    /// The defaults.
    pub fn new() -> Options {
        Options::default()
    }

    /// Sets how many renders run at once (at least 1).
    pub fn max_renders(mut self, n: usize) -> Options {
        self.max_renders = n.max(1);
        self
    }

    /// Sets how long a render may take.
    pub fn render_timeout(mut self, after: Duration) -> Options {
        self.render_timeout = after;
        self
    }

    /// Sets how long a render request waits for a slot.
    pub fn render_queue_wait(mut self, wait: Duration) -> Options {
        self.render_queue_wait = wait;
        self
    }

    /// Sets how long a request head may take to arrive.
    pub fn header_read_timeout(mut self, after: Duration) -> Options {
        self.header_read_timeout = after;
        self
    }

    /// Sets how long a response may wait for its client to read any of it.
    pub fn write_timeout(mut self, after: Duration) -> Options {
        self.write_timeout = after;
        self
    }

    /// Sets how long a request body may take to arrive.
    pub fn body_read_timeout(mut self, after: Duration) -> Options {
        self.body_read_timeout = after;
        self
    }

    /// Sets how many connections may be open at once (at least 1).
    pub fn max_connections(mut self, n: usize) -> Options {
        self.max_connections = n.max(1);
        self
    }

    /// Also answers to `Host: name` (with any port): for a server reached
    /// by a name other than an IP address or `localhost`.
    pub fn allow_host(mut self, name: impl Into<String>) -> Options {
        self.allowed_hosts.push(name.into().to_ascii_lowercase());
        self
    }
}

#[derive(Clone)]
struct AppState {
    registry: WatchedRegistry,
    events: broadcast::Sender<Arc<ReloadEvent>>,
    renders: Arc<Semaphore>,
    /// [`BODY_BUDGET`], in [`BODY_BLOCK`]s.
    bodies: Arc<Semaphore>,
    options: Arc<Options>,
    /// The Send button's client.
    #[cfg(feature = "dispatch")]
    sender: Arc<send::Sender>,
}

/// The dev server's routes over `registry`, with the default [`Options`].
///
/// # Errors
/// As [`router_with`].
pub fn router(registry: WatchedRegistry) -> std::io::Result<Router> {
    router_with(registry, Options::default())
}

/// Serves `registry` on `listener` under `options` until the future is
/// dropped: [`router_with`], with the header timeout and the connection
/// cap of [`Options`] applied to every connection (HTTP/1.1).
///
/// # Errors
/// When the reload-forwarding thread cannot be started.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: WatchedRegistry,
    options: Options,
) -> std::io::Result<()> {
    let app = router_with(registry, options.clone())?;
    listen::serve(listener, app, &options).await
}

/// The dev server's routes over `registry`.
///
/// Reload events reach `/api/events` through a small thread that forwards
/// the registry's subscription; it ends with the first reload after the
/// router (and every clone of it) is dropped. The connection-level bounds
/// of `options` (header timeout, connection cap) apply only through
/// [`serve`].
///
/// # Errors
/// When that thread cannot be started.
pub fn router_with(registry: WatchedRegistry, options: Options) -> std::io::Result<Router> {
    let (events, _) = broadcast::channel(64);
    let reloads = registry.subscribe();
    let weak = events.downgrade();
    std::thread::Builder::new()
        .name("promptbook-events".into())
        .spawn(move || {
            while let Ok(event) = reloads.recv() {
                let Some(events) = weak.upgrade() else { return };
                // No one listening is fine.
                let _ = events.send(Arc::new(event));
            }
        })?;
    let hosts = guard::Hosts {
        extra: options.allowed_hosts.clone(),
    };
    #[cfg(feature = "dispatch")]
    let sender = Arc::new(send::Sender::new(registry.root()));
    let state = AppState {
        registry,
        events,
        renders: Arc::new(Semaphore::new(options.max_renders.max(1))),
        bodies: Arc::new(Semaphore::new(BODY_BUDGET / BODY_BLOCK)),
        options: Arc::new(options),
        #[cfg(feature = "dispatch")]
        sender,
    };
    let routes = Router::new()
        .route("/", get(playground))
        .route("/api/templates", get(templates))
        .route("/api/render", post(render))
        .route("/api/diff", post(diff))
        .route("/api/test", post(test))
        .route("/api/status", get(status))
        .route("/api/events", get(events_stream));
    #[cfg(feature = "dispatch")]
    let routes = routes
        .route("/api/providers", get(send::providers))
        .route("/api/send", post(send::send));
    Ok(routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(hosts, guard::check))
        .with_state(state))
}

async fn playground() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The page loads nothing from anywhere: no CDN, no fonts.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; \
                 style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        PLAYGROUND,
    )
        .into_response()
}

async fn templates(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &state.registry.registry())
}

async fn status(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "generation": state.registry.generation(),
            "errors": state.registry.errors(),
            "root": state.registry.root(),
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderRequest {
    template: String,
    #[serde(default = "empty_object")]
    inputs: Value,
    #[serde(default)]
    model: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The most request-body and rendered-response bytes held at once, across
/// all requests: 256 MiB, sixteen bodies of [`MAX_BODY`]. A body takes its
/// share as its bytes arrive and gives it back when its request is done; a
/// rendered response takes its share before it is sent and gives it back
/// once the connection has taken all of it (see [`Held`]).
const BODY_BUDGET: usize = 256 << 20;

/// The unit [`BODY_BUDGET`] is handed out in.
const BODY_BLOCK: usize = 64 << 10;

/// A rendered response, holding its share of [`BODY_BUDGET`] until the
/// connection has taken all of it. It is handed over in copies of at most
/// [`BODY_BLOCK`] bytes, and the connection asks for the next piece only
/// once it has written the last one, so what the budget does not count
/// is one piece per connection; a client that stops reading is closed
/// after [`Options::write_timeout`], which frees the rest.
struct Held {
    rest: Bytes,
    _share: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.rest.len().min(BODY_BLOCK);
        let piece = Bytes::copy_from_slice(&self.rest[..n]);
        self.rest = self.rest.slice(n..);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// Reads a request body: at most [`MAX_BODY`] bytes, within `timeout`,
/// taking its share of [`BODY_BUDGET`] as it arrives (503 when the budget
/// is spent). Returns the bytes and the share, to keep until they are
/// parsed.
async fn read_body(
    body: Body,
    timeout: Duration,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), Response> {
    use futures_util::StreamExt;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        let mut share: Option<tokio::sync::OwnedSemaphorePermit> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                api_error(
                    StatusCode::BAD_REQUEST,
                    "bad request",
                    format!("cannot read the request body: {e}"),
                )
            })?;
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too large",
                    format!("the request body is over {MAX_BODY} bytes"),
                ));
            }
            let held = share.as_ref().map_or(0, |s| s.num_permits());
            let needed = (bytes.len() + chunk.len()).div_ceil(BODY_BLOCK);
            if needed > held {
                let more = u32::try_from(needed - held).unwrap_or(u32::MAX);
                let Ok(extra) = budget.clone().try_acquire_many_owned(more) else {
                    return Err(retry_later(
                        "busy",
                        "the server holds as many request bodies as it may; try again".into(),
                    ));
                };
                match &mut share {
                    Some(s) => s.merge(extra),
                    None => share = Some(extra),
                }
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((Bytes::from(bytes), share))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(api_error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f32()
            ),
        )),
    }
}

/// What a render job came to.
enum Outcome {
    Failed(Error),
    BadRequest(String),
    TooBig(u64),
    Internal(String),
}

async fn render(State(state): State<AppState>, body: Body) -> Response {
    run_job(
        &state,
        body,
        RENDER_SHAPE,
        |registry, request: RenderRequest| {
            let mut options = RenderOptions::new();
            if let Some(model) = request.model {
                options = options.model(model);
            }
            registry
                .render_with(&request.template, &request.inputs, &options)
                .map_err(Outcome::Failed)
                .and_then(|rendered| to_json(&rendered))
        },
    )
    .await
}

const RENDER_SHAPE: &str = r#"{"template": "NAME@REQ", "inputs": {...}, "model": "..."?}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffRequest {
    old: String,
    new: String,
    #[serde(default = "empty_object")]
    inputs: Value,
    #[serde(default)]
    model: Option<String>,
}

const DIFF_SHAPE: &str =
    r#"{"old": "NAME@REQ", "new": "NAME@REQ", "inputs": {...}, "model": "..."?}"#;

/// `POST /api/diff`: both renders on the same inputs, and what changes
/// between them (`promptbook diff --json`), as `{"old", "new", "diff"}`.
async fn diff(State(state): State<AppState>, body: Body) -> Response {
    run_job(
        &state,
        body,
        DIFF_SHAPE,
        |registry, request: DiffRequest| {
            let mut options = RenderOptions::new();
            if let Some(model) = request.model {
                options = options.model(model);
            }
            let render = |r: &str| {
                registry
                    .render_with(r, &request.inputs, &options)
                    .map_err(Outcome::Failed)
            };
            let (old, new) = (render(&request.old)?, render(&request.new)?);
            to_json(&json!({"old": old, "new": new, "diff": crate::diff::diff(&old, &new)}))
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    template: String,
}

const TEST_SHAPE: &str = r#"{"template": "NAME@REQ"}"#;

/// `POST /api/test`: runs the tests of one template version, as
/// `promptbook test --json` (never writing snapshots), with the problems
/// of its test file: `{"results": [...], "problems": ["path:line:col:
/// error: ..."]}`.
async fn test(State(state): State<AppState>, body: Body) -> Response {
    // Tests stop starting when the answer could no longer be used.
    let limit = state.options.render_timeout;
    run_job(
        &state,
        body,
        TEST_SHAPE,
        move |registry, request: TestRequest| {
            let deadline = std::time::Instant::now() + limit;
            let id = registry
                .get(&request.template)
                .map_err(Outcome::Failed)?
                .id();
            let mut suite = crate::suite::Suite::load(&registry);
            suite
                .retain_templates(&registry, &[id])
                .map_err(Outcome::Failed)?;
            let report = suite.run_until(&registry, crate::suite::Snapshots::Check, Some(deadline));
            let problems: Vec<String> = suite.problems().iter().map(|p| p.to_string()).collect();
            to_json(&json!({"results": report.results, "problems": problems}))
        },
    )
    .await
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, Outcome> {
    serde_json::to_vec(value).map_err(|e| Outcome::Internal(format!("cannot serialise: {e}")))
}

/// One API request that renders: its body read under the budget, a render
/// slot taken (held by the work itself until it ends, not by this request,
/// which may give up on it first: parsed inputs and renders in memory never
/// outnumber the slots), the body pre-counted and parsed as `R` (`shape`
/// says what it should look like when it is not), then `work` on a
/// snapshot of the registry (the same one however many reloads land while
/// it runs), under [`Options::render_timeout`]; its JSON is the answer.
async fn run_job<R, F>(state: &AppState, body: Body, shape: &'static str, work: F) -> Response
where
    R: serde::de::DeserializeOwned,
    F: FnOnce(crate::Registry, R) -> Result<Vec<u8>, Outcome> + Send + 'static,
{
    let json = match run_work(state, body, shape, work).await {
        Ok(json) => json,
        Err(response) => return response,
    };
    let blocks = u32::try_from(json.len().div_ceil(BODY_BLOCK)).unwrap_or(u32::MAX);
    let Ok(share) = state.bodies.clone().try_acquire_many_owned(blocks) else {
        return retry_later(
            "busy",
            "the server holds as many request bodies and responses as it may; try again".into(),
        );
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::new(Held {
            rest: Bytes::from(json),
            _share: share,
        }),
    )
        .into_response()
}

/// [`run_job`]'s work without the answer: what `work` made, or the error
/// response.
async fn run_work<R, T, F>(
    state: &AppState,
    body: Body,
    shape: &'static str,
    work: F,
) -> Result<T, Response>
where
    R: serde::de::DeserializeOwned,
    T: Send + 'static,
    F: FnOnce(crate::Registry, R) -> Result<T, Outcome> + Send + 'static,
{
    let (body, share) = read_body(body, state.options.body_read_timeout, &state.bodies).await?;
    let wait = state.options.render_queue_wait;
    let slot = match tokio::time::timeout(wait, state.renders.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            return Err(retry_later(
                "busy",
                format!(
                    "all {} render slots stayed busy for {} s; try again",
                    state.options.max_renders,
                    wait.as_secs_f32()
                ),
            ));
        }
    };
    let registry = state.registry.registry();
    let job = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let _share = share;
        // What the values would take, before building them.
        let budget = registry.limits().max_input_bytes as u64;
        match prescan::check(&body, budget) {
            Ok(()) => {}
            Err(prescan::Refused::TooBig { budget }) => return Err(Outcome::TooBig(budget)),
            Err(prescan::Refused::Invalid(e)) => return Err(Outcome::BadRequest(e)),
        }
        let request: R = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return Err(Outcome::BadRequest(e.to_string())),
        };
        drop(body);
        work(registry, request)
    });
    let timeout = state.options.render_timeout;
    let outcome = match tokio::time::timeout(timeout, job).await {
        Ok(Ok(Ok(done))) => return Ok(done),
        Ok(Ok(Err(outcome))) => outcome,
        Ok(Err(e)) => Outcome::Internal(format!("the render failed: {e}")),
        Err(_) => {
            return Err(retry_later(
                "timeout",
                format!("the render took longer than {} s", timeout.as_secs_f32()),
            ));
        }
    };
    Err(match outcome {
        Outcome::Failed(e) => error_response(&e),
        Outcome::BadRequest(e) => api_error(
            StatusCode::BAD_REQUEST,
            "bad request",
            format!("the request body must be {shape}: {e}"),
        ),
        Outcome::TooBig(budget) => api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
            format!(
                "the request's values would take more than {budget} bytes in memory \
                 (RenderLimits::max_input_bytes; strings plus {} bytes per value)",
                prescan::PER_VALUE
            ),
        ),
        Outcome::Internal(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    })
}

/// The reload events, as server-sent events. The stream is marked
/// [`listen::LongLived`]: while it waits for a reload its connection counts
/// as idle, so at the connection cap it may be closed for a new client (a
/// browser's `EventSource` reconnects by itself).
async fn events_stream(State(state): State<AppState>) -> Response {
    let mut response = events_sse(&state).into_response();
    response.extensions_mut().insert(listen::LongLived);
    response
}

fn events_sse(state: &AppState) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let rx = state.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((Ok(reload_event(&event)), rx)),
                // A slow client missed some: the next one still tells it
                // the current generation.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn reload_event(event: &ReloadEvent) -> Event {
    let generation = event.generation.to_string();
    Event::default()
        .event("reload")
        .id(generation.clone())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().event("reload").data(generation))
}

async fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "not found", "no such route".into())
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(json) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response(),
        Err(e) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot serialise the answer: {e}"),
        ),
    }
}

/// A 503 with `Retry-After: 1`: busy now, not broken.
fn retry_later(kind: &str, message: String) -> Response {
    let mut response = api_error(StatusCode::SERVICE_UNAVAILABLE, kind, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn api_error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = json!({"error": {
        "message": message,
        "kind": kind,
        "file": null,
        "line": null,
        "column": null,
        "parameter": null,
        "rule": null,
    }});
    (status, axum::Json(body)).into_response()
}

/// A library error as JSON, with the status its kind calls for.
fn error_response(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::Reference => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput | ErrorKind::Budget | ErrorKind::Template | ErrorKind::Limit => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let location = e
        .location()
        .or_else(|| e.related().iter().find_map(Error::location));
    let body = json!({"error": {
        "message": e.to_string(),
        "kind": e.kind().to_string(),
        "file": location.map(|l| l.path()),
        "line": location.and_then(|l| l.line()),
        "column": location.and_then(|l| l.column()),
        "parameter": e.parameter(),
        "rule": e.rule(),
    }});
    (status, axum::Json(body)).into_response()
}
