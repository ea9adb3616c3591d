//! The JSON Schema keywords a template's schemas may use, so that a typo
//! (`minLenght: 1`) is an error instead of a constraint that silently
//! disappears (validators ignore keywords they do not know).
//!
//! The vocabulary is JSON Schema draft 2020-12's (core, applicator,
//! validation, format, content, meta-data; json-schema.org/draft/2020-12),
//! which is the draft inputs are validated with, plus `type: messages`
//! (promptbook's chat-history type). Extension keywords are allowed under
//! `x-` names. Draft-07 keywords that 2020-12 dropped (`dependencies`,
//! `additionalItems`, `definitions`) are reported with their replacement.

use serde_json::Value;

/// Every keyword of draft 2020-12.
const KEYWORDS: &[&str] = &[
    // Core.
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    // Applicator.
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    // Validation.
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    // Format, content.
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    // Meta-data.
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
];

/// Draft-07 keywords 2020-12 replaced, with what replaced them.
const REPLACED: &[(&str, &str)] = &[
    ("definitions", "$defs"),
    ("dependencies", "dependentRequired or dependentSchemas"),
    ("additionalItems", "items (with prefixItems)"),
];

/// Keywords whose value is one schema.
const SCHEMA: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "items",
    "contains",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
];

/// Keywords whose value is a map of schemas.
const SCHEMA_MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "dependentSchemas",
];

/// Keywords whose value is a list of schemas.
const SCHEMA_LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// The JSON Schema type names.
const TYPES: &[&str] = &[
    "string", "number", "integer", "boolean", "array", "object", "null",
];

/// Every problem with the keywords of `schema` and the schemas inside it:
/// `(JSON pointer, message)`. `messages_type` allows `type: messages` at
/// the top (a parameter's fragment).
pub(crate) fn problems(schema: &Value, messages_type: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, String::new(), messages_type, false, &mut out, 0);
    out
}

/// [`problems`] of an input schema or a parameter: `type: image`, `file`
/// and `audio` are types there, at any depth.
pub(crate) fn input_problems(schema: &Value, messages_type: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, String::new(), messages_type, true, &mut out, 0);
    out
}

/// The media types of inputs.
const MEDIA_TYPES: &[&str] = &["image", "file", "audio"];

fn walk(
    schema: &Value,
    at: String,
    messages_type: bool,
    media: bool,
    out: &mut Vec<(String, String)>,
    depth: usize,
) {
    // Deep schemas are the validator's to refuse; nothing here recurses
    // without bound.
    if depth > 64 {
        return;
    }
    let Some(map) = schema.as_object() else {
        return;
    };
    for (key, value) in map {
        let here = format!("{at}/{}", crate::input::escape_pointer(key));
        if key.starts_with("x-") {
            continue;
        }
        if let Some((_, instead)) = REPLACED.iter().find(|(k, _)| k == key) {
            out.push((
                here,
                format!(
                    "`{key}` is a draft-07 keyword that JSON Schema 2020-12 replaced: use {instead}"
                ),
            ));
            continue;
        }
        // Ours, for inputs: a value that may come before a static cache
        // breakpoint (see `crate::load::static_prefix`).
        if media && key == "stable" {
            // A parameter's own (the top of its fragment, or a property of
            // a whole input schema): what the static-prefix proof reads.
            let top = at.is_empty()
                || at
                    .strip_prefix("/properties/")
                    .is_some_and(|name| !name.contains('/'));
            if !top {
                out.push((
                    here,
                    "`stable` goes on a parameter itself, not inside its schema".to_owned(),
                ));
            } else if !value.is_boolean() {
                out.push((here, "`stable` is true or false".to_owned()));
            }
            continue;
        }
        if !KEYWORDS.contains(&key.as_str()) {
            let hint = closest(key)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            out.push((
                here,
                format!(
                    "`{key}` is not a JSON Schema keyword{hint}; it would be ignored, not enforced \
                     (name an extension `x-{key}`)"
                ),
            ));
            continue;
        }
        match key.as_str() {
            "type" => check_type(value, &here, messages_type, media, out),
            // Media types are found through `properties` and `items` only
            // (where rendering looks for them): not in `anyOf` and the like.
            k if SCHEMA.contains(&k) => {
                walk(value, here, false, media && k == "items", out, depth + 1)
            }
            k if SCHEMA_MAP.contains(&k) => {
                for (name, sub) in value.as_object().into_iter().flatten() {
                    // Properties of a whole input schema may be histories.
                    let messages = messages_type || (k == "properties" && at.is_empty());
                    walk(
                        sub,
                        format!("{here}/{}", crate::input::escape_pointer(name)),
                        messages,
                        media && k == "properties",
                        out,
                        depth + 1,
                    );
                }
            }
            k if SCHEMA_LIST.contains(&k) => {
                for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                    walk(sub, format!("{here}/{i}"), false, false, out, depth + 1);
                }
            }
            _ => {}
        }
    }
}

