//! The semver contract of a template: what a minor or patch release may
//! not change, as `promptbook check --semver` enforces it.
//!
//! Callers send inputs and read outputs, so the two schemas change in
//! opposite directions:
//!
//! - **Inputs** may only get more lenient. A release breaks callers when it
//!   makes a parameter required that was optional or absent, narrows a
//!   type (`number` to `integer`, a type dropped from a list), drops an
//!   `enum` value or adds an `enum`/`const`, raises a lower bound
//!   (`minimum`, `exclusiveMinimum`, `minLength`, `minItems`,
//!   `minProperties`) or lowers an upper one, adds or changes a `pattern`,
//!   `format` or `multipleOf`, closes an object (`additionalProperties:
//!   false`), or removes a parameter from a closed object (callers passing
//!   it now fail).
//! - **Outputs** may only promise more. A release breaks callers when it
//!   removes a property, makes a required property optional, widens a
//!   property's type (a `null` callers did not expect), or adds an `enum`
//!   value (a case callers do not handle).
//!
//! The comparison walks `properties`, `additionalProperties` and `items`
//! (32 levels deep) and follows local `$ref`s (`#/$defs/x`); `uniqueItems`
//! and boolean schemas (`items: false`) are compared by meaning too. Every
//! other assertion keyword (`pattern`, `format`, `multipleOf`, `anyOf`,
//! `oneOf`, `allOf`, `not`, `if`/`then`/`else`, `contains`, `prefixItems`,
//! `propertyNames`, `patternProperties`, `dependentRequired`,
//! `unevaluatedProperties`, a remote `$ref`, and any keyword it does not
//! know) is compared as written: adding or changing one in an input, or
//! dropping or changing one in an output, is reported as a change the
//! check cannot prove compatible. Annotations (`title`, `description`,
//! `default`, `examples`, `x-...`) never break.
//! The rules follow Semantic Versioning 2.0.0, items 7 and 8; below 1.0.0
//! the leftmost non-zero part counts as major, as Cargo treats it.

use std::borrow::Cow;

use semver::Version;
use serde::Serialize;
use serde_json::Value;

use crate::schema::{required, types_of as types};

/// One incompatible change between two schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Breaking {
    /// Where: a JSON pointer into the inputs or the output (`/ticket`,
    /// `/items/0/sku` is written `/items/*/sku`).
    pub pointer: String,
    /// What changed, in words.
    pub change: String,
}

/// Whether going from `old` to `new` may break callers under semver: a
/// different major version (or, below 1.0.0, a different minor; below
/// 0.1.0, a different patch).
pub fn is_major_bump(old: &Version, new: &Version) -> bool {
    if old.major != new.major {
        return true;
    }
    // Below 1.0.0 the leftmost non-zero part is the major one (Cargo's
    // reading of semver item 4): 0.2 to 0.3, and 0.0.1 to 0.0.2.
    old.major == 0 && (old.minor != new.minor || (old.minor == 0 && old.patch != new.patch))
}

/// The ways `new` accepts less than `old`, for an input schema.
pub fn stricter_inputs(old: &Value, new: &Value) -> Vec<Breaking> {
    let mut walk = Walk {
        roots: (old, new),
        out: Vec::new(),
        seen: Default::default(),
    };
    walk.inputs(old, new, "", 0);
    walk.out
}

/// The ways `new` promises less than `old`, for an output schema.
pub fn weaker_output(old: &Value, new: &Value) -> Vec<Breaking> {
    let mut walk = Walk {
        roots: (old, new),
        out: Vec::new(),
        seen: Default::default(),
    };
    walk.output(old, new, "", 0);
    walk.out
}

/// How deep the walk follows `properties`, `items` and local `$ref`s: a
/// recursive schema (a tree whose nodes `$ref` the root) ends here.
const MAX_DEPTH: usize = 32;

