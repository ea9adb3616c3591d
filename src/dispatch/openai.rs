//! OpenAI's chat completions (`POST {base}/chat/completions`), spoken by
//! OpenAI and every compatible server (Azure, DashScope, vLLM, Ollama,
//! ...): the request body, the answer, the stream.
//!
//! Source: OpenAI's API reference for chat completions and its streaming
//! guide; the official SDKs' recorded fixtures under `tests/fixtures`.

use serde_json::{Map, Value, json};

use super::response::{FinishReason, Response, StreamEvent, ToolCall, Usage};
use super::wire::{Accumulator, Answer, Step, Wire};
use crate::content::{Content, Part, Source};
use crate::message::{Message, Role};

/// Parameters only Anthropic understands: not sent to OpenAI.
pub(crate) const ANTHROPIC_ONLY: &[&str] = &["top_k", "stop_sequences", "thinking", "metadata"];

/// OpenAI's wire format.
pub(crate) struct OpenAi;

impl Wire for OpenAi {
    fn endpoint(&self, base_url: &str) -> String {
        format!("{}/chat/completions", base_url.trim_end_matches('/'))
    }

    fn auth(&self, key: &str) -> (&'static str, String) {
        ("authorization", format!("Bearer {key}"))
    }

    fn body(
        &self,
        model: &str,
        messages: &[Message],
        params: &Map<String, Value>,
        stream: bool,
    ) -> Result<Value, String> {
        body(model, messages, params, stream)
    }

    /// `response_format: {"type": "json_schema", "json_schema": {"name",
    /// "description"?, "schema", "strict": true}}` with the schema in
    /// strict mode's form ([`crate::strict::rewrite`]); `tools` as
    /// functions with `strict: true` and their parameters in that form;
    /// `tool_choice` as `auto`, `none`, `required` or
    /// `{"type": "function", "function": {"name"}}`. Source: OpenAI's API
    /// reference (chat completions) and its Structured Outputs guide.
    fn answer(&self, body: &mut Map<String, Value>, answer: &Answer<'_>) {
        // Routes requests that share the template's static prefix to the
        // same cache (OpenAI's prompt caching guide); a key the template's
        // parameters set wins.
        if let Some(key) = answer.prompt_cache_key
            && !body.contains_key("prompt_cache_key")
        {
            body.insert("prompt_cache_key".into(), key.into());
        }
        use super::config::StructuredOutput as Mode;
        use crate::strict::{Strict, inexpressible, rewrite};
        // A schema with a free-form part has no strict form: it goes as
        // written, without strict mode.
        let strict_form = |schema: &Value| match inexpressible(schema, Strict::OpenAi) {
            None => (rewrite(schema, Strict::OpenAi), true),
            Some(_) => (schema.clone(), false),
        };
        let function = |name: &str, description: Option<&Value>, parameters: &Value| {
            let mut f = Map::new();
            f.insert("name".into(), name.into());
            if let Some(d) = description {
                f.insert("description".into(), d.clone());
            }
            let (parameters, strict) = strict_form(parameters);
            f.insert("parameters".into(), parameters);
            f.insert("strict".into(), strict.into());
            json!({"type": "function", "function": f})
        };
        let mut tools: Vec<Value> = answer
            .tools
            .iter()
            .map(|t| {
                let d = t.description.clone().map(Value::from);
                function(&t.name, d.as_ref(), &t.parameters)
            })
            .collect();
        let mut forced = None;
        if let Some(schema) = answer.output {
            match answer.mode {
                Mode::JsonSchema => {
                    let mut spec = Map::new();
                    spec.insert("name".into(), super::wire::schema_name(schema).into());
                    if let Some(d) = schema.get("description") {
                        spec.insert("description".into(), d.clone());
                    }
                    let (sent, strict) = strict_form(schema);
                    spec.insert("schema".into(), sent);
                    spec.insert("strict".into(), strict.into());
                    body.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": spec}),
                    );
                }
                Mode::JsonObject => {
                    body.insert("response_format".into(), json!({"type": "json_object"}));
                    instruct(body, &super::wire::schema_instruction(schema));
                }
                Mode::Tool => {
                    let name = super::wire::output_tool_name(schema, answer.tools);
                    tools.push(function(&name, schema.get("description"), schema));
                    forced = Some(json!({"type": "function", "function": {"name": name}}));
                }
                Mode::None => instruct(body, &super::wire::schema_instruction(schema)),
            }
        }
        if !tools.is_empty() {
            body.insert("tools".into(), tools.into());
        }
        if let Some(forced) = forced {
            body.insert("tool_choice".into(), forced);
        } else if let Some(choice) = answer.tool_choice {
            use crate::tool::ToolChoice;
            let c = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
            };
            body.insert("tool_choice".into(), c);
        }
    }

    fn response(&self, answer: &Value) -> Result<Response, String> {
        response(answer)
    }

    /// Events that carry no chunk (empty data, as keep-alives from some
    /// proxies; names other than `message` and `error`) are skipped.
    fn step(&self, acc: &mut Accumulator, event: &str, data: &str) -> Result<Step, String> {
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
            acc.response.response_model = Some(model.to_owned());
        }
        if let Some(id) = v["id"].as_str() {
            acc.response.response_id = Some(id.to_owned());
        }
        if let Some(usage) = usage(&v["usage"]) {
            acc.response.usage = Some(usage);
        }
        for choice in v["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str()
                && !text.is_empty()
            {
                acc.response.text.push_str(text);
                events.push(StreamEvent::Text(text.to_owned()));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let key = call["index"].as_u64().unwrap_or(0) as usize;
                let i = acc.slot(key);
                let id = call["id"].as_str().map(str::to_owned);
                let name = call["function"]["name"].as_str().map(str::to_owned);
                let args = call["function"]["arguments"].as_str().unwrap_or("");
                acc.edit_call(i, |slot| {
                    if let Some(id) = &id {
                        slot.id.clone_from(id);
                    }
                    if let Some(name) = &name {
                        slot.name.push_str(name);
                    }
                    slot.arguments.push_str(args);
                });
                events.push(StreamEvent::ToolCall {
                    index: i,
                    id,
                    name,
                    arguments: args.to_owned(),
                });
            }
            if let Some(piece) = delta["refusal"].as_str() {
                acc.response
                    .refusal
                    .get_or_insert_with(String::new)
                    .push_str(piece);
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                acc.response.finish_reason = Some(if acc.response.refusal.is_some() {
                    FinishReason::ContentFilter
                } else {
                    FinishReason::from_openai(reason)
                });
                acc.finished = true;
            }
        }
        Ok(Step::Events(events))
    }
}

