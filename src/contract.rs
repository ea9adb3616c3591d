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
//! The comparison walks `properties` and `items` to any depth; `$ref`,
//! `anyOf`, `oneOf`, `allOf` and `not` are compared as written (a change
//! in them is reported as a change the check cannot prove compatible).
//! The rules follow Semantic Versioning 2.0.0, items 7 and 8; for `0.y.z`
//! a minor bump counts as major, as Cargo treats it.

use semver::Version;
use serde::Serialize;
use serde_json::Value;

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
/// different major version (or, below 1.0.0, a different minor).
pub fn is_major_bump(old: &Version, new: &Version) -> bool {
    if old.major != new.major {
        return true;
    }
    old.major == 0 && old.minor != new.minor
}

/// The ways `new` accepts less than `old`, for an input schema.
pub fn stricter_inputs(old: &Value, new: &Value) -> Vec<Breaking> {
    let mut out = Vec::new();
    inputs(old, new, "", &mut out);
    out
}

/// The ways `new` promises less than `old`, for an output schema.
pub fn weaker_output(old: &Value, new: &Value) -> Vec<Breaking> {
    let mut out = Vec::new();
    output(old, new, "", &mut out);
    out
}

fn push(out: &mut Vec<Breaking>, pointer: &str, change: String) {
    out.push(Breaking {
        pointer: if pointer.is_empty() {
            "/".to_owned()
        } else {
            pointer.to_owned()
        },
        change,
    });
}

/// The JSON types a schema allows; `None` when it does not restrict them.
/// `integer` is a subtype of `number`.
fn types(schema: &Value) -> Option<Vec<String>> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(vec![t.clone()]),
        Some(Value::Array(ts)) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

/// Whether every type in `a` is allowed by `b`.
fn types_within(a: &[String], b: &[String]) -> bool {
    a.iter()
        .all(|t| b.contains(t) || (t == "integer" && b.iter().any(|u| u == "number")))
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
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
];
const UPPER: &[&str] = &[
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
];
/// Keywords any change to which may reject what was accepted.
const EXACT: &[&str] = &[
    "pattern",
    "format",
    "multipleOf",
    "$ref",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
];

fn inputs(old: &Value, new: &Value, at: &str, out: &mut Vec<Breaking>) {
    if let (Some(a), Some(b)) = (types(old), types(new)) {
        if !types_within(&a, &b) {
            push(
                out,
                at,
                format!("type narrowed from {} to {}", a.join(" | "), b.join(" | ")),
            );
        }
    } else if types(old).is_none()
        && let Some(b) = types(new)
    {
        push(out, at, format!("type restricted to {}", b.join(" | ")));
    }
    match (enum_values(old), enum_values(new)) {
        (Some(a), Some(b)) => {
            let dropped: Vec<String> = a
                .iter()
                .filter(|v| !b.contains(v))
                .map(|v| v.to_string())
                .collect();
            if !dropped.is_empty() {
                push(out, at, format!("no longer accepts {}", dropped.join(", ")));
            }
        }
        (None, Some(b)) => push(
            out,
            at,
            format!(
                "restricted to the values {}",
                b.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        _ => {}
    }
    bounds(old, new, at, out, true);
    for key in EXACT {
        if old.get(key) != new.get(key) && new.get(key).is_some() {
            push(out, at, format!("`{key}` added or changed"));
        }
    }
    if closed(new) && !closed(old) {
        push(
            out,
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
            push(
                out,
                &format!("{at}/{name}"),
                format!("newly required (was {was})"),
            );
        }
    }
    let empty = serde_json::Map::new();
    let (po, pn) = (
        properties(old).unwrap_or(&empty),
        properties(new).unwrap_or(&empty),
    );
    for (name, schema) in po {
        match pn.get(name) {
            Some(new_schema) => inputs(schema, new_schema, &format!("{at}/{name}"), out),
            None if closed(new) => push(
                out,
                &format!("{at}/{name}"),
                "removed: callers that pass it now fail (`additionalProperties: false`)".into(),
            ),
            None => {}
        }
    }
    if let (Some(a), Some(b)) = (old.get("items"), new.get("items")) {
        inputs(a, b, &format!("{at}/*"), out);
    } else if old.get("items").is_none()
        && let Some(b) = new.get("items")
    {
        inputs(&Value::Bool(true), b, &format!("{at}/*"), out);
    }
}

fn bounds(old: &Value, new: &Value, at: &str, out: &mut Vec<Breaking>, input: bool) {
    let num = |s: &Value, k: &str| s.get(k).and_then(Value::as_f64);
    for (keys, stricter) in [
        (LOWER, (|a: f64, b: f64| b > a) as fn(f64, f64) -> bool),
        (UPPER, |a: f64, b: f64| b < a),
    ] {
        for key in keys {
            let narrowed = match (num(old, key), num(new, key)) {
                (Some(a), Some(b)) => stricter(a, b),
                (None, Some(_)) => true,
                _ => false,
            };
            if input && narrowed {
                push(
                    out,
                    at,
                    format!(
                        "`{key}` {} {}",
                        if num(old, key).is_some() {
                            "tightened to"
                        } else {
                            "added:"
                        },
                        new.get(*key).map(Value::to_string).unwrap_or_default()
                    ),
                );
            }
        }
    }
}

fn output(old: &Value, new: &Value, at: &str, out: &mut Vec<Breaking>) {
    match (types(old), types(new)) {
        (Some(a), Some(b)) if !types_within(&b, &a) => push(
            out,
            at,
            format!("type widened from {} to {}", a.join(" | "), b.join(" | ")),
        ),
        (Some(a), None) => push(
            out,
            at,
            format!("no longer promises type {}", a.join(" | ")),
        ),
        _ => {}
    }
    if let (Some(a), Some(b)) = (enum_values(old), enum_values(new)) {
        let added: Vec<String> = b
            .iter()
            .filter(|v| !a.contains(v))
            .map(|v| v.to_string())
            .collect();
        if !added.is_empty() {
            push(out, at, format!("may now be {}", added.join(", ")));
        }
    } else if enum_values(old).is_some() {
        push(out, at, "no longer limited to its listed values".into());
    }
    let new_required = required(new);
    for name in required(old) {
        if !new_required.contains(&name) {
            push(
                out,
                &format!("{at}/{name}"),
                if properties(new).is_some_and(|p| p.contains_key(name)) {
                    "newly optional: callers that read it may find it missing".into()
                } else {
                    "removed: callers that read it find it missing".into()
                },
            );
        }
    }
    let empty = serde_json::Map::new();
    let (po, pn) = (
        properties(old).unwrap_or(&empty),
        properties(new).unwrap_or(&empty),
    );
    let old_required = required(old);
    for (name, schema) in po {
        match pn.get(name) {
            Some(new_schema) => output(schema, new_schema, &format!("{at}/{name}"), out),
            None if !old_required.contains(&name.as_str()) => push(
                out,
                &format!("{at}/{name}"),
                "removed: callers that read it find it missing".into(),
            ),
            None => {}
        }
    }
    if let (Some(a), Some(b)) = (old.get("items"), new.get("items")) {
        output(a, b, &format!("{at}/*"), out);
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
    }
}