/// Whether every type in `a` is allowed by `b`.
fn types_within(a: &[String], b: &[String]) -> bool {
    a.iter()
        .all(|t| b.contains(t) || (t == "integer" && b.iter().any(|u| u == "number")))
}

fn properties(schema: &Value) -> Option<&serde_json::Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

fn closed(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

fn enum_values(schema: &Value) -> Option<Vec<&Value>> {
    match (schema.get("enum"), schema.get("const")) {
        (Some(Value::Array(values)), _) => Some(values.iter().collect()),
        (_, Some(c)) => Some(vec![c]),
        _ => None,
    }
}

/// Bounds that only a larger value makes stricter, and those that only a
/// smaller value does.
const LOWER: &[&str] = &[
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
    "minContains",
];
const UPPER: &[&str] = &[
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "maxContains",
];
/// Keywords that describe and never reject (JSON Schema 2020-12's
/// annotations and identifiers; `x-` extensions too): changing them
/// breaks nobody.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    // Ours: whether a value may come before a static cache breakpoint.
    "stable",
    "$anchor",
    "$dynamicAnchor",
    "$defs",
    "definitions",
    "$vocabulary",
];
/// Keywords the walk compares by meaning. Every other keyword (`pattern`,
/// `format`, `multipleOf`, `anyOf`, `if`/`then`, `contains`,
/// `prefixItems`, `propertyNames`, `patternProperties`,
/// `dependentRequired`, `unevaluatedProperties`, a remote `$ref`, and any
/// keyword this list does not know) is compared as written: a change is
/// reported as one the check cannot prove compatible.
const BY_MEANING: &[&str] = &[
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "uniqueItems",
];

fn compared_as_written(key: &str) -> bool {
    !(BY_MEANING.contains(&key)
        || LOWER.contains(&key)
        || UPPER.contains(&key)
        || ANNOTATIONS.contains(&key)
        || key.starts_with("x-"))
}

/// `schema` with its local `$ref` (`#/$defs/x`, `#`) followed inside
/// `root`: the target's keywords, with the schema's own beside the
/// `$ref` taking precedence. A `$ref` that is not local or does not
/// resolve stays as written.
fn view<'a>(schema: &'a Value, root: &Value) -> Cow<'a, Value> {
    let mut current = Cow::Borrowed(schema);
    for _ in 0..MAX_DEPTH {
        let Some(target) = current
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        else {
            break;
        };
        let mut merged = match target {
            Value::Object(map) => map.clone(),
            Value::Bool(true) => serde_json::Map::new(),
            other => return Cow::Owned(other.clone()),
        };
        if let Value::Object(own) = current.as_ref() {
            for (k, v) in own {
                if k != "$ref" {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        current = Cow::Owned(Value::Object(merged));
    }
    current
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "absent".to_owned(), Value::to_string)
}

/// Whether `v` is a schema (an object or a boolean), not a draft-07 tuple
/// of schemas.
fn is_schema(v: &Value) -> bool {
    v.is_object() || v.is_boolean()
}

/// One comparison: the two root schemas (for local `$ref`s) and what it
/// found so far.
struct Walk<'a> {
    roots: (&'a Value, &'a Value),
    out: Vec<Breaking>,
    /// The pairs of schemas holding a `$ref` compared so far: comparing a
    /// pair again (a recursive schema, reached at a deeper pointer) would
    /// only repeat what it found.
    seen: std::collections::HashSet<(String, String)>,
}