/// Adds `text` to the first system message, or opens the conversation
/// with one.
fn instruct(body: &mut Map<String, Value>, text: &str) {
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return;
    };
    match messages
        .iter_mut()
        .find(|m| m["role"] == "system" && m["content"].is_string())
    {
        Some(system) => {
            let content = format!("{}\n\n{text}", system["content"].as_str().unwrap_or(""));
            system["content"] = content.into();
        }
        None => messages.insert(0, json!({"role": "system", "content": text})),
    }
}

fn body(
    model: &str,
    messages: &[Message],
    params: &Map<String, Value>,
    stream: bool,
) -> Result<Value, String> {
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    let messages = (0..)
        .zip(messages)
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    body.insert("messages".into(), messages.into());
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
    Ok(Value::Object(body))
}

/// Message `i` (0-based) on the wire; its parts as OpenAI's content parts
/// (`text`, `image_url` with `detail`, `input_audio`, `file` with
/// `file_data`). Only user messages take media (OpenAI's system, developer,
/// assistant and tool messages take text parts only), and a file goes
/// inline (chat completions fetch no file URLs).
fn message(i: usize, m: &Message) -> Result<Value, String> {
    let mut o = Map::new();
    o.insert("role".into(), m.role.as_str().into());
    let calls = m.tool_calls.as_ref().filter(|c| !c.is_empty());
    // An assistant turn that only calls tools has `content: null`.
    if calls.is_some() && m.content.is_empty() {
        o.insert("content".into(), Value::Null);
    } else {
        match &m.content {
            Content::Text(t) => {
                o.insert("content".into(), t.as_str().into());
            }
            Content::Parts(parts) => {
                if m.role != Role::User {
                    super::wire::text_only(i, m, "OpenAI", "user")?;
                }
                let parts = (1..)
                    .zip(parts)
                    .map(|(j, p)| part(i, m.role, j, p))
                    .collect::<Result<Vec<_>, _>>()?;
                o.insert("content".into(), parts.into());
            }
        }
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
    Ok(Value::Object(o))
}

fn part(i: usize, role: Role, j: usize, p: &Part) -> Result<Value, String> {
    Ok(match p {
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Image(m) => {
            let mut image = Map::new();
            image.insert("url".into(), m.to_url().into_owned().into());
            if let Some(d) = m.detail {
                image.insert("detail".into(), d.as_str().into());
            }
            json!({"type": "image_url", "image_url": image})
        }
        Part::Audio(m) => match &m.source {
            Source::Data { media_type, data } => json!({
                "type": "input_audio",
                "input_audio": {
                    "data": data.as_str(),
                    "format": if media_type == "audio/mpeg" { "mp3" } else { "wav" },
                },
            }),
            Source::Url(_) => {
                return Err(format!(
                    "message {} ({role}) part {j}: OpenAI takes audio inline, not from a URL",
                    i + 1
                ));
            }
        },
        Part::File(m) => {
            if matches!(m.source, Source::Url(_)) {
                return Err(format!(
                    "message {} ({role}) part {j}: OpenAI's chat completions take a file inline \
                     (a data URL), not a URL to fetch",
                    i + 1
                ));
            }
            if m.media_type() != Some("application/pdf") {
                return Err(format!(
                    "message {} ({role}) part {j}: OpenAI's chat completions take PDF files, not \
                     {}; send the text as a text part",
                    i + 1,
                    m.media_type().unwrap_or("this type")
                ));
            }
            let mut file = Map::new();
            // OpenAI asks for a name with inline data.
            file.insert(
                "filename".into(),
                m.filename.as_deref().unwrap_or("document.pdf").into(),
            );
            file.insert("file_data".into(), m.to_url().into_owned().into());
            json!({"type": "file", "file": file})
        }
    })
}

fn response(v: &Value) -> Result<Response, String> {
    let choice = v["choices"]
        .get(0)
        .ok_or("the response has no `choices[0]`")?;
    let message = &choice["message"];
    let mut r = Response {
        text: message["content"].as_str().unwrap_or("").to_owned(),
        finish_reason: choice["finish_reason"]
            .as_str()
            .map(FinishReason::from_openai),
        usage: usage(&v["usage"]),
        response_model: v["model"].as_str().map(str::to_owned),
        response_id: v["id"].as_str().map(str::to_owned),
        ..Response::default()
    };
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        r.tool_calls.push(ToolCall::new(
            call["id"].as_str().unwrap_or("").to_owned(),
            call["function"]["name"].as_str().unwrap_or("").to_owned(),
            call["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        ));
    }
    if message.is_null() {
        return Err("the response has no `choices[0].message`".into());
    }
    // Structured outputs: a refusal comes in its own field, with finish
    // reason `stop` (OpenAI's Structured Outputs guide, "Refusals").
    if let Some(why) = message["refusal"].as_str().filter(|w| !w.is_empty()) {
        r.refusal = Some(why.to_owned());
        r.finish_reason = Some(FinishReason::ContentFilter);
    }
    Ok(r)
}

/// OpenAI's `usage`: `prompt_tokens` (cached ones included, and counted
/// again in `prompt_tokens_details.cached_tokens`), `completion_tokens`
/// (reasoning included, and counted again in
/// `completion_tokens_details.reasoning_tokens`).
fn usage(u: &Value) -> Option<Usage> {
    let mut usage = Usage::new(
        u["prompt_tokens"].as_u64()?,
        u["completion_tokens"].as_u64().unwrap_or(0),
    );
    usage.cache_read_input_tokens = u["prompt_tokens_details"]["cached_tokens"].as_u64();
    usage.reasoning_tokens = u["completion_tokens_details"]["reasoning_tokens"].as_u64();
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Role;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_body_carries_messages_and_openai_parameters_only() {
        let mut call = Message::new(Role::Assistant, "");
        call.tool_calls = Some(vec![json!({"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": "{}"}})]);
        let mut result = Message::new(Role::Tool, "42");
        result.tool_call_id = Some("c1".into());
        let mut named = Message::new(Role::User, "hi");
        named.name = Some("ann".into());
        let body = OpenAi
            .body(
                "gpt-4o",
                &[Message::new(Role::System, "be brief"), named, call, result],
                &params(json!({"temperature": 0, "top_k": 3, "stop_sequences": ["X"]})),
                false,
            )
            .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi", "name": "ann"},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                        "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "content": "42", "tool_call_id": "c1"},
                ],
                "temperature": 0,
                "stop": ["X"],
            })
        );
        let streamed = OpenAi.body("m", &[], &Map::new(), true).unwrap();
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn answers_and_stream_chunks_read_back() {
        let r = OpenAi
            .response(&json!({"model": "gpt-4o-2024", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "ok", "tool_calls": [{"id": "c",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 2}}))
            .unwrap();
        assert_eq!(r.text, "ok");
        assert_eq!(r.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            r.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((9, 2))
        );
        assert!(OpenAi.response(&json!({"choices": []})).is_err());

        let mut acc = Accumulator::default();
        let chunks = [
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            "",
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo","tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
        ];
        for c in chunks {
            assert!(matches!(OpenAi.step(&mut acc, "", c), Ok(Step::Events(_))));
        }
        assert!(matches!(
            OpenAi.step(&mut acc, "", "[DONE]"),
            Ok(Step::Done)
        ));
        assert_eq!(acc.response.text, "Hello");
        assert_eq!(acc.response.tool_calls[0].arguments, "{\"a\":1}");
        assert!(acc.finished);
        assert!(OpenAi.step(&mut acc, "", "{not json").is_err());
        let e = OpenAi
            .step(&mut acc, "error", r#"{"error":{"message":"boom"}}"#)
            .unwrap_err();
        assert!(e.contains("boom"), "{e}");
    }
}
