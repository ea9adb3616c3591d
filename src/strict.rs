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
            "minItems" if strict == Strict::Anthropic && value.as_u64().is_some_and(|n| n > 1) => {
                out.push((at.clone(), format!("`minItems: {value}` (only 0 or 1)")));
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
    for (pointer, child) in subschemas(map, &at) {
        walk(child, pointer, strict, out, depth + 1);
    }
}

/// The schemas inside a schema's keywords (`map`) that the walks here go
/// into, each with its JSON pointer below `at`: each of `properties`,
/// `$defs` and `definitions`, `items`, each of `anyOf` and `allOf`.
fn subschemas<'a>(map: &'a serde_json::Map<String, Value>, at: &str) -> Vec<(String, &'a Value)> {
    let mut out: Vec<(String, &Value)> = Vec::new();
    for key in ["properties", "$defs", "definitions"] {
        if let Some(named) = map.get(key).and_then(Value::as_object) {
            out.extend(
                named
                    .iter()
                    .map(|(n, c)| (format!("{at}/{key}/{}", crate::input::escape_pointer(n)), c)),
            );
        }
    }
    if let Some(items) = map.get("items") {
        out.push((format!("{at}/items"), items));
    }
    for key in ["anyOf", "allOf"] {
        if let Some(list) = map.get(key).and_then(Value::as_array) {
            out.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, c)| (format!("{at}/{key}/{i}"), c)),
            );
        }
    }
    out
}

/// Why `schema` cannot be sent in `strict`'s strict mode at all, if it
/// cannot: `(JSON pointer, what)`. Strict mode closes every object and
/// needs every value typed, so a free-form part has no strict form: an
/// object without `properties`, or whose other properties must match a
/// schema (a map); an array without `items`; a schema that says nothing of
/// its type (`{}`); and, for OpenAI, a root that is not an object. Such a
/// schema is sent without strict mode (OpenAI) or as an instruction
/// (Anthropic), and the answer is still validated on our side.
pub(crate) fn inexpressible(schema: &Value, strict: Strict) -> Option<(String, String)> {
    if strict == Strict::OpenAi && !is_object(schema) {
        return Some((String::new(), "a root that is not an object".to_owned()));
    }
    inexpressible_in(schema, String::new(), 0)
}

/// Whether `schema` is for objects (its type, or its `properties`).
fn is_object(schema: &Value) -> bool {
    schema.as_object().is_some_and(object_map)
}

/// [`is_object`] of a schema's keywords.
fn object_map(map: &serde_json::Map<String, Value>) -> bool {
    match map.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        _ => map.contains_key("properties"),
    }
}

fn inexpressible_in(schema: &Value, at: String, depth: usize) -> Option<(String, String)> {
    let map = schema.as_object()?;
    if depth > 64 {
        return None;
    }
    let says_type = ["type", "enum", "const", "anyOf", "allOf", "$ref"]
        .iter()
        .any(|k| map.contains_key(*k));
    if !says_type {
        return Some((at, "a value of any type (`{}`)".to_owned()));
    }
    if is_object(schema) {
        if !map.contains_key("properties") {
            return Some((at, "an object without `properties`".to_owned()));
        }
        if map
            .get("additionalProperties")
            .is_some_and(Value::is_object)
        {
            return Some((
                at,
                "a map (`additionalProperties` with a schema)".to_owned(),
            ));
        }
    }
    let arrays = match map.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "array"),
        _ => false,
    };
    if arrays && !map.get("items").is_some_and(Value::is_object) {
        return Some((at, "an array without `items`".to_owned()));
    }
    let children = subschemas(map, &at);
    children
        .into_iter()
        .find_map(|(pointer, child)| inexpressible_in(child, pointer, depth + 1))
}

/// `schema` in the form `strict`'s strict mode requires, for sending:
/// every object closed (`additionalProperties: false`); for OpenAI, every
/// property required, a property that was optional made nullable (the
/// model answers `null` for it, and [`drop_added_nulls`] takes that out
/// again); and every keyword the provider does not enforce (see
/// [`unenforced`]) taken out of the schema and written into its
/// `description` instead, so that the model still reads it and the
/// provider does not reject the schema. The original schema is what
/// answers are validated against.
#[cfg_attr(not(feature = "dispatch"), allow(dead_code))] // used when sending
pub(crate) fn rewrite(schema: &Value, strict: Strict) -> Value {
    let mut out = schema.clone();
    rewrite_in(&mut out, strict, 0);
    out
}