impl Walk<'_> {
    /// Whether this pair was compared already (only pairs with a `$ref`
    /// are remembered: the only way back to a schema already seen).
    fn again(&mut self, old: &Value, new: &Value) -> bool {
        if old.get("$ref").is_none() && new.get("$ref").is_none() {
            return false;
        }
        !self.seen.insert((old.to_string(), new.to_string()))
    }

    fn push(&mut self, pointer: &str, change: String) {
        self.out.push(Breaking {
            pointer: if pointer.is_empty() {
                "/".to_owned()
            } else {
                pointer.to_owned()
            },
            change,
        });
    }

    fn inputs(&mut self, old: &Value, new: &Value, at: &str, depth: usize) {
        if depth > MAX_DEPTH || self.again(old, new) {
            return;
        }
        let (old, new) = (view(old, self.roots.0), view(new, self.roots.1));
        let (old, new) = (old.as_ref(), new.as_ref());
        // Boolean schemas: `false` accepts nothing, `true` everything.
        if old == &Value::Bool(false) {
            return;
        }
        if new == &Value::Bool(false) {
            self.push(at, "accepts nothing any more (`false`)".into());
            return;
        }
        let empty = Value::Object(serde_json::Map::new());
        let old = if old.is_object() { old } else { &empty };
        let new = if new.is_object() { new } else { &empty };
        if let (Some(a), Some(b)) = (types(old), types(new)) {
            if !types_within(&a, &b) {
                self.push(
                    at,
                    format!("type narrowed from {} to {}", a.join(" | "), b.join(" | ")),
                );
            }
        } else if types(old).is_none()
            && let Some(b) = types(new)
        {
            self.push(at, format!("type restricted to {}", b.join(" | ")));
        }
        match (enum_values(old), enum_values(new)) {
            (Some(a), Some(b)) => {
                let dropped: Vec<String> = a
                    .iter()
                    .filter(|v| !b.contains(v))
                    .map(|v| v.to_string())
                    .collect();
                if !dropped.is_empty() {
                    self.push(at, format!("no longer accepts {}", dropped.join(", ")));
                }
            }
            (None, Some(b)) => {
                let values: Vec<String> = b.iter().map(|v| v.to_string()).collect();
                self.push(
                    at,
                    format!("restricted to the values {}", values.join(", ")),
                );
            }
            _ => {}
        }
        self.bounds(old, new, at, true);
        if new.get("uniqueItems") == Some(&Value::Bool(true))
            && old.get("uniqueItems") != Some(&Value::Bool(true))
        {
            self.push(at, "items must now be unique (`uniqueItems`)".into());
        }
        if let Some(map) = new.as_object() {
            for (key, value) in map {
                // An empty pattern matches every string.
                let vacuous = key == "pattern" && value == "" && old.get(key).is_none();
                if compared_as_written(key) && old.get(key) != Some(value) && !vacuous {
                    self.push(
                        at,
                        format!(
                            "`{key}` added or changed ({} -> {value}): the check cannot prove every input it accepted still passes",
                            shown(old.get(key))
                        ),
                    );
                }
            }
        }
        if closed(new) && !closed(old) {
            self.push(
                at,
                "closed to unknown properties (`additionalProperties: false`)".into(),
            );
        }
        let old_required = required(old);
        for name in required(new) {
            if !old_required.contains(&name) {
                let was = if properties(old).is_some_and(|p| p.contains_key(name)) {
                    "optional"
                } else {
                    "absent"
                };
                self.push(
                    &format!("{at}/{name}"),
                    format!("newly required (was {was})"),
                );
            }
        }
        let no_properties = serde_json::Map::new();
        let (po, pn) = (
            properties(old).unwrap_or(&no_properties),
            properties(new).unwrap_or(&no_properties),
        );
        let any = Value::Bool(true);
        let old_extra = old.get("additionalProperties").unwrap_or(&any);
        let new_extra = new.get("additionalProperties").unwrap_or(&any);
        for (name, schema) in po {
            let pointer = format!("{at}/{name}");
            match pn.get(name) {
                Some(new_schema) => self.inputs(schema, new_schema, &pointer, depth + 1),
                None if closed(new) => self.push(
                    &pointer,
                    "removed: callers that pass it now fail (`additionalProperties: false`)".into(),
                ),
                // Now checked against the schema for other properties.
                None => self.inputs(schema, new_extra, &pointer, depth + 1),
            }
        }
        if !closed(new) && new_extra.is_object() && old_extra != new_extra {
            self.inputs(old_extra, new_extra, &format!("{at}/*"), depth + 1);
        }
        match (old.get("items"), new.get("items")) {
            (Some(a), Some(b)) if is_schema(a) && is_schema(b) => {
                self.inputs(a, b, &format!("{at}/*"), depth + 1);
            }
            (None, Some(b)) if is_schema(b) => {
                self.inputs(&any, b, &format!("{at}/*"), depth + 1);
            }
            (a, Some(b)) if a != Some(b) => self.push(
                at,
                format!(
                    "`items` changed ({} -> {b}): the check cannot prove every input it accepted still passes",
                    shown(a)
                ),
            ),
            _ => {}
        }
    }

    /// Bounds: inputs break when one appears or tightens, outputs when
    /// one goes or loosens.
    fn bounds(&mut self, old: &Value, new: &Value, at: &str, input: bool) {
        let num = |s: &Value, k: &str| s.get(k).and_then(Value::as_f64);
        for (keys, stricter) in [
            (LOWER, (|a: f64, b: f64| b > a) as fn(f64, f64) -> bool),
            (UPPER, |a: f64, b: f64| b < a),
        ] {
            for key in keys {
                let (from, to) = if input { (old, new) } else { (new, old) };
                // A count bound of 0 (`minLength: 0`) holds for everything.
                let vacuous = |v: f64| v <= 0.0 && key.starts_with("min") && *key != "minimum";
                let narrowed = match (num(from, key), num(to, key)) {
                    (Some(a), Some(b)) => stricter(a, b),
                    (None, Some(b)) => !vacuous(b),
                    _ => false,
                };
                if !narrowed {
                    continue;
                }
                let change = match (input, old.get(*key), new.get(*key)) {
                    (true, Some(_), Some(b)) => format!("`{key}` tightened to {b}"),
                    (true, _, b) => format!("`{key}` added: {}", shown(b)),
                    (false, Some(a), Some(b)) => {
                        format!("`{key}` loosened from {a} to {b}: the output may now break it")
                    }
                    (false, a, _) => {
                        format!(
                            "`{key}` ({}) removed: the output may now break it",
                            shown(a)
                        )
                    }
                };
                self.push(at, change);
            }
        }
    }

    fn output(&mut self, old: &Value, new: &Value, at: &str, depth: usize) {
        if depth > MAX_DEPTH || self.again(old, new) {
            return;
        }
        let (old, new) = (view(old, self.roots.0), view(new, self.roots.1));
        let (old, new) = (old.as_ref(), new.as_ref());
        if new == &Value::Bool(false) {
            return;
        }
        let empty = Value::Object(serde_json::Map::new());
        let old = if old.is_object() { old } else { &empty };
        let new = if new.is_object() { new } else { &empty };
        match (types(old), types(new)) {
            (Some(a), Some(b)) if !types_within(&b, &a) => self.push(
                at,
                format!("type widened from {} to {}", a.join(" | "), b.join(" | ")),
            ),
            (Some(a), None) => self.push(at, format!("no longer promises type {}", a.join(" | "))),
            _ => {}
        }
        if let (Some(a), Some(b)) = (enum_values(old), enum_values(new)) {
            let added: Vec<String> = b
                .iter()
                .filter(|v| !a.contains(v))
                .map(|v| v.to_string())
                .collect();
            if !added.is_empty() {
                self.push(at, format!("may now be {}", added.join(", ")));
            }
        } else if enum_values(old).is_some() {
            self.push(at, "no longer limited to its listed values".into());
        }
        self.bounds(old, new, at, false);
        if old.get("uniqueItems") == Some(&Value::Bool(true))
            && new.get("uniqueItems") != Some(&Value::Bool(true))
        {
            self.push(at, "items may now repeat (`uniqueItems` dropped)".into());
        }
        if let Some(map) = old.as_object() {
            for (key, value) in map {
                if compared_as_written(key) && new.get(key) != Some(value) {
                    self.push(
                        at,
                        format!(
                            "`{key}` removed or changed ({value} -> {}): the check cannot prove the output still keeps that promise",
                            shown(new.get(key))
                        ),
                    );
                }
            }
        }
        if closed(old) && !closed(new) {
            self.push(
                at,
                "may now hold properties callers do not expect (`additionalProperties: false` dropped)"
                    .into(),
            );
        }
        let new_required = required(new);
        for name in required(old) {
            if !new_required.contains(&name) {
                self.push(
                    &format!("{at}/{name}"),
                    if properties(new).is_some_and(|p| p.contains_key(name)) {
                        "newly optional: callers that read it may find it missing".into()
                    } else {
                        "removed: callers that read it find it missing".into()
                    },
                );
            }
        }
        let no_properties = serde_json::Map::new();
        let (po, pn) = (
            properties(old).unwrap_or(&no_properties),
            properties(new).unwrap_or(&no_properties),
        );
        let old_required = required(old);
        for (name, schema) in po {
            let pointer = format!("{at}/{name}");
            match pn.get(name) {
                Some(new_schema) => self.output(schema, new_schema, &pointer, depth + 1),
                None if !old_required.contains(&name.as_str()) => self.push(
                    &pointer,
                    "removed: callers that read it find it missing".into(),
                ),
                None => {}
            }
        }
        match (old.get("items"), new.get("items")) {
            (Some(a), Some(b)) if is_schema(a) && is_schema(b) => {
                self.output(a, b, &format!("{at}/*"), depth + 1);
            }
            (Some(a), b) if a != &Value::Bool(true) && b != Some(a) => self.push(
                at,
                format!(
                    "`items` removed or changed ({a} -> {}): the check cannot prove the output still keeps that promise",
                    shown(b)
                ),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(props: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
    }

    #[test]
    fn each_input_rule_breaks_and_its_lenient_twin_passes() {
        let base = obj(
            json!({"a": {"type": "string"}, "n": {"type": "number", "minimum": 0, "maximum": 10},
                   "e": {"enum": ["x", "y"]}, "opt": {"type": "string"},
                   "list": {"type": "array", "items": {"type": "string", "maxLength": 5}}}),
            &["a"],
        );
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        let breaking: Vec<(&str, Value)> = vec![
            (
                "new required",
                with(&|v| v["required"] = json!(["a", "opt"])),
            ),
            (
                "new required param",
                with(&|v| {
                    v["properties"]["b"] = json!({"type": "string"});
                    v["required"] = json!(["a", "b"]);
                }),
            ),
            (
                "narrowed type",
                with(&|v| v["properties"]["n"]["type"] = json!("integer")),
            ),
            (
                "enum narrowed",
                with(&|v| v["properties"]["e"]["enum"] = json!(["x"])),
            ),
            (
                "enum added",
                with(&|v| v["properties"]["a"]["enum"] = json!(["only"])),
            ),
            (
                "minimum raised",
                with(&|v| v["properties"]["n"]["minimum"] = json!(1)),
            ),
            (
                "maximum lowered",
                with(&|v| v["properties"]["n"]["maximum"] = json!(9)),
            ),
            (
                "nested maxLength",
                with(&|v| v["properties"]["list"]["items"]["maxLength"] = json!(4)),
            ),
            (
                "pattern added",
                with(&|v| v["properties"]["a"]["pattern"] = json!("^x")),
            ),
            (
                "optional removed",
                with(&|v| {
                    v["properties"].as_object_mut().unwrap().remove("opt");
                }),
            ),
        ];
        for (what, new) in breaking {
            assert!(
                !stricter_inputs(&base, &new).is_empty(),
                "{what} should break"
            );
        }
        let lenient: Vec<(&str, Value)> = vec![
            ("same", base.clone()),
            (
                "new optional",
                with(&|v| v["properties"]["c"] = json!({"type": "string"})),
            ),
            (
                "required made optional",
                with(&|v| v["required"] = json!([])),
            ),
            (
                "integer widened",
                with(&|v| v["properties"]["n"]["type"] = json!(["number", "null"])),
            ),
            (
                "enum widened",
                with(&|v| v["properties"]["e"]["enum"] = json!(["x", "y", "z"])),
            ),
            (
                "minimum lowered",
                with(&|v| v["properties"]["n"]["minimum"] = json!(-1)),
            ),
            (
                "maximum dropped",
                with(&|v| {
                    v["properties"]["n"]
                        .as_object_mut()
                        .unwrap()
                        .remove("maximum");
                }),
            ),
        ];
        for (what, new) in lenient {
            assert_eq!(stricter_inputs(&base, &new), vec![], "{what} should pass");
        }
    }

    #[test]
    fn each_output_rule_breaks_and_its_stricter_twin_passes() {
        let base = obj(
            json!({"name": {"type": "string"}, "kind": {"enum": ["a", "b"]},
                   "note": {"type": "string"},
                   "items": {"type": "array", "items": obj(json!({"sku": {"type": "string"}}), &["sku"])}}),
            &["name", "kind", "items"],
        );
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        let breaking: Vec<(&str, Value)> = vec![
            (
                "removed",
                with(&|v| {
                    v["properties"].as_object_mut().unwrap().remove("name");
                    v["required"] = json!(["kind", "items"]);
                }),
            ),
            (
                "removed optional",
                with(&|v| {
                    v["properties"].as_object_mut().unwrap().remove("note");
                }),
            ),
            (
                "newly optional",
                with(&|v| v["required"] = json!(["kind", "items"])),
            ),
            (
                "retyped",
                with(&|v| v["properties"]["name"]["type"] = json!("integer")),
            ),
            (
                "nullable",
                with(&|v| v["properties"]["name"]["type"] = json!(["string", "null"])),
            ),
            (
                "enum widened",
                with(&|v| v["properties"]["kind"]["enum"] = json!(["a", "b", "c"])),
            ),
            (
                "nested renamed",
                with(&|v| {
                    v["properties"]["items"]["items"] =
                        obj(json!({"id": {"type": "string"}}), &["id"]);
                }),
            ),
        ];
        for (what, new) in breaking {
            assert!(
                !weaker_output(&base, &new).is_empty(),
                "{what} should break"
            );
        }
        let fine: Vec<(&str, Value)> = vec![
            ("same", base.clone()),
            (
                "new field",
                with(&|v| v["properties"]["extra"] = json!({"type": "string"})),
            ),
            (
                "optional made required",
                with(&|v| v["required"] = json!(["name", "kind", "items", "note"])),
            ),
            (
                "enum narrowed",
                with(&|v| v["properties"]["kind"]["enum"] = json!(["a"])),
            ),
        ];
        for (what, new) in fine {
            assert_eq!(weaker_output(&base, &new), vec![], "{what} should pass");
        }
    }

    #[test]
    fn major_bumps_follow_cargo() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(is_major_bump(&v("1.2.0"), &v("2.0.0")));
        assert!(!is_major_bump(&v("1.2.0"), &v("1.3.0")));
        assert!(is_major_bump(&v("0.2.0"), &v("0.3.0")));
        assert!(!is_major_bump(&v("0.2.0"), &v("0.2.1")));
        assert!(is_major_bump(&v("0.0.1"), &v("0.0.2")));
    }

    #[test]
    fn keywords_compared_as_written_and_local_refs_count() {
        let base = json!({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {"type": "object"},
            "who": {"$ref": "#/$defs/person"}},
            "$defs": {"person": {"type": "object", "properties": {"name": {"type": "string"}}}}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        for (what, new) in [
            (
                "uniqueItems",
                with(&|v| v["properties"]["tags"]["uniqueItems"] = json!(true)),
            ),
            (
                "contains",
                with(&|v| v["properties"]["tags"]["contains"] = json!({"const": "x"})),
            ),
            (
                "items false",
                with(&|v| v["properties"]["tags"]["items"] = json!(false)),
            ),
            (
                "prefixItems",
                with(&|v| v["properties"]["tags"]["prefixItems"] = json!([{"const": 1}])),
            ),
            (
                "propertyNames",
                with(&|v| v["properties"]["meta"]["propertyNames"] = json!({"maxLength": 3})),
            ),
            (
                "patternProperties",
                with(&|v| {
                    v["properties"]["meta"]["patternProperties"] =
                        json!({"^x": {"type": "integer"}})
                }),
            ),
            (
                "dependentRequired",
                with(&|v| v["properties"]["meta"]["dependentRequired"] = json!({"a": ["b"]})),
            ),
            (
                "if/then",
                with(&|v| {
                    v["properties"]["meta"]["if"] = json!({"required": ["a"]});
                    v["properties"]["meta"]["then"] = json!({"required": ["b"]});
                }),
            ),
            (
                "additionalProperties schema",
                with(&|v| {
                    v["properties"]["meta"]["additionalProperties"] = json!({"type": "string"})
                }),
            ),
            (
                "unevaluatedProperties",
                with(&|v| v["unevaluatedProperties"] = json!(false)),
            ),
            (
                "an unknown keyword",
                with(&|v| v["properties"]["meta"]["maxDepth"] = json!(2)),
            ),
            (
                "a $defs target",
                with(&|v| v["$defs"]["person"]["required"] = json!(["name"])),
            ),
            (
                "a $defs target's type",
                with(&|v| v["$defs"]["person"]["properties"]["name"]["maxLength"] = json!(9)),
            ),
        ] {
            assert!(
                !stricter_inputs(&base, &new).is_empty(),
                "{what} should break inputs"
            );
        }
        for (what, new) in [
            (
                "a description",
                with(&|v| v["properties"]["meta"]["description"] = json!("why")),
            ),
            (
                "minItems 0",
                with(&|v| v["properties"]["tags"]["minItems"] = json!(0)),
            ),
            (
                "an empty pattern",
                with(&|v| v["properties"]["meta"]["pattern"] = json!("")),
            ),
            (
                "an extension",
                with(&|v| v["properties"]["meta"]["x-owner"] = json!("ann")),
            ),
            (
                "a $defs entry nobody uses",
                with(&|v| v["$defs"]["other"] = json!({"type": "string"})),
            ),
        ] {
            assert_eq!(stricter_inputs(&base, &new), vec![], "{what} should pass");
        }
        // Outputs: dropping a promise breaks, adding one does not.
        let strict = with(&|v| v["properties"]["tags"]["uniqueItems"] = json!(true));
        assert!(!weaker_output(&strict, &base).is_empty());
        assert_eq!(weaker_output(&base, &strict), vec![]);
        let bounded = with(&|v| v["properties"]["tags"]["maxItems"] = json!(3));
        assert!(!weaker_output(&bounded, &base).is_empty());
        assert_eq!(weaker_output(&base, &bounded), vec![]);
        // A recursive schema ends, even one that branches.
        let tree = json!({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}});
        assert_eq!(stricter_inputs(&tree, &tree), vec![]);
        let branches: serde_json::Map<String, Value> = (0..8)
            .map(|i| (format!("b{i}"), json!({"$ref": "#"})))
            .collect();
        let wide = json!({"type": "object", "properties": branches});
        assert_eq!(stricter_inputs(&wide, &wide), vec![]);
        assert_eq!(weaker_output(&wide, &wide), vec![]);
        let mut narrowed = wide.clone();
        narrowed["required"] = json!(["b0"]);
        assert!(!stricter_inputs(&wide, &narrowed).is_empty());
    }
}
