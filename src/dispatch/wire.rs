//! The two wire formats: request bodies from messages, responses and
//! stream events back to [`Response`].

use serde_json::{Map, Value, json};

use super::response::{FinishReason, Response, StreamEvent, ToolCall, Usage};
use crate::message::{Message, Role};

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
];

/// Parameters only Anthropic understands: not sent to OpenAI.
const ANTHROPIC_ONLY: &[&str] = &["top_k", "stop_sequences", "thinking", "metadata"];

// ---------------------------------------------------------------- OpenAI

pub fn openai_body(
    model: &str,
    messages: &[Message],
    params: &Map<String, Value>,
    stream: bool,
) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert(
        "messages".into(),
        messages
            .iter()
            .map(openai_message)
            .collect::<Vec<_>>()
            .into(),
    );
    for (k, v) in params {
        if ANTHROPIC_ONLY.contains(&k.as_str()) {
            if k == "stop_sequences" && !params.contains_key("stop") {
                body.insert("stop".into(), v.clone());
            }
            continue;
        }
        body.insert(k.clone(), v.clone());
    }
    if stream {
        body.insert("stream".into(), true.into());
        // Usage arrives in a last chunk only when asked for.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    } else {
        body.remove("stream");
        body.remove("stream_options");
    }
    Value::Object(body)
}

fn openai_message(m: &Message) -> Value {
    let mut o = Map::new();
    o.insert("role".into(), m.role.as_str().into());
    let calls = m.tool_calls.as_ref().filter(|c| !c.is_empty());
    // An assistant turn that only calls tools has `content: null`.
    if calls.is_some() && m.content.is_empty() {
        o.insert("content".into(), Value::Null);
    } else {
        o.insert("content".into(), m.content.clone().into());
    }
    if let Some(name) = &m.name {
        o.insert("name".into(), name.clone().into());
    }
    if let Some(calls) = calls {
        o.insert("tool_calls".into(), Value::Array(calls.clone()));
    }
    if let Some(id) = &m.tool_call_id {
        o.insert("tool_call_id".into(), id.clone().into());
    }
    Value::Object(o)
}