#[cfg_attr(not(feature = "dispatch"), allow(dead_code))] // used when sending
fn rewrite_in(schema: &mut Value, strict: Strict, depth: usize) {
    if depth > 64 {
        return;
    }
    // What the schema requires as written (its optional properties become
    // nullable below).
    let required: Vec<String> = crate::schema::required(schema)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    // Keywords the provider would reject or ignore: into the description.
    let mut moved = serde_json::Map::new();
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let value = &map[&key];
        let unsupported = !strict.keyword_enforced(&key)
            || (key == "format" && value.as_str().is_some_and(|f| !strict.format_enforced(f)))
            || (key == "minItems"
                && strict == Strict::Anthropic
                && value.as_u64().is_some_and(|n| n > 1))
            || (key == "additionalProperties"
                && value != &Value::Bool(false)
                && value != &Value::Bool(true));
        if unsupported && let Some(v) = map.remove(&key) {
            moved.insert(key, v);
        }
    }
    if !moved.is_empty() {
        let note = format!("(also: {})", Value::Object(moved));
        let described = match map.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d} {note}"),
            None => note,
        };
        map.insert("description".into(), described.into());
    }
    if object_map(map) {
        map.insert("additionalProperties".into(), Value::Bool(false));
        if strict == Strict::OpenAi {
            let names: Vec<String> = map
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            if let Some(props) = map.get_mut("properties").and_then(Value::as_object_mut) {
                for (name, prop) in props.iter_mut() {
                    if !required.contains(name) {
                        make_nullable(prop);
                    }
                }
            }
            map.insert(
                "required".into(),
                Value::Array(names.into_iter().map(Value::String).collect()),
            );
        }
    }
    for key in ["properties", "$defs", "definitions"] {
        if let Some(children) = map.get_mut(key).and_then(Value::as_object_mut) {
            for child in children.values_mut() {
                rewrite_in(child, strict, depth + 1);
            }
        }
    }
    if let Some(items) = map.get_mut("items") {
        rewrite_in(items, strict, depth + 1);
    }
    for key in ["anyOf", "allOf"] {
        if let Some(list) = map.get_mut(key).and_then(Value::as_array_mut) {
            for child in list {
                rewrite_in(child, strict, depth + 1);
            }
        }
    }
}

/// `schema` also accepting `null`: a `null` type added, `null` added to an
/// `enum`, or (for a schema without a plain type) `anyOf` with `null`.
#[cfg_attr(not(feature = "dispatch"), allow(dead_code))] // used when sending
fn make_nullable(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if let Some(values) = map.get_mut("enum").and_then(Value::as_array_mut)
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    let has_enum = map.contains_key("enum");
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            if t != "null" {
                let t = std::mem::take(t);
                map.insert("type".into(), serde_json::json!([t, "null"]));
            }
        }
        Some(Value::Array(types)) => {
            if !types.contains(&Value::String("null".into())) {
                types.push("null".into());
            }
        }
        _ if has_enum => {}
        _ => {
            let inner = Value::Object(std::mem::take(map));
            map.insert("anyOf".into(), serde_json::json!([inner, {"type": "null"}]));
        }
    }
}

/// Whether a schema sent for `strict` went in [`rewrite`]'s form with its
/// optional properties made nullable: OpenAI's strict mode only (Anthropic
/// keeps optional properties optional), and only for a schema that has a
/// strict form (see [`inexpressible`]). Only then may a `null` stand for
/// "absent" ([`drop_added_nulls`]); anywhere else it is the model's answer,
/// validated as it is.
#[cfg_attr(not(feature = "dispatch"), allow(dead_code))] // used when sending
pub(crate) fn nulls_added(schema: &Value, strict: Strict) -> bool {
    strict == Strict::OpenAi && inexpressible(schema, strict).is_none()
}

/// Whether a recorded request body sent a schema with nulls added: an
/// OpenAI `response_format` in strict mode (`tool: None`), or the strict
/// function `tool` of its `tools`. What a recorded answer is checked by.
pub(crate) fn nulls_added_in(body: &Value, tool: Option<&str>) -> bool {
    match tool {
        None => body["response_format"]["json_schema"]["strict"] == true,
        Some(name) => body["tools"].as_array().is_some_and(|tools| {
            tools
                .iter()
                .any(|t| t["function"]["name"] == name && t["function"]["strict"] == true)
        }),
    }
}

/// Takes out of `value` the `null`s the strict rewrite let the model give
/// for properties that were optional (absent, in the original), where the
/// original `schema` does not accept `null` there. Local `$ref`s are
/// followed inside `schema`. Only for an answer to a schema sent with
/// nulls added ([`nulls_added`]).
pub(crate) fn drop_added_nulls(schema: &Value, value: &mut Value) {
    drop_in(schema, schema, value, 0);
}

