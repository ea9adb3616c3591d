//! A provider's wire format, as one value: where requests go, how the key
//! travels, the request body, and how answers and stream events read back.
//!
//! Each format lives in its own file ([`super::openai`],
//! [`super::anthropic`]) and implements [`Wire`]; [`wire`] picks it for a
//! [`ProviderKind`]. Adding a provider with a new wire format is a new file
//! and one arm in [`wire`]; the retry loop, limits, cache, timeouts and
//! size bounds apply to it unchanged.

use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

use super::config::ProviderKind;
use super::response::{Response, StreamEvent, ToolCall};
use crate::message::Message;

/// One provider wire format.
pub(crate) trait Wire: Sync {
    /// The URL a request goes to, for the provider's base URL.
    fn endpoint(&self, base_url: &str) -> String;

    /// The header the key travels in and its value, unless the provider's
    /// configuration names its own header (`auth_header`).
    fn auth(&self, key: &str) -> (&'static str, String);

    /// Headers every request carries, added unless already configured.
    fn headers(&self, _headers: &mut HeaderMap) {}

    /// The request body for `model` and `messages`, with the template's
    /// `model.parameters` translated; or, before anything is sent, why the
    /// messages cannot make a request the provider accepts (naming the
    /// message).
    fn body(
        &self,
        model: &str,
        messages: &[Message],
        params: &Map<String, Value>,
        stream: bool,
    ) -> Result<Value, String>;

    /// [`body`](Wire::body) with the template's prompt-cache breakpoints
    /// marked the provider's way. The default marks nothing (OpenAI caches
    /// prefixes by itself; see [`Answer::prompt_cache_key`]).
    fn body_cached(
        &self,
        model: &str,
        messages: &[Message],
        params: &Map<String, Value>,
        stream: bool,
        _breakpoints: &[crate::cache_breakpoint::CacheBreakpoint],
    ) -> Result<Value, String> {
        self.body(model, messages, params, stream)
    }

    /// Adds what the template declares about the answer (its output
    /// schema, tools and tool choice) to `body`, in the provider's form,
    /// over anything `model.parameters` put there.
    fn answer(&self, body: &mut Map<String, Value>, answer: &Answer<'_>);

    /// A whole (non-streamed) answer.
    fn response(&self, answer: &Value) -> Result<Response, String>;

    /// One stream event (`event:` name and `data:`), folded into `acc`.
    fn step(&self, acc: &mut Accumulator, event: &str, data: &str) -> Result<Step, String>;
}

/// What a template declares about its answer, as a request carries it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Answer<'a> {
    /// The answer's JSON Schema, as written (each wire rewrites it for its
    /// strict mode).
    pub output: Option<&'a Value>,
    /// The tools the model may call.
    pub tools: &'a [crate::tool::Tool],
    /// Whether and which tool it must call.
    pub tool_choice: Option<&'a crate::tool::ToolChoice>,
    /// How the provider takes the output schema.
    pub mode: super::config::StructuredOutput,
    /// A cache breakpoint before the first message: the tool definitions
    /// are cached (with this TTL, when written).
    pub cache_tools: Option<Option<crate::cache_breakpoint::CacheTtl>>,
    /// OpenAI's `prompt_cache_key` for a template that marks breakpoints,
    /// unless `model.parameters` sets one.
    pub prompt_cache_key: Option<&'a str>,
}

/// The name of the tool that carries the answer in
/// [`StructuredOutput::Tool`](super::config::StructuredOutput::Tool) mode:
/// the schema's name, made distinct from the declared tools'.
pub(crate) fn output_tool_name(schema: &Value, tools: &[crate::tool::Tool]) -> String {
    let base = schema_name(schema);
    let taken = |n: &str| tools.iter().any(|t| t.name == n);
    if !taken(&base) {
        return base;
    }
    // `NAME_output`, then `NAME_output_2`, ...: at most one more than
    // there are tools, each within the 64 characters a name may have.
    (1..=tools.len() + 1)
        .map(|i| {
            let suffix = if i == 1 {
                "_output".to_owned()
            } else {
                format!("_output_{i}")
            };
            let keep = 64 - suffix.len();
            format!("{}{suffix}", &base[..base.len().min(keep)])
        })
        .find(|n| !taken(n))
        .unwrap_or(base)
}

/// The instruction that gives the model the output schema when the wire
/// cannot carry it (JSON mode, or no structured output at all).
pub(crate) fn schema_instruction(schema: &Value) -> String {
    format!(
        "Answer with only a JSON value, and nothing else, that matches this JSON Schema:\n{schema}"
    )
}

/// A name for an output schema, from its `title`, in the characters
/// OpenAI's `json_schema.name` allows (`^[a-zA-Z0-9_-]{1,64}$`); `output`
/// when it has none.
pub(crate) fn schema_name(schema: &Value) -> String {
    let title = schema.get("title").and_then(Value::as_str).unwrap_or("");
    let name: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.trim_matches('_').is_empty() {
        "output".to_owned()
    } else {
        name
    }
}

/// An error when message `i` (0-based) holds media, naming its first
/// media part: for roles `provider` takes text only in (`roles` says which
/// take media).
pub(crate) fn text_only(
    i: usize,
    m: &crate::message::Message,
    provider: &str,
    roles: &str,
) -> Result<(), String> {
    match (1..)
        .zip(m.content.parts().iter())
        .find(|(_, p)| p.is_media())
    {
        Some((j, p)) => Err(media_refused(i, m.role, j, p, provider, roles)),
        None => Ok(()),
    }
}

/// Why message `i` (0-based), part `j` (1-based) cannot go to `provider`:
/// it is media in a role that takes text only.
fn media_refused(
    i: usize,
    role: crate::message::Role,
    j: usize,
    part: &crate::content::Part,
    provider: &str,
    roles: &str,
) -> String {
    format!(
        "message {} ({role}) part {j} is {} {}; {provider} takes media in {roles} messages only \
         (put it in a user message)",
        i + 1,
        if part.kind() == "image" { "an" } else { "a" },
        match part.kind() {
            "audio" => "audio clip",
            k => k,
        }
    )
}

/// The wire format of a provider kind.
pub(crate) fn wire(kind: ProviderKind) -> &'static dyn Wire {
    match kind {
        ProviderKind::Openai => &super::openai::OpenAi,
        ProviderKind::Anthropic => &super::anthropic::Anthropic,
    }
}