fn check_type(
    value: &Value,
    at: &str,
    messages_type: bool,
    media: bool,
    out: &mut Vec<(String, String)>,
) {
    let names: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for name in names {
        let ok = name.as_str().is_some_and(|t| {
            TYPES.contains(&t)
                || (messages_type && t == "messages")
                || (media
                    && MEDIA_TYPES.contains(&t)
                    && match value {
                        // Media, or nothing: `[image, "null"]`.
                        Value::Array(ts) => ts.len() == 2 && ts.contains(&Value::from("null")),
                        _ => true,
                    })
        });
        if !ok {
            let shown = name
                .as_str()
                .map_or_else(|| name.to_string(), str::to_owned);
            let mut valid = TYPES.join(", ");
            match (messages_type, media) {
                (true, true) => valid.push_str(
                    "; and for inputs `messages` (a chat history) and `image`, `file`, `audio` (media)",
                ),
                (true, false) => valid.push_str(" (or `messages` for a chat history)"),
                (false, true) => valid.push_str("; and for inputs `image`, `file`, `audio` (media)"),
                (false, false) => {}
            }
            let hint = name
                .as_str()
                .and_then(|t| {
                    TYPES
                        .iter()
                        .chain(messages_type.then_some(&"messages"))
                        .chain(MEDIA_TYPES.iter().filter(|_| media))
                        .find(|k| {
                            t.len() >= 2 && k.starts_with(t) || strsim::levenshtein(t, k) <= 2
                        })
                })
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            out.push((
                at.to_owned(),
                format!("`type: {shown}` is not a JSON Schema type{hint}; the types are {valid}"),
            ));
        }
    }
}

/// The keyword closest to `word`, when close enough to suggest.
fn closest(word: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .map(|k| {
            (
                strsim::levenshtein(&word.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(schema: Value, messages_type: bool) -> Vec<String> {
        problems(&schema, messages_type)
            .into_iter()
            .map(|(at, m)| format!("{at}: {m}"))
            .collect()
    }

    #[test]
    fn typos_are_found_with_a_suggestion_wherever_they_are() {
        let found = messages(
            json!({"type": "object", "minLenght": 1, "properties": {"a": {"type": "array",
                "items": {"maxLenght": 3, "x-ui": "wide"}}}, "anyOf": [{"requierd": ["a"]}]}),
            false,
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("/minLenght: "), "{found:?}");
        assert!(found[0].contains("did you mean `minLength`"), "{found:?}");
        assert!(
            found[1].starts_with("/properties/a/items/maxLenght"),
            "{found:?}"
        );
        assert!(found[2].contains("did you mean `required`"), "{found:?}");
    }

    #[test]
    fn data_is_not_checked_and_extensions_pass() {
        assert!(
            messages(
                json!({"type": "object", "default": {"minLenght": 1}, "enum": [{"x": 1}],
                    "examples": [{"nope": 2}], "x-anything": {"whatever": 1}, "$comment": "ok"}),
                false,
            )
            .is_empty()
        );
    }

    #[test]
    fn types_are_checked_and_listed() {
        let found = messages(json!({"type": "str"}), true);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("did you mean `string`"), "{found:?}");
        assert!(found[0].contains("string, number, integer"), "{found:?}");
        assert!(messages(json!({"type": "messages"}), true).is_empty());
        assert_eq!(messages(json!({"type": "messages"}), false).len(), 1);
        assert!(messages(json!({"type": ["string", "null"]}), false).is_empty());
        assert!(
            messages(
                json!({"type": "object", "properties": {"h": {"type": "messages"}}}),
                false
            )
            .is_empty()
        );
        let found = messages(json!({"definitions": {}}), false);
        assert!(found[0].contains("use $defs"), "{found:?}");
    }
}