#[cfg_attr(not(feature = "dispatch"), allow(dead_code))] // used when sending
fn drop_in(root: &Value, schema: &Value, value: &mut Value, depth: usize) {
    if depth > 64 {
        return;
    }
    let schema = match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
    {
        Some(target) => target,
        None => schema,
    };
    // Every `allOf` branch applies; the first `anyOf`/`oneOf` branch the
    // value fits once its added nulls are gone is the one it meant.
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for branch in all {
            drop_in(root, branch, value, depth + 1);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            for branch in branches {
                let mut candidate = value.clone();
                drop_in(root, branch, &mut candidate, depth + 1);
                if fits(root, branch, &candidate) {
                    *value = candidate;
                    break;
                }
            }
        }
    }
    match value {
        Value::Object(object) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            let required = crate::schema::required(schema);
            object.retain(|name, v| {
                !(v.is_null()
                    && !required.contains(&name.as_str())
                    && props.get(name).is_some_and(|p| !accepts_null(p)))
            });
            for (name, v) in object.iter_mut() {
                if let Some(p) = props.get(name) {
                    drop_in(root, p, v, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for v in items {
                    drop_in(root, item_schema, v, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Whether `value` satisfies `branch`, a schema inside `root` (whose
/// `$defs` its references may name).
fn fits(root: &Value, branch: &Value, value: &Value) -> bool {
    let mut schema = branch.clone();
    if let (Some(map), Some(root)) = (schema.as_object_mut(), root.as_object()) {
        for key in ["$defs", "definitions"] {
            if let Some(defs) = root.get(key) {
                map.entry(key).or_insert_with(|| defs.clone());
            }
        }
    }
    crate::schema::compile(&schema).is_ok_and(|v| v.is_valid(value))
}

/// Whether a schema plainly accepts `null` (its type, enum or const says
/// so, or it says nothing of type).
fn accepts_null(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.contains(&Value::String("null".into())),
        _ => {
            if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                return values.contains(&Value::Null);
            }
            if let Some(c) = schema.get("const") {
                return c.is_null();
            }
            !(schema.get("anyOf").is_some()
                || schema.get("oneOf").is_some()
                || schema.get("$ref").is_some())
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

    #[test]
    fn the_openai_rewrite_requires_everything_and_maps_nulls_back() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40, "description": "Who"},
                "kind": {"enum": ["a", "b"]},
                "note": {"type": "string"},
                "lines": {"type": "array", "items": {"type": "object",
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                    "required": ["sku"]}},
            },
            "required": ["name", "lines"],
        });
        let strict = rewrite(&schema, Strict::OpenAi);
        assert_eq!(strict["required"], json!(["name", "kind", "note", "lines"]));
        assert_eq!(strict["additionalProperties"], false);
        assert_eq!(
            strict["properties"]["note"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(
            strict["properties"]["kind"]["enum"],
            json!(["a", "b", null])
        );
        assert_eq!(strict["properties"]["name"]["type"], "string");
        assert!(strict["properties"]["name"].get("maxLength").is_none());
        assert_eq!(
            strict["properties"]["name"]["description"],
            "Who (also: {\"maxLength\":40})"
        );
        let line = &strict["properties"]["lines"]["items"];
        assert_eq!(line["required"], json!(["sku", "qty"]));
        assert_eq!(
            line["properties"]["qty"]["type"],
            json!(["integer", "null"])
        );
        assert!(unenforced(&strict, Strict::OpenAi).is_empty());

        // The model's answer to the strict form, mapped back, satisfies
        // the original schema.
        let mut answer = json!({"name": "x", "kind": null, "note": null,
            "lines": [{"sku": "s", "qty": null}]});
        drop_added_nulls(&schema, &mut answer);
        assert_eq!(answer, json!({"name": "x", "lines": [{"sku": "s"}]}));
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(validator.is_valid(&answer));
        // A null the original accepts stays.
        let nullable = json!({"type": "object", "properties": {"a": {"type": ["string", "null"]}}});
        let mut v = json!({"a": null});
        drop_added_nulls(&nullable, &mut v);
        assert_eq!(v, json!({"a": null}));
    }

    #[test]
    fn free_form_parts_have_no_strict_form() {
        let typed = |v| json!({"type": "object", "properties": {"x": v}, "required": ["x"]});
        for (part, what) in [
            (json!({"type": "object"}), "an object without `properties`"),
            (json!({"type": "array"}), "an array without `items`"),
            (json!({}), "a value of any type"),
            (
                json!({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}),
                "a map",
            ),
        ] {
            let found = inexpressible(&typed(part), Strict::Anthropic).unwrap();
            assert_eq!(found.0, "/properties/x");
            assert!(found.1.starts_with(what), "{found:?}");
        }
        let list = json!({"type": "array", "items": {"type": "string"}});
        assert!(inexpressible(&list, Strict::OpenAi).is_some());
        assert!(inexpressible(&list, Strict::Anthropic).is_none());
        assert!(
            inexpressible(&typed(json!({"type": ["string", "null"]})), Strict::OpenAi).is_none()
        );
        // An optional object made nullable is still closed.
        let optional = json!({"type": "object", "properties": {"m": {"type": "object", "properties": {"a": {"type": "string"}}}}});
        let strict = rewrite(&optional, Strict::OpenAi);
        assert_eq!(strict["properties"]["m"]["additionalProperties"], false);
    }

    #[test]
    fn the_anthropic_rewrite_closes_objects_and_keeps_optional_properties() {
        let schema = json!({"type": "object", "properties": {
            "age": {"type": "integer", "minimum": 0}, "tags": {"type": "array", "minItems": 3}},
            "required": ["age"]});
        let strict = rewrite(&schema, Strict::Anthropic);
        assert_eq!(strict["required"], json!(["age"]));
        assert_eq!(strict["additionalProperties"], false);
        assert!(strict["properties"]["age"].get("minimum").is_none());
        assert!(strict["properties"]["tags"].get("minItems").is_none());
        assert!(unenforced(&strict, Strict::Anthropic).is_empty());
    }
}
