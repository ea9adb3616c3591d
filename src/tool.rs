//! Tools a template declares (`tools:`, `tool_choice:`): the functions the
//! model may call, each with a JSON Schema of its arguments, in one shape
//! that both wire forms are made from.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool the model may call: a function with a JSON Schema of its
/// arguments. Serialises as `{"name", "description"?, "parameters"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tool {
    /// The name the model calls it by ([`is_tool_name`]).
    pub name: String,
    /// What it does and when to call it (the model reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of its arguments: an object schema
    /// (`{"type": "object", "properties": {}}` when the tool takes none).
    pub parameters: Value,
}

impl Tool {
    /// A tool with no description.
    pub fn new(name: impl Into<String>, parameters: Value) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            parameters,
        }
    }

    /// This tool with a description.
    pub fn with_description(mut self, description: impl Into<String>) -> Tool {
        self.description = Some(description.into());
        self
    }
}

impl Tool {
    /// A call's arguments (the JSON text the model wrote) checked against
    /// this tool's parameters, as sending and recorded-answer tests both
    /// check them: the parsed value (with the `null`s taken out that the
    /// strict form let the model give for optional arguments, when the
    /// tool was sent in that form: `nulls_added`); or why the call is not
    /// valid (not JSON, or the pointer and rule broken).
    pub(crate) fn check_arguments(
        &self,
        arguments: &str,
        nulls_added: bool,
    ) -> Result<Value, String> {
        let mut args: Value = serde_json::from_str(arguments)
            .map_err(|e| format!("the arguments are not JSON: {e}"))?;
        if nulls_added {
            crate::strict::drop_added_nulls(&self.parameters, &mut args);
        }
        match crate::schema::first_violation(&self.parameters, &args) {
            None => Ok(args),
            Some((pointer, rule, message)) => {
                let at = if pointer.is_empty() {
                    String::new()
                } else {
                    format!(" at `{pointer}`")
                };
                Err(format!(
                    "the arguments break `{}`'s parameters{at} ({rule}): {message}",
                    self.name
                ))
            }
        }
    }
}

/// Whether and which tool the model must call. Serialises as `"auto"`,
/// `"none"`, `"required"` or `{"name": TOOL}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides (the providers' default when tools are given).
    Auto,
    /// The model may not call a tool.
    None,
    /// The model must call some tool (OpenAI `required`, Anthropic `any`).
    Required,
    /// The model must call this tool.
    Tool(String),
}

impl ToolChoice {
    /// Reads `auto`, `none`, `required`, a tool's name, or `{name: TOOL}`.
    /// `tools` are the declared tools' names: a name must be one of them.
    pub(crate) fn parse(value: &Value, tools: &[&str]) -> Result<ToolChoice, String> {
        let name = match value {
            Value::String(s) => match s.as_str() {
                "auto" => return Ok(ToolChoice::Auto),
                "none" => return Ok(ToolChoice::None),
                "required" => return Ok(ToolChoice::Required),
                other => other,
            },
            Value::Object(map) if map.len() == 1 && map.contains_key("name") => map["name"]
                .as_str()
                .ok_or("`tool_choice: {name: ...}` names a tool by a string")?,
            _ => {
                return Err(
                    "`tool_choice` is `auto`, `none`, `required` or a declared tool's name".into(),
                );
            }
        };
        if tools.contains(&name) {
            Ok(ToolChoice::Tool(name.to_owned()))
        } else if tools.is_empty() {
            Err(format!(
                "`tool_choice: {name}` names a tool, but the template declares no `tools:`"
            ))
        } else {
            Err(format!(
                "`tool_choice: {name}` is not `auto`, `none`, `required` or a declared tool ({})",
                tools.join(", ")
            ))
        }
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Tool(name) => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("name", name)?;
                map.end()
            }
        }
    }
}

/// Whether `name` can name a tool for every provider: 1 to 64 of `a-z`,
/// `A-Z`, `0-9`, `_` and `-` (OpenAI's function-name rule; Anthropic's
/// `^[a-zA-Z0-9_-]{1,64}$`), and not one of `tool_choice`'s words.
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !matches!(name, "auto" | "none" | "required")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_names_follow_both_providers_rules() {
        for ok in ["get_weather", "a", "Look-Up-2", &"x".repeat(64)] {
            assert!(is_tool_name(ok), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "dot.name",
            "é",
            &"x".repeat(65),
            "auto",
            "none",
        ] {
            assert!(!is_tool_name(bad), "{bad}");
        }
    }

    #[test]
    fn tool_choice_reads_words_and_declared_names_only() {
        let tools = ["lookup", "refund"];
        assert_eq!(
            ToolChoice::parse(&json!("auto"), &tools),
            Ok(ToolChoice::Auto)
        );
        assert_eq!(
            ToolChoice::parse(&json!("required"), &tools),
            Ok(ToolChoice::Required)
        );
        assert_eq!(
            ToolChoice::parse(&json!("refund"), &tools),
            Ok(ToolChoice::Tool("refund".into()))
        );
        assert_eq!(
            ToolChoice::parse(&json!({"name": "lookup"}), &tools),
            Ok(ToolChoice::Tool("lookup".into()))
        );
        let e = ToolChoice::parse(&json!("lokup"), &tools).unwrap_err();
        assert!(e.contains("lookup, refund"), "{e}");
        assert!(ToolChoice::parse(&json!("x"), &[]).is_err());
        assert!(ToolChoice::parse(&json!(3), &tools).is_err());
        assert_eq!(
            serde_json::to_value(ToolChoice::Tool("x".into())).unwrap(),
            json!({"name": "x"})
        );
        assert_eq!(
            serde_json::to_value(ToolChoice::None).unwrap(),
            json!("none")
        );
    }
}
