//! Anthropic's messages API (`POST {base}/v1/messages`): the request body
//! (system messages lifted out, tool calls and results as blocks, turns
//! merged, a user turn first), the answer, the stream.
//!
//! Source: Anthropic's API reference for messages and streaming; the
//! official SDKs' recorded fixtures under `tests/fixtures`.

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use super::response::{FinishReason, Response, StreamEvent, ToolCall, Usage};
use super::wire::{Accumulator, Answer, Step, Wire};
use crate::cache_breakpoint::{CacheBreakpoint, CacheTtl};
use crate::message::{Message, Role};

/// The `anthropic-version` header sent unless a provider sets its own.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` sent to Anthropic when the template sets none (the API
/// requires it).
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u64 = 4096;

/// Parameters only OpenAI understands: not sent to Anthropic.
const OPENAI_ONLY: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "n",
    "response_format",
    "seed",
    "user",
    "parallel_tool_calls",
    "stream_options",
    "max_completion_tokens",
    "reasoning_effort",
    "modalities",
    "store",
    "prompt_cache_key",
];

/// The user turn put first when a conversation would otherwise start with
/// the assistant (or have no turn at all): Anthropic requires a user turn
/// first.
pub const ANTHROPIC_FIRST_TURN: &str = "(start of conversation)";

/// Anthropic's wire format.
pub(crate) struct Anthropic;

impl Wire for Anthropic {
    fn endpoint(&self, base_url: &str) -> String {
        format!("{}/v1/messages", base_url.trim_end_matches('/'))
    }

    fn auth(&self, key: &str) -> (&'static str, String) {
        ("x-api-key", key.to_owned())
    }

