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
//! | `GET /api/status` | `{"generation", "errors", "root"}` |
//! | `GET /api/events` | server-sent events: one `reload` event per reload |
//!
//! Errors are JSON: `{"error": {"message", "kind", "file", "line",
//! "column", "parameter", "rule"}}` (fields that do not apply are `null`),
//! with status 400 for a malformed request, 404 for an unknown template or
//! route, 413 for a body over [`MAX_BODY`], 422 for inputs, templates or
//! budgets that fail, and 503 for a render over [`RENDER_TIMEOUT`].
//!
//! There is no authentication: the server is for a developer's own machine,
//! and `promptbook serve` binds loopback unless told otherwise.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::{Error, ErrorKind};
use crate::render::RenderOptions;
use crate::watch::{ReloadEvent, WatchedRegistry};

/// The largest request body accepted (16 MiB: room for long histories).
pub const MAX_BODY: usize = 16 << 20;

/// How long a render may take before the server answers 503.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(10);

const PLAYGROUND: &str = include_str!("playground.html");

#[derive(Clone)]
struct AppState {
    registry: WatchedRegistry,
    events: broadcast::Sender<Arc<ReloadEvent>>,
}

/// The dev server's routes over `registry`.
///
/// Reload events reach `/api/events` through a small thread that forwards
/// the registry's subscription; it ends with the first reload after the
/// router (and every clone of it) is dropped.
///
/// # Errors
/// When that thread cannot be started.
pub fn router(registry: WatchedRegistry) -> std::io::Result<Router> {
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
    let state = AppState { registry, events };
    Ok(Router::new()
        .route("/", get(playground))
        .route("/api/templates", get(templates))
        .route("/api/render", post(render))
        .route("/api/status", get(status))
        .route("/api/events", get(events_stream))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
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
                 style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
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

async fn render(State(state): State<AppState>, body: Result<Bytes, BodyRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too large"
            } else {
                "bad request"
            };
            return api_error(rejection.status(), kind, rejection.body_text());
        }
    };
    let request: RenderRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad request",
                format!(
                    "the request body must be {{\"template\": \"NAME@REQ\", \"inputs\": {{...}}, \
                     \"model\": \"...\"?}}: {e}"
                ),
            );
        }
    };
    // Snapshot now: the render uses this registry however many reloads
    // land while it runs.
    let registry = state.registry.registry();
    let job = tokio::task::spawn_blocking(move || {
        let mut options = RenderOptions::new();
        if let Some(model) = request.model {
            options = options.model(model);
        }
        registry
            .render_with(&request.template, &request.inputs, &options)
            .map(|rendered| serde_json::to_vec(&rendered))
    });
    match tokio::time::timeout(RENDER_TIMEOUT, job).await {
        Ok(Ok(Ok(Ok(json)))) => {
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Ok(Ok(Err(e))) => error_response(&e),
        Ok(Ok(Ok(Err(e)))) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot serialise the render: {e}"),
        ),
        Ok(Err(e)) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the render failed: {e}"),
        ),
        Err(_) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the render took longer than {} s",
                RENDER_TIMEOUT.as_secs_f32()
            ),
        ),
    }
}

async fn events_stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
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

type BodyRejection = axum::extract::rejection::BytesRejection;

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
