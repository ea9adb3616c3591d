//! `--input` and `--var`: the inputs a command renders with.

use std::io::{self, Read};

use anyhow::{Context, Result, bail};
use promptbook::Template;
use serde_json::{Map, Value};

use crate::files::{INPUT_FILE_BYTES, read_regular_file};

/// The JSON types a parameter's schema allows: its `type`, or the types of
/// its `enum`/`const` values, or those of its `anyOf`/`oneOf` branches.
/// Empty when it does not say.
pub(crate) fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => return vec![t.as_str()],
        Some(Value::Array(ts)) => return ts.iter().filter_map(Value::as_str).collect(),
        _ => {}
    }
    let mut types: Vec<&str> = listed_values(schema)
        .iter()
        .map(|v| match v {
            Value::String(_) => "string",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        })
        .collect();
    for key in ["anyOf", "oneOf"] {
        for branch in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            types.extend(schema_types(branch));
        }
    }
    types.sort_unstable();
    types.dedup();
    types
}

/// The values a schema lists: its `enum`, its `const`, and those of its
/// `anyOf`/`oneOf` branches.
pub(crate) fn listed_values(schema: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|e| e.iter().collect())
        .unwrap_or_default();
    out.extend(schema.get("const"));
    for key in ["anyOf", "oneOf"] {
        for branch in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(listed_values(branch));
        }
    }
    out
}

/// A `--var k@=FILE` value: the file inline, as a data URL (for a `file`
/// parameter, `{data, media_type, filename}`). The media type comes from
/// the file's first bytes (PNG, JPEG, GIF, WebP, PDF, WAV, MP3), else
/// `text/plain` for UTF-8 text; anything else is an error saying how to
/// give it.
fn media_file(template: Option<&Template>, key: &str, path: &str) -> Result<Value> {
    use base64::Engine as _;
    let bytes = crate::files::read_regular_bytes(std::path::Path::new(path), INPUT_FILE_BYTES)
        .with_context(|| format!("--var {key}@={path}"))?;
    let Some(media_type) = promptbook::sniff_media_type(&bytes) else {
        bail!(
            "--var {key}@={path}: cannot tell what kind of media it is (PNG, JPEG, GIF, WebP, PDF, \
             WAV, MP3 and UTF-8 text are known); give it as `--var {key}:='{{\"data\": \"BASE64\", \
             \"media_type\": \"...\"}}'`"
        );
    };
    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let is_file = template
        .and_then(|t| t.input_schema().get("properties")?.get(key))
        .and_then(|s| s.get("x-promptbook-media"))
        .is_some_and(|k| k == "file");
    Ok(if is_file {
        let name = std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let mut o = Map::new();
        o.insert("data".into(), data.into());
        o.insert("media_type".into(), media_type.into());
        if let Some(name) = name {
            o.insert("filename".into(), name.into());
        }
        Value::Object(o)
    } else {
        format!("data:{media_type};base64,{data}").into()
    })
}

/// A `--var k=v` value, converted by the parameter's declared type: a
/// number for `integer` and `number`, `true`/`false` for `boolean`, JSON
/// for `array`, `object` and `null`; a string otherwise (or when the type
/// allows strings).
pub(crate) fn typed_var(template: Option<&Template>, key: &str, value: &str) -> Result<Value> {
    let schema = template.and_then(|t| t.input_schema().get("properties")?.get(key));
    let v = value.trim();
    // A value the schema lists (`enum`, `const`, in itself or in one of
    // its `anyOf`/`oneOf` branches), written as it prints: that value.
    if let Some(schema) = schema {
        let listed = listed_values(schema);
        if let Some(m) = listed.iter().find(|m| match m {
            Value::String(s) => s == value,
            other => other.to_string() == v,
        }) {
            return Ok((*m).clone());
        }
    }
    let types = schema.map(schema_types).unwrap_or_default();
    if types.is_empty() || types.contains(&"string") {
        return Ok(Value::String(value.to_owned()));
    }
    for t in &types {
        let parsed = match *t {
            // JSON Schema's integers include `2.0`.
            "integer" => v.parse::<i64>().ok().map(Value::from).or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| Value::from(f as i64))
            }),
            "number" => v
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            "boolean" => match v {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            "array" | "object" | "null" => serde_json::from_str::<Value>(v).ok().filter(|j| {
                j.is_array() && *t == "array"
                    || j.is_object() && *t == "object"
                    || j.is_null() && *t == "null"
            }),
            _ => None,
        };
        if let Some(parsed) = parsed {
            return Ok(parsed);
        }
    }
    bail!(
        "--var {key}={value}: `{key}` is {}; give a value of that type, or `--var {key}:=JSON`",
        types
            .iter()
            .map(|t| match *t {
                "integer" => "an integer",
                "number" => "a number",
                "boolean" => "a boolean (true or false)",
                "array" => "a JSON array",
                "object" => "a JSON object",
                other => other,
            })
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

/// Reads `--input` and applies `--var`s on top, converting `k=v` values by
/// the template's parameter types.
pub(crate) fn read_inputs(
    input: Option<&str>,
    vars: &[String],
    template: Option<&Template>,
) -> Result<Value> {
    let mut inputs = match input {
        None => Map::new(),
        Some(source) => {
            let (text, yaml) = if source == "-" {
                let mut s = String::new();
                io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read inputs from stdin")?;
                (s, false)
            } else {
                let text = read_regular_file(std::path::Path::new(source), INPUT_FILE_BYTES)
                    .with_context(|| format!("cannot read input file {source}"))?;
                (text, source.ends_with(".yaml") || source.ends_with(".yml"))
            };
            // A byte-order mark (Windows editors write one) is not content.
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let value: Value = if yaml {
                serde_saphyr::from_str(text)
                    .map_err(|e| anyhow::anyhow!("{}", e.without_snippet()))
                    .with_context(|| format!("input file {source} is not valid YAML"))?
            } else {
                serde_json::from_str(text)
                    .with_context(|| format!("input {source} is not valid JSON"))?
            };
            match value {
                Value::Object(map) => map,
                Value::Null => Map::new(),
                _ => bail!("input {source} must hold a JSON object of parameter values"),
            }
        }
    };
    for var in vars {
        let Some((key, value)) = var.split_once('=') else {
            bail!("--var `{var}`: expected `k=v` (a string), `k:=JSON` or `k@=FILE` (media)");
        };
        if let Some(key) = key.strip_suffix('@') {
            inputs.insert(key.to_owned(), media_file(template, key, value)?);
            continue;
        }
        let (key, value) = match key.strip_suffix(':') {
            Some(key) => (
                key,
                serde_json::from_str(value)
                    .with_context(|| format!("--var `{var}`: the value after `:=` is not JSON"))?,
            ),
            None => (key, typed_var(template, key, value)?),
        };
        if key.is_empty() {
            bail!("--var `{var}`: empty parameter name");
        }
        inputs.insert(key.to_owned(), value);
    }
    Ok(Value::Object(inputs))
}