/// providers), else the body itself. The caller redacts and shortens it.
pub(crate) fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(v) = &parsed {
        let e = &v["error"];
        if let Some(m) = e["message"].as_str().or_else(|| e.as_str()) {
            return m.to_owned();
        }
        if let Some(m) = v["message"].as_str() {
            return m.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".into();
    }
    text.to_owned()
}

/// What one stream event did.
#[derive(Debug)]
pub(crate) enum Step {
    /// Forward these to the caller.
    Events(Vec<StreamEvent>),
    /// The stream said it is complete.
    Done,
}

/// Puts a stream back together while forwarding its pieces.

#[derive(Default)]
pub(crate) struct Accumulator {
    pub response: Response,
    /// OpenAI sends tool calls by `index`; Anthropic by content block
    /// index: provider index -> position in `response.tool_calls`.
    slots: std::collections::HashMap<usize, usize>,
    /// Bytes of the tool calls' ids, names and arguments so far.
    tool_bytes: usize,
    /// Whether the provider said why it stopped (a stream cut before that
    /// is incomplete).
    pub finished: bool,
}

impl Accumulator {
    /// The tool call for the provider's index `key`, made on first use.
    pub(crate) fn slot(&mut self, key: usize) -> usize {
        if let Some(&i) = self.slots.get(&key) {
            return i;
        }
        let i = self.response.tool_calls.len();
        self.response.tool_calls.push(ToolCall::default());
        self.slots.insert(key, i);
        i
    }

