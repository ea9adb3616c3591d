//! The normalised answer of any provider, and stream events.

use serde::{Deserialize, Serialize};

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// A natural end, or a stop sequence (OpenAI `stop`; Anthropic
    /// `end_turn`, `stop_sequence`).
    Stop,
    /// The output token limit (OpenAI `length`; Anthropic `max_tokens`).
    Length,
    /// The model wants tools called (OpenAI `tool_calls`/`function_call`;
    /// Anthropic `tool_use`).
    ToolCalls,
    /// Filtered or refused (OpenAI `content_filter`; Anthropic `refusal`).
    ContentFilter,
    /// Anything else, as the provider said it.
    Other(String),
}

impl FinishReason {
    /// The reason as the semantic conventions write it (`stop`, `length`,
    /// `tool_calls`, `content_filter`), or the provider's own word.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other(other) => other,
        }
    }

    pub(crate) fn from_openai(s: &str) -> FinishReason {
        match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_owned()),
        }
    }

    pub(crate) fn from_anthropic(s: &str) -> FinishReason {
        match s {
            "end_turn" | "stop_sequence" => FinishReason::Stop,
            // The answer stopped for want of room either way.
            "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
            "tool_use" => FinishReason::ToolCalls,
            "refusal" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_owned()),
        }
    }
}

/// A tool call the model asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCall {
    /// The provider's id for it (answer with a `tool` message carrying it).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as the JSON text the model wrote.
    pub arguments: String,
    /// The arguments parsed, when they are JSON (set once the answer is
    /// checked against the template's tools).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Why the call is not valid, when it is not: an unknown tool, or
    /// arguments that are not JSON or break the tool's parameters schema
    /// (with the JSON pointer and the rule). `None` for a valid call, or
    /// when the template declares no tools (nothing to check against).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl ToolCall {
    /// A call as the provider gave it, unchecked.
    pub(crate) fn new(id: String, name: String, arguments: String) -> ToolCall {
        ToolCall {
            id,
            name,
            arguments,
            ..ToolCall::default()
        }
    }
}

/// Token usage as the provider reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Prompt tokens (OpenAI `prompt_tokens`, Anthropic `input_tokens`).
    /// OpenAI's count includes the cached ones; Anthropic's does not (its
    /// cache reads and writes are counted apart).
    pub input_tokens: u64,
    /// Reply tokens (OpenAI `completion_tokens`, Anthropic
    /// `output_tokens`), reasoning included.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache (OpenAI
    /// `prompt_tokens_details.cached_tokens`, Anthropic
    /// `cache_read_input_tokens`), when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// Prompt tokens written to the prompt cache (Anthropic
    /// `cache_creation_input_tokens`), when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Reply tokens spent reasoning (OpenAI
    /// `completion_tokens_details.reasoning_tokens`), when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    /// `input_tokens` in and `output_tokens` out, nothing else reported.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    /// The sum of two answers' usage (an answer and its repairs).
    pub(crate) fn plus(self, other: Usage) -> Usage {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        Usage {
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            cache_read_input_tokens: add(
                self.cache_read_input_tokens,
                other.cache_read_input_tokens,
            ),
            cache_creation_input_tokens: add(
                self.cache_creation_input_tokens,
                other.cache_creation_input_tokens,
            ),
            reasoning_tokens: add(self.reasoning_tokens, other.reasoning_tokens),
        }
    }
}

/// A provider's answer, the same shape whoever answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Response {
    /// The reply text (all text parts, concatenated).
    pub text: String,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped, when it said.
    pub finish_reason: Option<FinishReason>,
    /// Token usage, when reported.
    pub usage: Option<Usage>,
    /// The provider that answered (`openai`, `anthropic`, a name from
    /// `providers.yaml`).
    pub provider: String,
    /// The model that was asked (`gpt-4o-mini`): after a fallback, the
    /// fallback's.
    pub model: String,
    /// The model id the provider reported (`gpt-4o-mini-2024-07-18`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_model: Option<String>,
    /// The provider's id of the answer (OpenAI `chatcmpl-…`, Anthropic
    /// `msg_…`), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// Whether a fallback answered because the primary model failed.
    pub fallback: bool,
    /// HTTP attempts made for this answer, over all models tried.
    pub attempts: u32,
    /// Whether the answer came from the response cache (this process's,
    /// or, with shared state in Redis, any replica's).
    pub cached: bool,
    /// The models (`provider:model`) skipped because their circuit was
    /// open (see [`CircuitBreaker`](super::CircuitBreaker)): a fallback
    /// answered without waiting for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_circuits: Vec<String>,
    /// The answer parsed as JSON and valid against the template's output
    /// schema (`output:`); absent when the template declares none, or when
    /// the model called tools instead of answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// What the model said when it refused (OpenAI's `message.refusal`);
    /// the finish reason is then `content_filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// What the answer cost, repairs included, in the currency of the
    /// prices given for its model in `providers.yaml` (`prices:`, per
    /// million tokens); absent when none were given or no usage was
    /// reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// How many times the answer was asked for again because it broke the
    /// output schema (`output_retries`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repairs: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One event of [`Client::stream`](super::Client::stream).
// `Done` is much larger than the other events but comes once per stream;
// boxing it would make every caller's `StreamEvent::Done(response)` a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// More reply text.
    Text(String),
    /// A piece of a tool call: `id` and `name` come with the first piece of
    /// call `index`, argument text in pieces after it.
    ToolCall {
        /// The call's position among this reply's calls.
        index: usize,
        /// The call's id (first piece only).
        id: Option<String>,
        /// The tool's name (first piece only).
        name: Option<String>,
        /// More argument JSON text.
        arguments: String,
    },
    /// The structured answer parsed so far (the template declares an
    /// `output:` schema): the JSON value the text received up to now
    /// makes, with unfinished strings, arrays and objects closed (a
    /// value that is not finished may still change). Not validated: the
    /// validated value comes in [`Done`](StreamEvent::Done)'s
    /// [`Response::output`]. Sent after a text piece when the value
    /// changed.
    Output(serde_json::Value),
    /// The end: everything received, put together, with finish reason and
    /// usage. Always the last event of a successful stream.
    Done(Response),
}

#[cfg(test)]
mod tests {
    use super::FinishReason::{self, *};

    /// Each provider's documented stop reasons (OpenAI's chat completion
    /// `finish_reason`, Anthropic's message `stop_reason`) map onto the
    /// shared vocabulary; anything new is kept as it was said.
    #[test]
    fn both_vocabularies_of_stop_reasons_map_onto_one() {
        for (said, meant) in [
            ("stop", Stop),
            ("length", Length),
            ("tool_calls", ToolCalls),
            ("function_call", ToolCalls),
            ("content_filter", ContentFilter),
        ] {
            assert_eq!(FinishReason::from_openai(said), meant, "{said}");
        }
        for (said, meant) in [
            ("end_turn", Stop),
            ("stop_sequence", Stop),
            ("max_tokens", Length),
            ("tool_use", ToolCalls),
            ("refusal", ContentFilter),
        ] {
            assert_eq!(FinishReason::from_anthropic(said), meant, "{said}");
        }
        assert_eq!(
            FinishReason::from_anthropic("pause_turn"),
            Other("pause_turn".into())
        );
        // A name from one vocabulary means nothing in the other.
        assert_eq!(
            FinishReason::from_openai("end_turn"),
            Other("end_turn".into())
        );
        assert_eq!(
            serde_json::to_value(ToolCalls).unwrap(),
            serde_json::json!("tool_calls")
        );
    }
}
