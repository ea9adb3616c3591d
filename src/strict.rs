//! What a provider's strict mode (structured outputs, strict tool calls)
//! enforces of a JSON Schema, so that lint can say which keywords the model
//! may break: promptbook still validates every answer against the whole
//! schema, but a keyword the provider does not enforce is one the answer
//! can fail.
//!
//! The lists follow the providers' documentation as of 2026-12: OpenAI's
//! "Structured Outputs: supported schemas" (types, `anyOf`, `enum`,
//! `const`, `$ref`/`$defs`; strings `pattern` and nine `format`s; numbers
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `multipleOf`; arrays `minItems`, `maxItems`) and Anthropic's
//! "Structured outputs: JSON Schema limitations" (no numeric or string
//! length constraints, `minItems` of 0 or 1 only, no recursive schemas;
//! `allOf`, `default` and ten `format`s supported).

use serde_json::Value;

/// A provider's strict-mode dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strict {
    OpenAi,
    Anthropic,
}

impl Strict {
    /// The dialect of a template's model: `anthropic` by its provider, or
    /// by a `claude` model name without one; OpenAI's otherwise (the
    /// OpenAI-compatible servers follow it).
    pub(crate) fn of(provider: Option<&str>, model: Option<&str>) -> Strict {
        match (provider, model) {
            (Some("anthropic"), _) => Strict::Anthropic,
            (None, Some(m)) if m.starts_with("claude") => Strict::Anthropic,
            _ => Strict::OpenAi,
        }
    }

    /// The provider's name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Strict::OpenAi => "OpenAI",
            Strict::Anthropic => "Anthropic",
        }
    }

    fn keyword_enforced(self, key: &str) -> bool {
        const BOTH: &[&str] = &[
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "enum",
            "const",
            "anyOf",
            "$ref",
            "$defs",
            "definitions",
            "description",
            "title",
            "format",
            "minItems",
            "$schema",
            "$comment",
            "examples",
        ];
        const OPENAI: &[&str] = &[
            "pattern",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
            "maxItems",
        ];
        const ANTHROPIC: &[&str] = &["allOf", "default", "pattern"];
        BOTH.contains(&key)
            || match self {
                Strict::OpenAi => OPENAI.contains(&key),
                Strict::Anthropic => ANTHROPIC.contains(&key),
            }
    }

    fn format_enforced(self, format: &str) -> bool {
        const OPENAI: &[&str] = &[
            "date-time",
            "time",
            "date",
            "duration",
            "email",
            "hostname",
            "ipv4",
            "ipv6",
            "uuid",
        ];
        match self {
            Strict::OpenAi => OPENAI.contains(&format),
            Strict::Anthropic => OPENAI.contains(&format) || format == "uri",
        }
    }
}

/// Every keyword of `schema` (and the schemas inside it) that `strict`
/// does not enforce: `(JSON pointer of the schema, what)`, in document
/// order.
pub(crate) fn unenforced(schema: &Value, strict: Strict) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, String::new(), strict, &mut out, 0);
    out
}

fn walk(schema: &Value, at: String, strict: Strict, out: &mut Vec<(String, String)>, depth: usize) {
    let Some(map) = schema.as_object() else {
        return;
    };
    if depth > 64 {
        return;
    }
    for (key, value) in map {
        if !strict.keyword_enforced(key) {
            out.push((at.clone(), format!("`{key}`")));
            continue;
        }
        match key.as_str() {
            "format" => {
                if let Some(f) = value.as_str().filter(|f| !strict.format_enforced(f)) {
                    out.push((at.clone(), format!("`format: {f}`")));
                }
            }
            "minItems" if strict == Strict::Anthropic => {
                if value.as_u64().is_some_and(|n| n > 1) {
                    out.push((at.clone(), format!("`minItems: {value}` (only 0 or 1)")));
                }
            }
            "additionalProperties" if value != &Value::Bool(false) => {
                out.push((
                    at.clone(),
                    "`additionalProperties` other than `false`".to_owned(),
                ));
            }
            "$ref" if strict == Strict::Anthropic && value.as_str() == Some("#") => {
                out.push((at.clone(), "a recursive `$ref`".to_owned()));
            }
            _ => {}
        }
    }
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    for key in ["properties", "$defs", "definitions"] {
        if let Some(children) = map.get(key).and_then(Value::as_object) {
            for (name, child) in children {
                walk(
                    child,
                    format!("{at}/{key}/{}", escape(name)),
                    strict,
                    out,
                    depth + 1,
                );
            }
        }
    }
    if let Some(items) = map.get("items") {
        walk(items, format!("{at}/items"), strict, out, depth + 1);
    }
    for key in ["anyOf", "allOf"] {
        if let Some(list) = map.get(key).and_then(Value::as_array) {
            for (i, child) in list.iter().enumerate() {
                walk(child, format!("{at}/{key}/{i}"), strict, out, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_provider_names_what_it_would_not_enforce() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "age": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string", "format": "uri"}, "minItems": 2, "uniqueItems": true},
            },
            "required": ["name"],
            "additionalProperties": false,
        });
        let openai = unenforced(&schema, Strict::OpenAi);
        assert_eq!(
            openai,
            [
                ("/properties/name".to_owned(), "`maxLength`".to_owned()),
                ("/properties/tags".to_owned(), "`uniqueItems`".to_owned()),
                (
                    "/properties/tags/items".to_owned(),
                    "`format: uri`".to_owned()
                ),
            ]
        );
        let anthropic = unenforced(&schema, Strict::Anthropic);
        assert_eq!(
            anthropic,
            [
                ("/properties/name".to_owned(), "`maxLength`".to_owned()),
                ("/properties/age".to_owned(), "`minimum`".to_owned()),
                (
                    "/properties/tags".to_owned(),
                    "`minItems: 2` (only 0 or 1)".to_owned()
                ),
                ("/properties/tags".to_owned(), "`uniqueItems`".to_owned()),
            ]
        );
        assert_eq!(
            unenforced(
                &json!({"type": "object", "additionalProperties": true}),
                Strict::OpenAi
            )
            .len(),
            1
        );
        assert_eq!(
            Strict::of(None, Some("claude-sonnet-4-5")),
            Strict::Anthropic
        );
        assert_eq!(Strict::of(Some("local"), Some("claude-x")), Strict::OpenAi);
    }
}
