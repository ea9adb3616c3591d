//! Checking an answer against what the template declared: the output
//! parsed and validated against the template's own `output:` schema (not
//! the strict rewrite that was sent), and each tool call's arguments
//! against its tool's parameters.

use serde_json::Value;

use super::config::{ProviderKind, StructuredOutput};
use super::error::DispatchError;
use super::response::{FinishReason, Response};
use crate::render::Rendered;

/// Checks `response` against `rendered`'s declarations: sets
/// [`Response::output`] and each call's [`input`](super::ToolCall::input)
/// and [`problem`](super::ToolCall::problem).
///
/// # Errors
/// [`ErrorKind::InvalidOutput`](super::ErrorKind::InvalidOutput) when the
/// template declares an output schema and the answer was cut off by
/// `max_tokens`, is not JSON, or breaks the schema (the first error, by
/// JSON pointer and rule). An answer that calls tools instead has no output
/// to check.
pub(crate) fn check(
    rendered: &Rendered,
    mut response: Response,
    sent: Sent,
) -> Result<Response, DispatchError> {
    let mode = sent.mode;
    // In tool mode the answer is the arguments of the output tool's call.
    if let (StructuredOutput::Tool, Some(schema)) = (mode, rendered.output_schema.as_deref()) {
        let name = super::wire::output_tool_name(schema, &rendered.tools);
        if let Some(i) = response.tool_calls.iter().position(|c| c.name == name) {
            let call = response.tool_calls.remove(i);
            response.text = call.arguments;
        }
    }
    check_tool_calls(rendered, &mut response, sent);
    let Some(schema) = rendered.output_schema.as_deref() else {
        return Ok(response);
    };
    // A turn that calls tools is not the answer yet, whatever text comes
    // with it ("Let me look that up."), when the template declares tools;
    // when it declares none, a tool call is no answer at all.
    if !response.tool_calls.is_empty() {
        if !rendered.tools.is_empty() {
            return Ok(response);
        }
        return Err(called_instead(
            response,
            ", and the template declares no tools",
        ));
    }
    if response.finish_reason == Some(FinishReason::ContentFilter) {
        // OpenAI says why in `refusal`; Anthropic in the text.
        let said = response
            .refusal
            .as_deref()
            .or(Some(response.text.trim()).filter(|t| !t.is_empty()));
        let message = match said {
            Some(why) => format!("the model refused: {why}"),
            None => {
                "the model refused, or its answer was filtered (finish reason `content_filter`)"
                    .to_owned()
            }
        };
        return Err(DispatchError::invalid_output(
            response, "", "refusal", message,
        ));
    }
    if response.finish_reason == Some(FinishReason::Length) {
        return Err(DispatchError::invalid_output(
            response,
            "",
            "length",
            "the answer was cut off by `max_tokens` (finish reason `length`) before it was complete; raise `max_tokens`",
        ));
    }
    let mut value: Value = match serde_json::from_str(response.text.trim()) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("the answer is not JSON: {e}");
            return Err(DispatchError::invalid_output(response, "", "json", message));
        }
    };
    // A null the strict form let the model give for an optional property
    // means "absent" (only where the schema went in that form).
    if sent.nulls_added(schema) {
        crate::strict::drop_added_nulls(schema, &mut value);
    }
    if let Some((pointer, rule, message)) = crate::schema::first_violation(schema, &value) {
        return Err(DispatchError::invalid_output(
            response, pointer, rule, message,
        ));
    }
    response.output = Some(value);
    Ok(response)
}

/// How an answer's request went: the provider's wire and how it took the
/// output schema. Decides where a `null` may stand for "absent".
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub kind: ProviderKind,
    pub mode: StructuredOutput,
}

impl Sent {
    pub(crate) fn of(config: &super::config::ProviderConfig) -> Sent {
        Sent {
            kind: config.kind,
            mode: config.structured_output,
        }
    }

    /// Whether `schema` (the output's, in json_schema or tool mode, or a
    /// tool's parameters) went with its optional properties nullable.
    fn nulls_added(self, schema: &Value) -> bool {
        let strict = match self.kind {
            ProviderKind::Openai => crate::strict::Strict::OpenAi,
            ProviderKind::Anthropic => crate::strict::Strict::Anthropic,
        };
        matches!(
            self.mode,
            StructuredOutput::JsonSchema | StructuredOutput::Tool
        ) && crate::strict::nulls_added(schema, strict)
    }
}

/// The [`InvalidOutput`](super::ErrorKind::InvalidOutput) error (rule
/// `tool_calls`) of an answer that called tools instead of answering;
/// `why` ends its message.
pub(crate) fn called_instead(response: Response, why: &str) -> DispatchError {
    let names: Vec<&str> = response
        .tool_calls
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let message = format!(
        "the model called {} instead of answering{why}",
        names.join(", ")
    );
    DispatchError::invalid_output(response, "", "tool_calls", message)
}

/// Marks each tool call that names no declared tool, or whose arguments
/// are not JSON or break the tool's parameters schema; parses the
/// arguments of every call. Nothing is checked when the template declares
/// nothing about its answer (tools written by hand in `model.parameters`);
/// a template that declares an output schema but no tools gets every call
/// marked.
fn check_tool_calls(rendered: &Rendered, response: &mut Response, sent: Sent) {
    for call in &mut response.tool_calls {
        let input = serde_json::from_str::<Value>(&call.arguments);
        call.input = input.as_ref().ok().cloned();
        if rendered.tools.is_empty() && rendered.output_schema.is_none() {
            continue;
        }
        let Some(tool) = rendered.tools.iter().find(|t| t.name == call.name) else {
            let known: Vec<&str> = rendered.tools.iter().map(|t| t.name.as_str()).collect();
            call.problem = Some(if known.is_empty() {
                format!(
                    "the model called `{}`, but the template declares no tools",
                    call.name
                )
            } else {
                format!(
                    "the model called `{}`, which is not a declared tool ({})",
                    call.name,
                    known.join(", ")
                )
            });
            continue;
        };
        match tool.check_arguments(&call.arguments, sent.nulls_added(&tool.parameters)) {
            Ok(args) => call.input = Some(args),
            Err(problem) => call.problem = Some(problem),
        }
    }
}
