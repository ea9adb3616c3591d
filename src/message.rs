//! Role-tagged chat messages.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::content::Content;

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

/// One chat message: a role and its content (text, or parts with images,
/// files and audio: see [`Content`]), plus the optional fields chat APIs
/// use for named participants and tool calls.
///
/// Serializes as `{"role": "...", "content": "..."}` (`content` an array of
/// parts when the message has media), with `name`, `tool_call_id` and
/// `tool_calls` only when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The content: text, or parts. A history message whose `content` is
    /// `null` (an assistant turn that only calls tools) has empty text
    /// here. [`Message::text`] gives the text of either.
    #[schemars(with = "serde_json::Value")]
    pub content: Content,
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
    /// A message with a role and content (text, or [`Content::Parts`]) and
    /// nothing else.
    pub fn new(role: Role, content: impl Into<Content>) -> Message {
        Message {
            role,
            content: content.into(),
            name: None,
            tool_call_id: None,
            tool_calls: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<Content>) -> Message {
        Message::new(Role::System, content)
    }

    /// A user message: text, or parts (`vec![Part::text("What is this?"),
    /// Part::Image(Media::url("https://..."))]`).
    pub fn user(content: impl Into<Content>) -> Message {
        Message::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<Content>) -> Message {
        Message::new(Role::Assistant, content)
    }

    /// A tool result answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<Content>) -> Message {
        let mut m = Message::new(Role::Tool, content);
        m.tool_call_id = Some(tool_call_id.into());
        m
    }

    /// The text of the message: all of it, or its text parts joined by
    /// line breaks (see [`Content::text`]).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        self.content.text()
    }
}

/// The JSON Schema of one history message, as a `messages` parameter
/// accepts it.
pub(crate) fn history_item_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["system", "user", "assistant", "tool", "developer"]},
            "content": {"type": ["string", "null", "array"], "items": {"type": "object"}},
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}}
        },
        "additionalProperties": false,
        "if": {"properties": {"role": {"const": "tool"}}},
        "then": {"required": ["tool_call_id"]}
    })
}