    fn headers(&self, headers: &mut HeaderMap) {
        if !headers.contains_key("anthropic-version") {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
    }

    fn body(
        &self,
        model: &str,
        messages: &[Message],
        params: &Map<String, Value>,
        stream: bool,
    ) -> Result<Value, String> {
        body(model, messages, params, stream, &[])
    }

    /// Each breakpoint becomes `cache_control: {"type": "ephemeral"}` (with
    /// `ttl` when written) on the last block before it: a system block
    /// (`system` is then an array of text blocks), or a message's block
    /// (the message's content then stays an array). Source: Anthropic's
    /// prompt caching guide.
    fn body_cached(
        &self,
        model: &str,
        messages: &[Message],
        params: &Map<String, Value>,
        stream: bool,
        breakpoints: &[CacheBreakpoint],
    ) -> Result<Value, String> {
        body(model, messages, params, stream, breakpoints)
    }

    /// `output_config: {"format": {"type": "json_schema", "schema"}}` (the
    /// Messages API's structured outputs, no beta header; the earlier beta
    /// sent `output_format` with `anthropic-beta:
    /// structured-outputs-2025-11-13`) with the schema in strict mode's
    /// form; `tools` as `{name, description, input_schema}`;
    /// `tool_choice` as `{"type": "auto" | "none" | "any"}` or
    /// `{"type": "tool", "name"}`. Source: Anthropic's Messages API
    /// reference and the official Python SDK's recorded requests.
    fn answer(&self, body: &mut Map<String, Value>, answer: &Answer<'_>) {
        use super::config::StructuredOutput as Mode;
        use crate::strict::{Strict, rewrite};
        let tool = |name: &str, description: Option<&Value>, schema: &Value| {
            let mut o = Map::new();
            o.insert("name".into(), name.into());
            if let Some(d) = description {
                o.insert("description".into(), d.clone());
            }
            o.insert("input_schema".into(), schema.clone());
            Value::Object(o)
        };
        let mut tools: Vec<Value> = answer
            .tools
            .iter()
            .map(|t| {
                let d = t.description.clone().map(Value::from);
                tool(&t.name, d.as_ref(), &t.parameters)
            })
            .collect();
        let mut forced = None;
        if let Some(schema) = answer.output {
            // A schema with a free-form part has no strict form: the
            // instruction carries it instead.
            let mode = match (
                answer.mode,
                crate::strict::inexpressible(schema, Strict::Anthropic),
            ) {
                (Mode::JsonSchema, Some(_)) => Mode::None,
                (mode, _) => mode,
            };
            match mode {
                Mode::JsonSchema => {
                    body.insert(
                        "output_config".into(),
                        json!({"format": {"type": "json_schema", "schema": rewrite(schema, Strict::Anthropic)}}),
                    );
                }
                Mode::Tool => {
                    let name = super::wire::output_tool_name(schema, answer.tools);
                    tools.push(tool(&name, schema.get("description"), schema));
                    forced = Some(json!({"type": "tool", "name": name}));
                }
                // Anthropic has no JSON mode: the schema as an instruction.
                Mode::JsonObject | Mode::None => {
                    let text = super::wire::schema_instruction(schema);
                    match body.get_mut("system") {
                        // Blocks (a breakpoint marks one): after them, so
                        // the cached prefix stays as it was.
                        Some(Value::Array(blocks)) => {
                            blocks.push(json!({"type": "text", "text": text}));
                        }
                        other => {
                            let system = match other.as_ref().and_then(|v| v.as_str()) {
                                Some(s) if !s.is_empty() => format!("{s}\n\n{text}"),
                                _ => text,
                            };
                            body.insert("system".into(), system.into());
                        }
                    }
                }
            }
        }
        if let (Some(ttl), Some(last)) = (answer.cache_tools, tools.last_mut()) {
            last["cache_control"] = cache_control(ttl);
        }
        if !tools.is_empty() {
            body.insert("tools".into(), tools.into());
        }
        if let Some(forced) = forced {
            body.insert("tool_choice".into(), forced);
        } else if let Some(choice) = answer.tool_choice {
            use crate::tool::ToolChoice;
            let c = match choice {
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
            };
            body.insert("tool_choice".into(), c);
        }
    }

    fn response(&self, answer: &Value) -> Result<Response, String> {
        response(answer)
    }

    /// Events that carry nothing (empty data, names this version does not
    /// know, such as `ping`) are skipped.
    fn step(&self, acc: &mut Accumulator, event: &str, data: &str) -> Result<Step, String> {
        const KNOWN: &[&str] = &[
            "",
            "message",
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "error",
        ];
        if !KNOWN.contains(&event) || data.trim().is_empty() {
            return Ok(Step::Events(Vec::new()));
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("malformed stream event: {e}"))?;
        let kind = if event.is_empty() || event == "message" {
            v["type"].as_str().unwrap_or("")
        } else {
            event
        };
        let mut events = Vec::new();
        match kind {
            "message_start" => {
                let m = &v["message"];
                acc.response.response_model = m["model"].as_str().map(str::to_owned);
                acc.response.response_id = m["id"].as_str().map(str::to_owned);
                acc.response.usage = usage(&m["usage"], None);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let i = acc.slot(index);
                        let id = block["id"].as_str().unwrap_or("").to_owned();
                        let name = block["name"].as_str().unwrap_or("").to_owned();
                        acc.edit_call(i, |call| {
                            call.id.clone_from(&id);
                            call.name.clone_from(&name);
                        });
                        events.push(StreamEvent::ToolCall {
                            index: i,
                            id: Some(id),
                            name: Some(name),
                            arguments: String::new(),
                        });
                    }
                    Some("text") => {
                        if let Some(text) = block["text"].as_str()
                            && !text.is_empty()
                        {
                            acc.response.text.push_str(text);
                            events.push(StreamEvent::Text(text.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or("");
                        if !text.is_empty() {
                            acc.response.text.push_str(text);
                            events.push(StreamEvent::Text(text.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or("");
                        let i = acc.slot(index);
                        acc.edit_call(i, |call| call.arguments.push_str(part));
                        if !part.is_empty() {
                            events.push(StreamEvent::ToolCall {
                                index: i,
                                id: None,
                                name: None,
                                arguments: part.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    acc.response.finish_reason = Some(FinishReason::from_anthropic(reason));
                    acc.finished = true;
                }
                if let Some(u) = usage(&v["usage"], acc.response.usage.as_ref()) {
                    acc.response.usage = Some(u);
                }
            }
            "message_stop" => return Ok(Step::Done),
            "error" => {
                return Err(format!(
                    "the provider sent an error: {}",
                    v["error"]["message"].as_str().unwrap_or(&v.to_string())
                ));
            }
            _ => {} // ping, content_block_stop, future events
        }
        Ok(Step::Events(events))
    }
}

/// The request body, or why the messages cannot make one Anthropic
/// accepts. Its documented rules for content: text blocks are never empty
/// or whitespace only; the first turn is the user's and turns alternate;
/// a final assistant turn (a prefill) does not end in whitespace;
/// `tool_use` input is an object; every `tool_result` answers a `tool_use`
/// of the assistant turn before it, and comes first in its user turn.
fn body(
    model: &str,
    messages: &[Message],
    params: &Map<String, Value>,
    stream: bool,
    breakpoints: &[CacheBreakpoint],
) -> Result<Value, String> {
    let mut system: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    // The cache control of each system text, when a breakpoint marks it.
    let mut system_marks: Vec<Option<Value>> = Vec::new();
    // Where the last block went: a system text, or a turn's block.
    #[derive(Clone, Copy)]
    enum Last {
        Nothing,
        System(usize),
        Turn(usize, usize),
    }
    let mut last = Last::Nothing;
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // The tool calls the last assistant turn made and no tool message has
    // answered yet, with the message that made them.
    let mut open_calls: Vec<String> = Vec::new();
    let mut calls_from = 0;
    // Every tool call id of the request: Anthropic wants them unique.
    let mut seen_ids: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let unanswered = |open: &[String], from: usize, at: Option<usize>| -> String {
        let ids: Vec<String> = open.iter().map(|c| format!("`{c}`")).collect();
        format!(
            "message {from} (assistant) calls {} that no tool message answers {}; Anthropic \
             requires the result of every tool call in the turn right after it",
            ids.join(", "),
            match at {
                Some(at) => format!("before message {at}"),
                None => "(the messages end)".to_owned(),
            }
        )
    };
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role, Role::Tool | Role::System | Role::Developer) && !open_calls.is_empty()
        {
            return Err(unanswered(&open_calls, calls_from, Some(i + 1)));
        }
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                super::wire::text_only(i, m, "Anthropic", "user and tool")?;
                let text = m.text();
                if !text.trim().is_empty() {
                    system.push(text);
                    system_marks.push(None);
                    last = Last::System(system.len() - 1);
                }
                mark(i, last, breakpoints, &mut system_marks, &mut turns);
                continue;
            }
            Role::User => ("user", blocks(i, m)?),
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let Some(at) = open_calls.iter().position(|c| c == id) else {
                    return Err(format!(
                        "message {} ({}) answers tool call `{id}`, which the assistant message \
                         before it did not make (or another tool message answered already); \
                         Anthropic requires every tool result to answer one tool call of the turn \
                         before",
                        i + 1,
                        m.role
                    ));
                };
                open_calls.remove(at);
                let content = match &m.content {
                    crate::content::Content::Text(t) => Value::from(t.as_str()),
                    crate::content::Content::Parts(_) => Value::Array(blocks(i, m)?),
                };
                (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": id,
                        "content": content,
                    })],
                )
            }
            Role::Assistant => {
                super::wire::text_only(i, m, "Anthropic", "user and tool")?;
                let mut blocks = text_block(&m.text());
                calls_from = i + 1;
                for call in m.tool_calls.iter().flatten() {
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = match serde_json::from_str(args) {
                        Ok(v @ Value::Object(_)) => v,
                        Ok(_) | Err(_) if args.trim().is_empty() => json!({}),
                        _ => {
                            return Err(format!(
                                "message {} (assistant) calls a tool with arguments that are not a \
                                 JSON object (`{}`); Anthropic's tool input is an object",
                                i + 1,
                                args.chars().take(60).collect::<String>()
                            ));
                        }
                    };
                    let id = call["id"].as_str().unwrap_or_default();
                    let name = call["function"]["name"].as_str().unwrap_or_default();
                    // Anthropic's patterns for a tool_use id and a tool name.
                    if id.is_empty()
                        || !id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(format!(
                            "message {} (assistant) has a tool call id `{id}` Anthropic does not \
                             accept: letters, digits, `_` and `-` only",
                            i + 1
                        ));
                    }
                    if name.is_empty()
                        || name.len() > 64
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(format!(
                            "message {} (assistant) calls a tool named `{name}`, which Anthropic \
                             does not accept: 1 to 64 letters, digits, `_` and `-`",
                            i + 1
                        ));
                    }
                    if !seen_ids.insert(id) {
                        return Err(format!(
                            "message {} (assistant) reuses the tool call id `{id}`; Anthropic \
                             requires every tool call id to be unique",
                            i + 1
                        ));
                    }
                    open_calls.push(id.to_owned());
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": id,
                        "name": call["function"]["name"],
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
        };
        if !blocks.is_empty() {
            // Anthropic rejects empty turns.
            match turns.last_mut() {
                Some((last, prev)) if *last == role => prev.extend(blocks),
                _ => turns.push((role, blocks)),
            }
            let t = turns.len() - 1;
            last = Last::Turn(t, turns[t].1.len() - 1);
        }
        mark(i, last, breakpoints, &mut system_marks, &mut turns);
    }
    if !open_calls.is_empty() {
        return Err(unanswered(&open_calls, calls_from, None));
    }
    /// Marks the last block when a breakpoint follows message `i`.
    fn mark(
        i: usize,
        last: Last,
        breakpoints: &[CacheBreakpoint],
        system_marks: &mut [Option<Value>],
        turns: &mut [(&'static str, Vec<Value>)],
    ) {
        let Some(b) = breakpoints.iter().find(|b| b.messages == i + 1) else {
            return;
        };
        let control = cache_control(b.ttl);
        match last {
            Last::Nothing => {}
            Last::System(k) => system_marks[k] = Some(control),
            Last::Turn(t, k) => turns[t].1[k]["cache_control"] = control,
        }
    }
    if turns.first().is_none_or(|(role, _)| *role != "user") {
        turns.insert(0, ("user", text_block(ANTHROPIC_FIRST_TURN)));
    }
    // Tool results first in their user turn.
    for (_, blocks) in &mut turns {
        blocks.sort_by_key(|b| b["type"] != "tool_result");
    }
    // A final assistant turn must not end in whitespace.
    if let Some(("assistant", blocks)) = turns.last_mut().map(|(r, b)| (*r, b))
        && let Some(last) = blocks.last_mut()
        && last["type"] == "text"
    {
        let trimmed = last["text"]
            .as_str()
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        last["text"] = trimmed.into();
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, blocks)| {
            json!({"role": role, "content": plain_or_blocks(blocks, !breakpoints.is_empty())})
        })
        .collect();

    let mut body = Map::new();
    body.insert("model".into(), model.into());
    let max_tokens = params
        .get("max_tokens")
        .or_else(|| params.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);
    body.insert("max_tokens".into(), max_tokens.into());
    if system_marks.iter().any(Option::is_some) {
        let blocks: Vec<Value> = system
            .iter()
            .zip(system_marks)
            .map(|(text, mark)| {
                let mut block = json!({"type": "text", "text": text});
                if let Some(mark) = mark {
                    block["cache_control"] = mark;
                }
                block
            })
            .collect();
        body.insert("system".into(), blocks.into());
    } else if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    body.insert("messages".into(), messages.into());
    for (k, v) in params {
        match k.as_str() {
            "max_tokens" => {}
            "stop" => {
                if !params.contains_key("stop_sequences") {
                    let stops = match v {
                        Value::String(_) => json!([v]),
                        _ => v.clone(),
                    };
                    body.insert("stop_sequences".into(), stops);
                }
            }
            "tools" => {
                body.insert("tools".into(), tools(v));
            }
            k if OPENAI_ONLY.contains(&k) => {}
            _ => {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    if stream {
        body.insert("stream".into(), true.into());
    } else {
        body.remove("stream");
    }
    Ok(Value::Object(body))
}

/// The blocks of message `i` (0-based): text blocks (none for empty or
/// whitespace-only text), `image` and `document` blocks with `base64`,
/// `url` or (plain-text documents) `text` sources. Audio is refused:
/// Anthropic's messages take none.
fn blocks(i: usize, m: &Message) -> Result<Vec<Value>, String> {
    use crate::content::{Content, Part, Source};
    let parts = match &m.content {
        Content::Text(t) => return Ok(text_block(t)),
        Content::Parts(parts) => parts,
    };
    let source = |media: &crate::content::Media| match &media.source {
        Source::Url(url) => json!({"type": "url", "url": url}),
        Source::Data { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data.as_str()})
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in (1..).zip(parts) {
        match p {
            Part::Text(t) => out.extend(text_block(t)),
            Part::Image(media) => out.push(json!({"type": "image", "source": source(media)})),
            Part::File(media) => {
                let src = match &media.source {
                    Source::Data { media_type, data } if media_type == "text/plain" => {
                        use base64::Engine as _;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(data.as_str())
                            .unwrap_or_default();
                        json!({"type": "text", "media_type": "text/plain",
                               "data": String::from_utf8_lossy(&bytes)})
                    }
                    _ => source(media),
                };
                let mut block = json!({"type": "document", "source": src});
                if let Some(name) = &media.filename {
                    block["title"] = name.as_str().into();
                }
                out.push(block);
            }
            Part::Audio(_) => {
                return Err(format!(
                    "message {} ({}) part {j} is audio; Anthropic's messages take text, images \
                     and documents only",
                    i + 1,
                    m.role,
                ));
            }
        }
    }
    Ok(out)
}

/// A text block, unless the text is empty or whitespace only (Anthropic
/// rejects those).
fn text_block(text: &str) -> Vec<Value> {
    if text.trim().is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

/// Anthropic's `cache_control` for a breakpoint.
fn cache_control(ttl: Option<CacheTtl>) -> Value {
    match ttl {
        Some(ttl) => json!({"type": "ephemeral", "ttl": ttl.as_str()}),
        None => json!({"type": "ephemeral"}),
    }
}

/// A turn of one text block goes as a plain string. With `cached` (the
/// request marks breakpoints) every turn stays blocks: a turn's form must
/// not change when a breakpoint on it moves on to a later turn (joined
/// text blocks would be other bytes), or the cached prefix would miss.
fn plain_or_blocks(blocks: Vec<Value>, cached: bool) -> Value {
    if cached {
        return Value::Array(blocks);
    }
    if let [only] = blocks.as_slice()
        && only["type"] == "text"
    {
        return only["text"].clone();
    }
    if blocks.iter().all(|b| b["type"] == "text") {
        let joined: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        return joined.join("\n\n").into();
    }
    Value::Array(blocks)
}

/// OpenAI-style tools (`{"type": "function", "function": {name,
/// description, parameters}}`) become Anthropic tools; Anthropic-style ones
/// pass through.
fn tools(tools: &Value) -> Value {
    let Some(list) = tools.as_array() else {
        return tools.clone();
    };
    list.iter()
        .map(|t| match t.get("function") {
            Some(f) if t["type"] == "function" => {
                let mut o = Map::new();
                o.insert("name".into(), f["name"].clone());
                if let Some(d) = f.get("description") {
                    o.insert("description".into(), d.clone());
                }
                o.insert(
                    "input_schema".into(),
                    f.get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                );
                Value::Object(o)
            }
            _ => t.clone(),
        })
        .collect()
}

fn response(v: &Value) -> Result<Response, String> {
    let content = v["content"]
        .as_array()
        .ok_or("the response has no `content` array")?;
    let mut r = Response {
        finish_reason: v["stop_reason"].as_str().map(FinishReason::from_anthropic),
        usage: usage(&v["usage"], None),
        response_model: v["model"].as_str().map(str::to_owned),
        response_id: v["id"].as_str().map(str::to_owned),
        ..Response::default()
    };
    for block in content {
        match block["type"].as_str() {
            Some("text") => r.text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => r.tool_calls.push(ToolCall::new(
                block["id"].as_str().unwrap_or("").to_owned(),
                block["name"].as_str().unwrap_or("").to_owned(),
                block["input"].to_string(),
            )),
            _ => {}
        }
    }
    Ok(r)
}

/// Anthropic's `usage`: `input_tokens` (after the last cache mark, so
/// without cache reads and writes), `output_tokens`,
/// `cache_read_input_tokens`, `cache_creation_input_tokens`. A stream's
/// `message_delta` may leave out what `message_start` said (`earlier`).
fn usage(u: &Value, earlier: Option<&Usage>) -> Option<Usage> {
    let input_tokens = u["input_tokens"]
        .as_u64()
        .or(earlier.map(|e| e.input_tokens))?;
    let mut usage = Usage::new(input_tokens, u["output_tokens"].as_u64().unwrap_or(0));
    usage.cache_read_input_tokens = u["cache_read_input_tokens"]
        .as_u64()
        .or(earlier.and_then(|e| e.cache_read_input_tokens));
    usage.cache_creation_input_tokens = u["cache_creation_input_tokens"]
        .as_u64()
        .or(earlier.and_then(|e| e.cache_creation_input_tokens));
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_body_follows_the_messages_api() {
        let mut call = Message::new(Role::Assistant, "Checking.");
        call.tool_calls = Some(vec![json!({"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": "{\"x\": 1}"}})]);
        let mut result = Message::new(Role::Tool, "42");
        result.tool_call_id = Some("c1".into());
        let body = Anthropic
            .body(
                "claude-x",
                &[
                    Message::new(Role::System, "Rule one."),
                    Message::new(Role::Developer, "Rule two."),
                    Message::new(Role::Assistant, "Hello, how can I help?"),
                    Message::new(Role::User, "a"),
                    Message::new(Role::User, "b"),
                    call,
                    result,
                ],
                &params(json!({"stop": "END", "seed": 1, "top_k": 3,
                "tools": [{"type": "function", "function": {"name": "f",
                    "parameters": {"type": "object"}}}]})),
                false,
            )
            .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-x",
                "max_tokens": DEFAULT_ANTHROPIC_MAX_TOKENS,
                "system": "Rule one.\n\nRule two.",
                "messages": [
                    {"role": "user", "content": ANTHROPIC_FIRST_TURN},
                    {"role": "assistant", "content": "Hello, how can I help?"},
                    {"role": "user", "content": "a\n\nb"},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "42"},
                    ]},
                ],
                "stop_sequences": ["END"],
                "top_k": 3,
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            })
        );
        let mut headers = HeaderMap::new();
        Anthropic.headers(&mut headers);
        assert_eq!(headers["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(
            Anthropic.endpoint("https://api.anthropic.com/"),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn answers_and_stream_events_read_back() {
        let r = Anthropic
            .response(&json!({"model": "claude-x", "stop_reason": "end_turn",
                "content": [{"type": "text", "text": "Hi"},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
                "usage": {"input_tokens": 7, "output_tokens": 2}}))
            .unwrap();
        assert_eq!(r.text, "Hi");
        assert_eq!(r.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.finish_reason, Some(FinishReason::Stop));

        let mut acc = Accumulator::default();
        for (event, data) in [
            (
                "message_start",
                r#"{"message":{"model":"claude-x","usage":{"input_tokens":11}}}"#,
            ),
            ("ping", r#"{"type": "ping"}"#),
            (
                "content_block_delta",
                r#"{"index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
            ),
            (
                "content_block_start",
                r#"{"index":1,"content_block":{"type":"tool_use","id":"t","name":"f"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
            ),
            (
                "message_delta",
                r#"{"delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":5}}"#,
            ),
            ("some_future_event", "not even json"),
        ] {
            assert!(
                matches!(Anthropic.step(&mut acc, event, data), Ok(Step::Events(_))),
                "{event}"
            );
        }
        assert!(matches!(
            Anthropic.step(&mut acc, "message_stop", "{}"),
            Ok(Step::Done)
        ));
        assert_eq!(acc.response.text, "Hello");
        assert_eq!(acc.response.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(acc.response.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            acc.response
                .usage
                .map(|u| (u.input_tokens, u.output_tokens)),
            Some((11, 5))
        );
        let e = Anthropic
            .step(&mut acc, "error", r#"{"error":{"message":"overloaded"}}"#)
            .unwrap_err();
        assert!(e.contains("overloaded"), "{e}");
    }
}

#[cfg(test)]
mod constraint_tests {
    use super::*;

    fn build(messages: &[Message]) -> Result<Value, String> {
        body("claude-x", messages, &Map::new(), false, &[])
    }

    fn tool_call(id: &str, args: &str) -> Message {
        let mut m = Message::new(Role::Assistant, "");
        m.tool_calls = Some(vec![json!({"id": id, "type": "function",
            "function": {"name": "f", "arguments": args}})]);
        m
    }

    fn tool_result(id: &str) -> Message {
        let mut m = Message::new(Role::Tool, "42");
        m.tool_call_id = Some(id.into());
        m
    }

    #[test]
    fn whitespace_only_text_never_goes_out() {
        let b = build(&[
            Message::new(Role::System, "  \n "),
            Message::new(Role::User, "hi"),
            Message::new(Role::Assistant, " \t\n"),
            Message::new(Role::User, "again"),
        ])
        .unwrap();
        assert!(b.get("system").is_none(), "{b}");
        assert_eq!(
            b["messages"],
            json!([{"role": "user", "content": "hi\n\nagain"}])
        );
    }

    #[test]
    fn a_final_assistant_turn_does_not_end_in_whitespace() {
        let b = build(&[
            Message::new(Role::User, "hi"),
            Message::new(Role::Assistant, "The answer is: \n"),
        ])
        .unwrap();
        assert_eq!(b["messages"][1]["content"], "The answer is:");
    }

    #[test]
    fn tool_results_answer_the_calls_before_them_and_come_first() {
        let b = build(&[
            Message::new(Role::User, "weather?"),
            tool_call("c1", "{\"city\": \"Oslo\"}"),
            tool_result("c1"),
            Message::new(Role::User, "and tomorrow?"),
        ])
        .unwrap();
        let last = &b["messages"][2]["content"];
        assert_eq!(last[0]["type"], "tool_result", "{b}");
        assert_eq!(last[1]["type"], "text", "{b}");

        let e = build(&[Message::new(Role::User, "x"), tool_result("nope")]).unwrap_err();
        assert!(
            e.contains("message 2 (tool)") && e.contains("`nope`"),
            "{e}"
        );
        let e = build(&[Message::new(Role::User, "x"), tool_call("c1", "[1, 2]")]).unwrap_err();
        assert!(
            e.contains("message 2 (assistant)") && e.contains("object"),
            "{e}"
        );
        // No arguments at all is an empty input.
        let b = build(&[
            Message::new(Role::User, "x"),
            tool_call("c1", ""),
            tool_result("c1"),
        ])
        .unwrap();
        assert_eq!(b["messages"][1]["content"][0]["input"], json!({}));
    }

    fn parallel(ids: &[&str]) -> Message {
        let mut m = Message::new(Role::Assistant, "");
        m.tool_calls = Some(
            ids.iter()
                .map(|id| json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}))
                .collect(),
        );
        m
    }

    /// What Anthropic answers 400 to is refused before sending, naming the
    /// message: a call without its result (parallel calls with one
    /// missing, a call followed by text, a call at the end), a result
    /// given twice, a repeated call id, an id or a tool name outside
    /// Anthropic's patterns.
    #[test]
    fn every_tool_call_has_exactly_one_result_right_after_it() {
        let user = || Message::new(Role::User, "x");
        for (messages, says) in [
            (
                vec![user(), parallel(&["c1", "c2"]), tool_result("c1")],
                "`c2`",
            ),
            (vec![user(), parallel(&["c1"]), user()], "before message 3"),
            (vec![user(), parallel(&["c1"])], "the messages end"),
            (
                vec![
                    user(),
                    parallel(&["c1"]),
                    tool_result("c1"),
                    tool_result("c1"),
                ],
                "answered already",
            ),
            (
                vec![
                    user(),
                    parallel(&["c1"]),
                    tool_result("c1"),
                    parallel(&["c1"]),
                    tool_result("c1"),
                ],
                "unique",
            ),
            (
                vec![user(), parallel(&["bad id!"]), tool_result("bad id!")],
                "does not accept",
            ),
        ] {
            let e = build(&messages).unwrap_err();
            assert!(e.contains(says), "{says}: {e}");
        }
        let mut named = parallel(&["c1"]);
        named.tool_calls.as_mut().unwrap()[0]["function"]["name"] = json!("f n");
        let e = build(&[user(), named, tool_result("c1")]).unwrap_err();
        assert!(e.contains("named `f n`"), "{e}");
        // Parallel calls answered in any order, a system message between:
        // fine, results first in one user turn.
        let b = build(&[
            user(),
            parallel(&["c1", "c2"]),
            Message::new(Role::System, "note"),
            tool_result("c2"),
            tool_result("c1"),
        ])
        .unwrap();
        let turn = &b["messages"][2]["content"];
        assert_eq!(
            (
                turn[0]["tool_use_id"].as_str(),
                turn[1]["tool_use_id"].as_str()
            ),
            (Some("c2"), Some("c1"))
        );
    }
}