pub fn openai_response(v: &Value) -> Result<Response, String> {
    let choice = v["choices"]
        .get(0)
        .ok_or("the response has no `choices[0]`")?;
    let message = &choice["message"];
    let mut r = Response {
        text: message["content"].as_str().unwrap_or("").to_owned(),
        finish_reason: choice["finish_reason"]
            .as_str()
            .map(FinishReason::from_openai),
        usage: openai_usage(&v["usage"]),
        response_model: v["model"].as_str().map(str::to_owned),
        ..Response::default()
    };
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        r.tool_calls.push(ToolCall {
            id: call["id"].as_str().unwrap_or("").to_owned(),
            name: call["function"]["name"].as_str().unwrap_or("").to_owned(),
            arguments: call["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        });
    }
    if message.is_null() {
        return Err("the response has no `choices[0].message`".into());
    }
    Ok(r)
}

fn openai_usage(u: &Value) -> Option<Usage> {
    Some(Usage {
        input_tokens: u["prompt_tokens"].as_u64()?,
        output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

// ------------------------------------------------------------- Anthropic

/// The user turn put first when a conversation would otherwise start with
/// the assistant (or have no turn at all): Anthropic requires a user turn
/// first.
pub const ANTHROPIC_FIRST_TURN: &str = "(start of conversation)";

pub fn anthropic_body(
    model: &str,
    messages: &[Message],
    params: &Map<String, Value>,
    stream: bool,
) -> Value {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                if !m.content.is_empty() {
                    system.push(&m.content);
                }
                continue;
            }
            Role::User => ("user", text_block(&m.content)),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks = text_block(&m.content);
                for call in m.tool_calls.iter().flatten() {
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
        };
        if blocks.is_empty() {
            continue; // Anthropic rejects empty turns
        }
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.first().is_none_or(|(role, _)| *role != "user") {
        turns.insert(0, ("user", text_block(ANTHROPIC_FIRST_TURN)));
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, blocks)| json!({"role": role, "content": plain_or_blocks(blocks)}))
        .collect();

    let mut body = Map::new();
    body.insert("model".into(), model.into());
    let max_tokens = params
        .get("max_tokens")
        .or_else(|| params.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);
    body.insert("max_tokens".into(), max_tokens.into());
    if !system.is_empty() {
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
                body.insert("tools".into(), anthropic_tools(v));
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
    Value::Object(body)
}

fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

/// A turn of one text block goes as a plain string.
fn plain_or_blocks(blocks: Vec<Value>) -> Value {
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
fn anthropic_tools(tools: &Value) -> Value {
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

pub fn anthropic_response(v: &Value) -> Result<Response, String> {
    let content = v["content"]
        .as_array()
        .ok_or("the response has no `content` array")?;
    let mut r = Response {
        finish_reason: v["stop_reason"].as_str().map(FinishReason::from_anthropic),
        usage: anthropic_usage(&v["usage"], None),
        response_model: v["model"].as_str().map(str::to_owned),
        ..Response::default()
    };
    for block in content {
        match block["type"].as_str() {
            Some("text") => r.text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => r.tool_calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or("").to_owned(),
                name: block["name"].as_str().unwrap_or("").to_owned(),
                arguments: block["input"].to_string(),
            }),
            _ => {}
        }
    }
    Ok(r)
}

fn anthropic_usage(u: &Value, input: Option<u64>) -> Option<Usage> {
    let input_tokens = u["input_tokens"].as_u64().or(input)?;
    Some(Usage {
        input_tokens,
        output_tokens: u["output_tokens"].as_u64().unwrap_or(0),
    })
}

/// The provider's message in an error body (`{"error": {"message"}}`, both
/// providers), else the body itself. The caller redacts and shortens it.
pub fn error_message(body: &[u8]) -> String {
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

// --------------------------------------------------------------- streams

/// What one stream event did.
pub enum Step {
    /// Forward these to the caller.
    Events(Vec<StreamEvent>),
    /// The stream said it is complete.
    Done,
}

/// Puts a stream back together while forwarding its pieces.
#[derive(Default)]
pub struct Accumulator {
    pub response: Response,
    /// OpenAI sends tool calls by `index`; Anthropic by content block index.
    slots: Vec<(usize, usize)>,
    anthropic_input: Option<u64>,
    /// Whether the provider said why it stopped (a stream cut before that
    /// is incomplete).
    pub finished: bool,
}

impl Accumulator {
    fn slot(&mut self, key: usize) -> usize {
        if let Some(&(_, i)) = self.slots.iter().find(|(k, _)| *k == key) {
            return i;
        }
        let i = self.response.tool_calls.len();
        self.response.tool_calls.push(ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
        self.slots.push((key, i));
        i
    }

    /// What the text and tool-call arguments received so far take, in
    /// bytes.
    pub fn size(&self) -> usize {
        self.response.text.len()
            + self
                .response
                .tool_calls
                .iter()
                .map(|c| c.arguments.len() + c.name.len() + c.id.len())
                .sum::<usize>()
    }

    /// One OpenAI stream event. Events that carry no chunk (empty data,
    /// as keep-alives from some proxies; names other than `message` and
    /// `error`) are skipped.
    pub fn openai(&mut self, event: &str, data: &str) -> Result<Step, String> {
        if !matches!(event, "" | "message" | "error") || data.trim().is_empty() {
            return Ok(Step::Events(Vec::new()));
        }
        if data.trim() == "[DONE]" {
            return Ok(Step::Done);
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("malformed stream chunk: {e}"))?;
        if let Some(e) = v.get("error") {
            return Err(format!(
                "the provider sent an error: {}",
                e["message"].as_str().unwrap_or(&e.to_string())
            ));
        }
        let mut events = Vec::new();
        if let Some(model) = v["model"].as_str() {
            self.response.response_model = Some(model.to_owned());
        }
        if let Some(usage) = openai_usage(&v["usage"]) {
            self.response.usage = Some(usage);
        }
        for choice in v["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str()
                && !text.is_empty()
            {
                self.response.text.push_str(text);
                events.push(StreamEvent::Text(text.to_owned()));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let key = call["index"].as_u64().unwrap_or(0) as usize;
                let i = self.slot(key);
                let id = call["id"].as_str().map(str::to_owned);
                let name = call["function"]["name"].as_str().map(str::to_owned);
                let args = call["function"]["arguments"].as_str().unwrap_or("");
                let slot = &mut self.response.tool_calls[i];
                if let Some(id) = &id {
                    slot.id.clone_from(id);
                }
                if let Some(name) = &name {
                    slot.name.push_str(name);
                }
                slot.arguments.push_str(args);
                events.push(StreamEvent::ToolCall {
                    index: i,
                    id,
                    name,
                    arguments: args.to_owned(),
                });
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.response.finish_reason = Some(FinishReason::from_openai(reason));
                self.finished = true;
            }
        }
        Ok(Step::Events(events))
    }

    /// One Anthropic stream event. Events that carry nothing (empty data,
    /// names this version does not know) are skipped.
    pub fn anthropic(&mut self, event: &str, data: &str) -> Result<Step, String> {
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
                self.response.response_model = m["model"].as_str().map(str::to_owned);
                self.anthropic_input = m["usage"]["input_tokens"].as_u64();
                self.response.usage = anthropic_usage(&m["usage"], None);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let i = self.slot(index);
                        let id = block["id"].as_str().unwrap_or("").to_owned();
                        let name = block["name"].as_str().unwrap_or("").to_owned();
                        self.response.tool_calls[i].id.clone_from(&id);
                        self.response.tool_calls[i].name.clone_from(&name);
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
                            self.response.text.push_str(text);
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
                            self.response.text.push_str(text);
                            events.push(StreamEvent::Text(text.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or("");
                        let i = self.slot(index);
                        self.response.tool_calls[i].arguments.push_str(part);
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
                    self.response.finish_reason = Some(FinishReason::from_anthropic(reason));
                    self.finished = true;
                }
                if let Some(u) = anthropic_usage(&v["usage"], self.anthropic_input) {
                    self.response.usage = Some(u);
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

    /// Anthropic sends a tool call's input as JSON pieces; an empty input
    /// is `{}`.
    pub fn finish(&mut self) {
        for call in &mut self.response.tool_calls {
            if call.arguments.is_empty() {
                call.arguments.push_str("{}");
            }
        }
    }
}
