//! The playground's Send button: `GET /api/providers` says which providers
//! have their key in the server's environment (never the key), and
//! `POST /api/send` renders a template like `/api/render` and streams the
//! model's answer back as JSON lines.
//!
//! `POST /api/send` takes `{"template", "inputs", "model"?}` and answers
//! `application/x-ndjson`, one event per line:
//!
//! | line | when |
//! |---|---|
//! | `{"type": "text", "text"}` | a piece of the answer |
//! | `{"type": "output", "value"}` | the structured answer parsed so far |
//! | `{"type": "tool_call", "index", "id", "name", "arguments"}` | a piece of a tool call |
//! | `{"type": "done", "response"}` | the end: the whole `Response` (validated `output`, tool calls with their `problem`, usage, who answered) |
//! | `{"type": "error", "error": {"kind", "message", "pointer", "rule", "text"}}` | the end, failed (`pointer` and `rule` for an invalid output, `text` what had arrived) |
//! | `{"type": "waiting"}` | the provider has sent nothing for a while (at most every 2 s): keeps the connection open |
//!
//! A request that fails before rendering (a bad body, inputs that do not
//! validate) gets the same JSON error answers as `/api/render`; a failure
//! after it (no key, the provider's error) is the `error` line. The same `Host`/`Origin`/JSON rules apply (`guard.rs`);
//! at most [`MAX_SENDS`] answers stream at once (each costs money).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{
    AppState, Outcome, RENDER_SHAPE, RenderRequest, api_error, json_response, retry_later,
};
use crate::RenderOptions;
use crate::dispatch::{Client, ClientBuilder, DispatchError, StreamEvent};

/// How many answers stream at once.
pub const MAX_SENDS: usize = 4;

/// The server's client, built once from the environment and the root's
/// `providers.yaml` (or why it could not be).
pub(crate) struct Sender {
    client: Result<Client, String>,
    slots: Arc<Semaphore>,
}

impl Sender {
    pub(crate) fn new(root: &std::path::Path) -> Sender {
        let client = ClientBuilder::new()
            .template_root(root)
            .and_then(ClientBuilder::build)
            .map_err(|e| e.to_string());
        Sender {
            client,
            slots: Arc::new(Semaphore::new(MAX_SENDS)),
        }
    }
}

/// `GET /api/providers`: `{"providers": [{"name", "key"}], "error"}`:
/// each configured provider with whether its key is set (`key: true` for
/// one that needs none); `error` says why sending is not possible at all
/// (a bad `providers.yaml`), else `null`.
pub(crate) async fn providers(State(state): State<AppState>) -> Response {
    let (list, error) = match &state.sender.client {
        Ok(client) => (
            client
                .providers()
                .into_iter()
                .map(|(name, key)| json!({"name": name, "key": key}))
                .collect::<Vec<_>>(),
            Value::Null,
        ),
        Err(e) => (Vec::new(), Value::from(e.as_str())),
    };
    json_response(StatusCode::OK, &json!({"providers": list, "error": error}))
}

/// `POST /api/send`: see the module docs.
pub(crate) async fn send(State(state): State<AppState>, body: Body) -> Response {
    let client = match &state.sender.client {
        Ok(client) => client.clone(),
        Err(e) => {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "config",
                format!("sending is not configured: {e}"),
            );
        }
    };
    let Ok(slot) = state.sender.slots.clone().try_acquire_owned() else {
        return retry_later(
            "busy",
            format!("{MAX_SENDS} answers are streaming already; try again"),
        );
    };
    let rendered =
        match super::run_work(&state, body, RENDER_SHAPE, |registry, r: RenderRequest| {
            let mut options = RenderOptions::new();
            if let Some(model) = r.model {
                options = options.model(model);
            }
            registry
                .render_with(&r.template, &r.inputs, &options)
                .map_err(Outcome::Failed)
        })
        .await
        {
            Ok(rendered) => rendered,
            Err(response) => return response,
        };
    let events = client.stream(&rendered);
    // While the provider is silent (a slow first token, a long pause), a
    // `waiting` line every so often: the connection's write timeout counts
    // silence as a stalled client.
    let every = (state.options.write_timeout / 2).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(2),
    );
    let ticks = futures_util::stream::unfold(events, move |mut events| async move {
        match tokio::time::timeout(every, events.next()).await {
            Ok(Some(event)) => Some((Some(event), events)),
            Ok(None) => None,
            Err(_) => Some((None, events)),
        }
    });
    let lines = ticks.map(move |event| {
        // The slot is held until the stream ends or the page goes away.
        let _held = &slot;
        let Some(event) = event else {
            return Ok::<_, Infallible>(Bytes::from_static(b"{\"type\":\"waiting\"}\n"));
        };
        let line = match event {
            Ok(StreamEvent::Text(text)) => json!({"type": "text", "text": text}),
            Ok(StreamEvent::Output(value)) => json!({"type": "output", "value": value}),
            Ok(StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            }) => json!({"type": "tool_call", "index": index, "id": id, "name": name, "arguments": arguments}),
            Ok(StreamEvent::Done(response)) => json!({"type": "done", "response": response}),
            Err(e) => error_line(&e),
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// A failed answer as its last line. Dispatch errors hold no key.
fn error_line(e: &DispatchError) -> Value {
    let problem = e.output_problem();
    json!({"type": "error", "error": {
        "kind": e.class(),
        "message": e.to_string(),
        "pointer": problem.map(|p| p.pointer.clone()),
        "rule": problem.map(|p| p.rule.clone()),
        "text": e.partial().map(|r| r.text.clone()),
    }})
}
