//! Role-tagged chat messages.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The role of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the application.
    System,
    /// A turn by the end user.
    User,
    /// A turn by the model.
    Assistant,
    /// The result of a tool call.
    Tool,
    /// Instructions from the application developer: OpenAI's name for a
    /// system message to its reasoning models, and a Prompty role. Sent to
    /// OpenAI as is, to Anthropic as system text.
    Developer,
}

impl Role {
    /// All roles, in the order they are documented.
    pub const ALL: [Role; 5] = [
        Role::System,
        Role::User,
        Role::Assistant,
        Role::Tool,
        Role::Developer,
    ];

    /// The lowercase name used in files and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Developer => "developer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Ok(match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "developer" => Role::Developer,
            _ => {
                return Err(format!(
                    "unknown role `{s}` (expected system, user, assistant, tool or developer)"
                ));
            }
        })
    }
}

/// One chat message: a role and its text, plus the optional fields chat APIs
/// use for named participants and tool calls.
///
/// Serializes as `{"role": "...", "content": "..."}`, with `name`,
/// `tool_call_id` and `tool_calls` only when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The text. A history message whose `content` is `null` (an assistant
    /// turn that only calls tools) has an empty string here.
    #[serde(deserialize_with = "null_as_empty")]
    pub content: String,
    /// Optional participant name.
    // The schemas say what serialising writes: an absent field, never
    // `null` (so `Message` fits a `messages` parameter exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub name: Option<String>,
    /// For `tool` messages: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub tool_call_id: Option<String>,
    /// For `assistant` messages: the tool calls it makes, as the provider
    /// sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
}

impl Message {
    /// A message with a role and content and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            name: None,
            tool_call_id: None,
            tool_calls: None,
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// The JSON Schema of one history message, as a `messages` parameter
/// accepts it.
pub(crate) fn history_item_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["system", "user", "assistant", "tool", "developer"]},
            "content": {"type": ["string", "null"]},
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}}
        },
        "additionalProperties": false,
        "if": {"properties": {"role": {"const": "tool"}}},
        "then": {"required": ["tool_call_id"]}
    })
}