    /// Changes tool call `i` with `edit`, keeping [`size`](Self::size)
    /// up to date.
    pub(crate) fn edit_call(&mut self, i: usize, edit: impl FnOnce(&mut ToolCall)) {
        let call = &mut self.response.tool_calls[i];
        let len = |c: &ToolCall| c.id.len() + c.name.len() + c.arguments.len();
        let before = len(call);
        edit(call);
        self.tool_bytes = (self.tool_bytes + len(call)).saturating_sub(before);
    }

    /// What the text and tool calls received so far take, in bytes (kept
    /// as they grow: checking it after every event costs nothing).
    pub(crate) fn size(&self) -> usize {
        self.response.text.len() + self.tool_bytes
    }

    /// Ends a stream: a tool call whose input came as no JSON pieces
    /// (Anthropic) gets `{}`.
    pub(crate) fn finish(&mut self) {
        for call in &mut self.response.tool_calls {
            if call.arguments.is_empty() {
                call.arguments.push_str("{}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_tool_name_is_distinct_and_short_however_names_collide() {
        let schema = serde_json::json!({"title": format!("{}_output", "a".repeat(57))});
        let tools: Vec<crate::tool::Tool> = [
            format!("{}_output", "a".repeat(57)),
            format!("{}_output_2", "a".repeat(55)),
        ]
        .into_iter()
        .map(|n| crate::tool::Tool::new(n, serde_json::json!({"type": "object"})))
        .collect();
        let name = output_tool_name(&schema, &tools);
        assert!(name.len() <= 64, "{name}");
        assert!(tools.iter().all(|t| t.name != name), "{name}");
        assert_eq!(
            output_tool_name(&serde_json::json!({"title": "x"}), &tools),
            "x"
        );
    }

    /// A stream that opens a new tool call in every one of 200,000 events
    /// (OpenAI's `index`, Anthropic's content block): each event costs the
    /// same, however many calls came before (it grew quadratically: 40,000
    /// took 13 s of CPU). Checked within a bounded wait, not timed.
    #[test]
    fn many_tool_calls_accumulate_in_linear_time() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut acc = Accumulator::default();
            for i in 0..200_000usize {
                let slot = acc.slot(i);
                acc.edit_call(slot, |c| c.arguments.push_str("{}"));
                assert!(acc.size() <= 2 * (i + 1));
            }
            let _ = tx.send((acc.response.tool_calls.len(), acc.size()));
        });
        let (calls, size) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("200,000 tool calls within 20 s");
        assert_eq!((calls, size), (200_000, 400_000));
    }

    /// Prompty's published wire vectors with image and audio parts
    /// (tests/prompty/wire-media-vectors.json): our wires send the same
    /// messages for the same parts.
    #[test]
    fn prompty_wire_vectors_with_media() {
        use crate::content::{Content, Media, Part};
        use crate::message::{Message, Role};
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/prompty/wire-media-vectors.json"))
                .unwrap();
        for v in file["vectors"].as_array().unwrap() {
            let v = &v["vector"];
            let messages: Vec<Message> = v["input"]["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let parts = m["content"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            let value = p["value"].as_str().unwrap();
                            let media = match p["mediaType"].as_str() {
                                Some(t) => Media::data(t, value),
                                None => match value.strip_prefix("data:") {
                                    Some(rest) => {
                                        let (t, data) = rest.split_once(";base64,").unwrap();
                                        Media::data(t, data)
                                    }
                                    None => Media::url(value),
                                },
                            };
                            match p["kind"].as_str().unwrap() {
                                "text" => Part::text(value),
                                "image" => Part::Image(media),
                                "audio" => Part::Audio(media),
                                other => panic!("{other}"),
                            }
                        })
                        .collect();
                    let role: Role = m["role"].as_str().unwrap().parse().unwrap();
                    Message::new(role, Content::Parts(parts))
                })
                .collect();
            let kind = match v["provider"].as_str().unwrap() {
                "anthropic" => ProviderKind::Anthropic,
                _ => ProviderKind::Openai,
            };
            let body = wire(kind)
                .body("m", &messages, &serde_json::Map::new(), false)
                .unwrap();
            let want = &v["expected"]["request_body"]["messages"];
            assert_eq!(&body["messages"], want, "{}", v["name"]);
        }
    }
}
