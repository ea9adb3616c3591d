//! Microsoft Prompty (`.prompty`) front matter, mapped onto the fields of
//! a native template; the body renders in [`Dialect::prompty`]'s rules.
//!
//! A `.prompty` file is YAML front matter between `---` lines and a Jinja
//! body with Prompty's role markers. We map the front matter (Prompty v2:
//! `name`, `description`, `metadata`, `model` or its string shorthand,
//! `inputs` as a list or a map with `kind`, `default`, `required`,
//! `enumValues`; and the v1 shape: `model: {api, configuration, parameters}`,
//! `inputs: {name: {type, default}}`, `sample`) to the fields of a native
//! template, keep every other key as it is (unused), and never resolve
//! `${env:...}` or `${file:...}` at load or render time.
//!
//! Rendering follows Prompty unless the file opts into strict mode
//! (`metadata: {promptbook: {strict: true}}`): missing inputs render empty,
//! undeclared variables are allowed (lint warns), Jinja runs without
//! `trim_blocks`/`lstrip_blocks`, `none` renders empty and a float with no
//! fraction renders as an integer; text before the first role marker is a
//! system message; message content loses its leading and trailing newlines
//! only. The one deliberate difference: a role marker inside an input value
//! is inert text (Prompty raises "nonce mismatch").

use serde_json::{Map, Value, json};

use super::walk::FileRefs;
use crate::dialect::Dialect;

/// A `.prompty` front matter mapped to a native manifest.
#[derive(Debug)]
pub(crate) struct Mapped {
    /// The native manifest, as a JSON object (fed to the manifest parser).
    pub manifest: Value,
    pub dialect: Dialect,
    /// Problems worth a lint warning, with the 1-based front matter line
    /// when known.
    pub warnings: Vec<String>,
    /// The inputs that are optional without a default (Prompty's inputs
    /// are optional unless `required: true`): left out, they are undefined
    /// when rendering, as in Prompty's runtime.
    pub optional_inputs: Vec<String>,
}

/// Parses Prompty front matter (empty is an empty mapping) with YAML 1.2
/// booleans, as Prompty's runtimes read it: `n` and `yes` are strings.
pub(crate) fn read_front_matter(text: &str) -> Result<Value, serde_saphyr::Error> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
    serde_saphyr::from_str_with_options(text, options)
}

/// Maps parsed Prompty front matter (`yaml`) to a native manifest.
/// `file_version` is the `@VERSION` of the file name, if any.
pub(crate) fn map_front_matter(
    fm: &Value,
    file_version: Option<&str>,
    refs: &FileRefs,
) -> Result<Mapped, String> {
    let mut fm = fm.clone();
    resolve_file_refs(&mut fm, refs)?;
    let Some(fm) = fm.as_object() else {
        return Err("Prompty front matter must be a YAML mapping".into());
    };
    let mut warnings = Vec::new();
    let metadata = fm.get("metadata").and_then(Value::as_object);
    let ours = metadata
        .and_then(|m| m.get("promptbook"))
        .and_then(Value::as_object);
    let strict = ours
        .and_then(|o| o.get("strict"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    // Version: metadata.version, else version, else the file name's, else
    // 0.0.0 (a warning).
    let version = metadata
        .and_then(|m| m.get("version"))
        .or_else(|| fm.get("version"))
        .map(version_text)
        .or_else(|| file_version.map(str::to_owned));
    let version = match version {
        Some(v) => v,
        None => {
            warnings.push(
                "no `version` (in `metadata.version` or at the top level): treated as 0.0.0".into(),
            );
            "0.0.0".into()
        }
    };

    let mut manifest = Map::new();
    manifest.insert("version".into(), version.into());
    if let Some(d) = fm.get("description").and_then(Value::as_str) {
        manifest.insert("description".into(), d.into());
    }
    if let Some(labels) = ours.and_then(|o| o.get("labels")) {
        manifest.insert("labels".into(), labels.clone());
    }
    check_template_format(fm.get("template"))?;
    let (parameters, optional_inputs) = map_inputs(fm.get("inputs"), strict)?;
    if !parameters.is_empty() {
        manifest.insert("parameters".into(), Value::Object(parameters));
    }
    if let Some(model) = map_model(fm.get("model")) {
        manifest.insert("model".into(), model);
    }
    if let Some(outputs) = fm.get("outputs").filter(|o| !o.is_null()) {
        manifest.insert("output".into(), map_properties(outputs, "outputs")?);
    }
    if let Some(tools) = fm.get("tools").filter(|t| !t.is_null()) {
        let tools = map_tools(tools, &mut warnings)?;
        if !tools.is_empty() {
            manifest.insert("tools".into(), Value::Array(tools));
        }
    }
    Ok(Mapped {
        manifest: Value::Object(manifest),
        dialect: Dialect::prompty(strict),
        warnings,
        optional_inputs,
    })
}

/// Replaces every value that is exactly `${file:PATH}` by that file (read
/// by the walk, relative to the `.prompty` file and inside the root): JSON
/// for `.json`, YAML for `.yaml`/`.yml`, text otherwise. `${env:...}`
/// values are left as they are: never resolved at load or render time.
fn resolve_file_refs(v: &mut Value, refs: &FileRefs) -> Result<(), String> {
    match v {
        Value::String(s) => {
            let Some(path) = s
                .trim()
                .strip_prefix("${file:")
                .and_then(|r| r.strip_suffix('}'))
            else {
                return Ok(());
            };
            let path = path.trim();
            let text = match refs.get(path) {
                Some(Ok(text)) => text,
                Some(Err(why)) => return Err(why.clone()),
                None => return Err(format!("`${{file:{path}}}` was not read")),
            };
            let lower = path.to_ascii_lowercase();
            *v = if lower.ends_with(".json") {
                serde_json::from_str(text)
                    .map_err(|e| format!("`${{file:{path}}}` is not valid JSON: {e}"))?
            } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
                read_front_matter(text).map_err(|e| {
                    format!(
                        "`${{file:{path}}}` is not valid YAML: {}",
                        e.without_snippet()
                    )
                })?
            } else {
                Value::String(super::parse::normalize_newlines(text).into_owned())
            };
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|i| resolve_file_refs(i, refs)),
        Value::Object(map) => map
            .values_mut()
            .try_for_each(|i| resolve_file_refs(i, refs)),
        _ => Ok(()),
    }
}

/// `1` -> `1.0.0`, `1.2` -> `1.2.0`, strings as they are.
fn version_text(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    let numeric = text
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match (numeric, text.matches('.').count()) {
        (true, 0) => format!("{text}.0.0"),
        (true, 1) => format!("{text}.0"),
        _ => text,
    }
}

/// Only Jinja bodies with Prompty's parser are supported.
fn check_template_format(template: Option<&Value>) -> Result<(), String> {
    let kind = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) => Some(s.to_ascii_lowercase()),
            Value::Object(o) => o
                .get("kind")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase),
            _ => None,
        }
    };
    let (format, parser) = match template {
        None => (None, None),
        Some(Value::String(s)) => (Some(s.to_ascii_lowercase()), None),
        Some(Value::Object(o)) => (
            kind(o.get("format").or(o.get("type"))),
            kind(o.get("parser")),
        ),
        Some(_) => return Err("`template` must be a format name or a mapping".into()),
    };
    if let Some(f) = format.filter(|f| !matches!(f.as_str(), "jinja2" | "jinja")) {
        return Err(format!(
            "template format `{f}` is not supported: promptbook renders Prompty's jinja2 format"
        ));
    }
    if let Some(p) = parser.filter(|p| p != "prompty") {
        return Err(format!(
            "template parser `{p}` is not supported (only `prompty`)"
        ));
    }
    Ok(())
}

/// Prompty inputs (a list of `{name, kind, ...}` or a map of name to
/// properties; v1 uses `type`) to native parameters.
fn map_inputs(
    inputs: Option<&Value>,
    strict: bool,
) -> Result<(Map<String, Value>, Vec<String>), String> {
    let mut out = Map::new();
    let mut optional = Vec::new();
    let entries: Vec<(String, Value)> = match inputs {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|item| {
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("every entry of `inputs` needs a `name`")?;
                Ok((name.to_owned(), item.clone()))
            })
            .collect::<Result<_, String>>()?,
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(_) => return Err("`inputs` must be a list or a mapping".into()),
    };
    for (name, props) in entries {
        // `name: value` shorthand (v1 sometimes writes a bare default).
        let props = match props {
            Value::Object(o) => o,
            other => {
                let mut o = Map::new();
                o.insert("default".into(), other);
                o
            }
        };
        let kind = props
            .get("kind")
            .or_else(|| props.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut schema = Map::new();
        match kind.as_str() {
            "thread" | "messages" => {
                schema.insert("type".into(), "messages".into());
            }
            "" | "any" => {}
            other => {
                let t = match other {
                    "image" | "file" | "audio" => other,
                    "string" | "str" | "text" => "string",
                    "integer" | "int" => "integer",
                    "number" | "float" | "double" => "number",
                    "boolean" | "bool" => "boolean",
                    "array" | "list" => "array",
                    "object" | "dict" | "map" => "object",
                    unknown => return Err(format!("input `{name}`: unknown kind `{unknown}`")),
                };
                schema.insert("type".into(), t.into());
            }
        }
        if let Some(d) = props.get("description").and_then(Value::as_str) {
            schema.insert("description".into(), d.into());
        }
        if let Some(e) = props.get("enumValues").or_else(|| props.get("enum"))
            && e.is_array()
        {
            schema.insert("enum".into(), e.clone());
        }
        let required = props.get("required").and_then(Value::as_bool);
        match props.get("default") {
            Some(d) => {
                schema.insert("default".into(), d.clone());
            }
            None if kind == "thread" || kind == "messages" => {
                schema.insert("default".into(), json!([]));
            }
            // Prompty's inputs are optional unless `required: true` (in
            // strict mode; otherwise nothing is validated): such an input
            // may be left out (it is then undefined) or passed as null.
            None if required != Some(true) || !strict => {
                if let Some(t) = schema.get("type").cloned() {
                    schema.insert("type".into(), json!([t, "null"]));
                }
                if let Some(e) = schema.get_mut("enum").and_then(Value::as_array_mut) {
                    e.push(Value::Null);
                }
                optional.push(name.clone());
            }
            None => {}
        }
        out.insert(name, Value::Object(schema));
    }
    Ok((out, optional))
}

/// Prompty properties (a list of `{name, kind, description?, required?,
/// enumValues?, items?, properties?}` or a map of name to them) as one
/// object schema: each property's type from its `kind`, `required` listing
/// those with `required: true`, closed to other properties. `what` names
/// the field in messages (`outputs`, `tool get_weather`).
fn map_properties(props: &Value, what: &str) -> Result<Value, String> {
    let entries: Vec<(String, Value)> = match props {
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("every entry of {what} needs a `name`"))?;
                Ok((name.to_owned(), item.clone()))
            })
            .collect::<Result<_, String>>()?,
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => return Err(format!("{what} must be a list or a mapping")),
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, prop) in entries {
        if prop.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(Value::String(name.clone()));
        }
        properties.insert(
            name.clone(),
            map_property(&prop, &format!("{what}: `{name}`"))?,
        );
    }
    Ok(json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }))
}

/// One Prompty property as a JSON Schema.
fn map_property(prop: &Value, what: &str) -> Result<Value, String> {
    let mut schema = Map::new();
    let kind = prop
        .get("kind")
        .or_else(|| prop.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let t = match kind.as_str() {
        "" | "any" => None,
        "string" | "str" | "text" => Some("string"),
        "integer" | "int" => Some("integer"),
        "number" | "float" | "double" => Some("number"),
        "boolean" | "bool" => Some("boolean"),
        "array" | "list" => Some("array"),
        "object" | "dict" | "map" => Some("object"),
        unknown => return Err(format!("{what}: unknown kind `{unknown}`")),
    };
    if let Some(t) = t {
        schema.insert("type".into(), t.into());
    }
    if let Some(d) = prop.get("description").and_then(Value::as_str) {
        schema.insert("description".into(), d.into());
    }
    if let Some(e) = prop.get("enumValues").or_else(|| prop.get("enum"))
        && e.is_array()
    {
        schema.insert("enum".into(), e.clone());
    }
    if let Some(items) = prop.get("items") {
        schema.insert("items".into(), map_property(items, what)?);
    }
    if let Some(nested) = prop.get("properties") {
        let object = map_properties(nested, what)?;
        if let Value::Object(o) = object {
            schema.extend(o);
        }
    }
    Ok(Value::Object(schema))
}

/// Prompty `tools`: those of kind `function` as native tools; any other
/// kind (`mcp`, `openapi`, ...) is left out with a warning, and so are a
/// function's `bindings` (its arguments filled from inputs by Prompty's
/// runtime).
fn map_tools(tools: &Value, warnings: &mut Vec<String>) -> Result<Vec<Value>, String> {
    let Value::Array(list) = tools else {
        return Err("`tools` must be a list".into());
    };
    let mut out = Vec::new();
    for tool in list {
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or("every entry of `tools` needs a `name`")?;
        let kind = tool
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            warnings.push(format!(
                "tool `{name}` is of kind `{kind}`, which promptbook does not send; only `function` tools are declared"
            ));
            continue;
        }
        if tool.get("bindings").is_some() {
            warnings.push(format!(
                "tool `{name}`: `bindings` (arguments filled from inputs) are not supported; the model fills every argument"
            ));
        }
        let mut native = Map::new();
        native.insert("name".into(), name.into());
        if let Some(d) = tool.get("description").and_then(Value::as_str) {
            native.insert("description".into(), d.into());
        }
        if let Some(p) = tool.get("parameters") {
            // A whole JSON Schema stays as it is; Prompty's property list
            // or map becomes one.
            let schema =
                if p.get("type").is_some() && p.get("properties").is_some_and(Value::is_object) {
                    p.clone()
                } else {
                    map_properties(p, &format!("tool `{name}`"))?
                };
            native.insert("parameters".into(), schema);
        }
        out.push(Value::Object(native));
    }
    Ok(out)
}

/// The default a native parameter needs to be optional as the Prompty
/// input `name` of `mapped` was (a native parameter without a default is
/// required): `""` for a string, so that it renders empty as in Prompty,
/// else null (its type allows it). For `promptbook convert`.
pub(crate) fn add_native_defaults(mapped: &mut Mapped) {
    let Some(params) = mapped
        .manifest
        .get_mut("parameters")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for name in &mapped.optional_inputs {
        let Some(schema) = params.get_mut(name).and_then(Value::as_object_mut) else {
            continue;
        };
        let string_only =
            schema.get("type") == Some(&json!(["string", "null"])) && !schema.contains_key("enum");
        if string_only {
            schema.insert("type".into(), "string".into());
            schema.insert("default".into(), "".into());
        } else {
            schema.insert("default".into(), Value::Null);
        }
    }
}

/// Prompty's `model` to a native `model:` block.
fn map_model(model: Option<&Value>) -> Option<Value> {
    let model = model?;
    let mut out = Map::new();
    match model {
        Value::String(id) => {
            out.insert("name".into(), id.clone().into());
        }
        Value::Object(m) => {
            // v2: {id, provider, apiType, connection, options}
            // v1: {api, configuration: {type, name|model|azure_deployment}, parameters}
            let config = m.get("configuration").and_then(Value::as_object);
            let name = m
                .get("id")
                .or_else(|| config.and_then(|c| c.get("name")))
                .or_else(|| config.and_then(|c| c.get("model")))
                .or_else(|| config.and_then(|c| c.get("azure_deployment")))
                .and_then(Value::as_str);
            if let Some(name) = name.filter(|n| !n.contains("${")) {
                out.insert("name".into(), name.into());
            }
            let provider = m
                .get("provider")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    config
                        .and_then(|c| c.get("type"))
                        .and_then(Value::as_str)
                        .map(|t| match t {
                            "azure_openai" | "azure" => "azure".to_owned(),
                            other => other.to_owned(),
                        })
                });
            if let Some(p) = provider.filter(|p| !p.contains("${")) {
                out.insert("provider".into(), p.into());
            }
            let mut parameters = Map::new();
            if let Some(options) = m.get("options").and_then(Value::as_object) {
                for (k, v) in options {
                    let key = match k.as_str() {
                        "maxOutputTokens" | "maxTokens" => "max_tokens",
                        "topP" => "top_p",
                        "topK" => "top_k",
                        "stopSequences" => "stop",
                        "frequencyPenalty" => "frequency_penalty",
                        "presencePenalty" => "presence_penalty",
                        "additionalProperties" => continue,
                        other => other,
                    };
                    parameters.insert(key.to_owned(), v.clone());
                }
            }
            if let Some(p) = m.get("parameters").and_then(Value::as_object) {
                for (k, v) in p {
                    parameters.insert(k.clone(), v.clone());
                }
            }
            if !parameters.is_empty() {
                out.insert("parameters".into(), Value::Object(parameters));
            }
            if let Some(connection) = map_connection(m) {
                out.insert("connection".into(), connection);
            }
        }
        _ => return None,
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// Prompty's connection to a model (v2 `connection: {endpoint, key,
/// apiVersion}`; v1 `configuration: {azure_endpoint | base_url, api_key,
/// api_version}`) as a native `connection`: the endpoint as written (a URL
/// or `${env:VAR}`, resolved only when sending) and the variable of a key
/// written `${env:VAR}`. A key written in the file itself is not carried:
/// keys come from the environment.
fn map_connection(model: &Map<String, Value>) -> Option<Value> {
    let v2 = model.get("connection").and_then(Value::as_object);
    let v1 = model.get("configuration").and_then(Value::as_object);
    let field = |v2_keys: &[&str], v1_keys: &[&str]| {
        v2_keys
            .iter()
            .find_map(|k| v2.and_then(|c| c.get(*k)))
            .or_else(|| v1_keys.iter().find_map(|k| v1.and_then(|c| c.get(*k))))
            .and_then(Value::as_str)
            .map(str::trim)
    };
    let endpoint = field(&["endpoint"], &["azure_endpoint", "base_url", "endpoint"]);
    let key_env = field(&["key", "apiKey"], &["api_key"])
        .and_then(|k| k.strip_prefix("${env:")?.strip_suffix('}'))
        .map(|k| k.split(':').next().unwrap_or(k).trim().to_owned());
    let api_version = field(&["apiVersion"], &["api_version"]);
    let mut out = Map::new();
    if let Some(e) = endpoint {
        out.insert("endpoint".into(), e.into());
    }
    if let Some(k) = key_env {
        out.insert("key_env".into(), k.into());
    }
    if let Some(v) = api_version.filter(|v| !v.contains("${")) {
        out.insert("api_version".into(), v.into());
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The line of each input a front matter declares under `inputs:`, by
/// name (1-based, counted within `front_matter`): a key of the map form
/// (`question:`) or the `name:` of an item of the list form (`- name:
/// question`). Inputs that come from a `${file:}` reference have none.
/// A textual scan: the front matter has been parsed already, and this only
/// places diagnostics.
pub(crate) fn input_lines(front_matter: &str) -> Vec<(String, u32)> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut found = Vec::new();
    let mut lines = front_matter.lines().enumerate();
    let Some((_, top)) = lines.find(|(_, l)| {
        let t = l.trim_start();
        t.starts_with("inputs:") && t["inputs:".len()..].trim().is_empty()
    }) else {
        return found;
    };
    let base = indent(top);
    let mut child: Option<usize> = None;
    for (i, line) in lines {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let at = indent(line);
        if at <= base {
            break;
        }
        let child_indent = *child.get_or_insert(at);
        let unquote = |v: &str| v.trim().trim_matches(['"', '\'']).to_owned();
        let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if let Some(item) = t.strip_prefix("- ") {
            let item = item.trim_start();
            // `- name: x`, or a flow mapping `- {name: x, kind: string}`.
            let flow = item.strip_prefix('{').and_then(|f| {
                f.split([',', '}'])
                    .find_map(|p| p.trim().strip_prefix("name:"))
            });
            if let Some(name) = item.strip_prefix("name:").or(flow) {
                found.push((unquote(name), line_no));
            }
        } else if at == child_indent {
            if let Some((key, _)) = t.split_once(':') {
                found.push((unquote(key), line_no));
            }
        } else if at <= child_indent + 2
            && let Some(name) = t.strip_prefix("name:")
        {
            found.push((unquote(name), line_no));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_completed() {
        assert_eq!(version_text(&json!(1)), "1.0.0");
        assert_eq!(version_text(&json!("1.2")), "1.2.0");
        assert_eq!(version_text(&json!("2.0.0-beta.1")), "2.0.0-beta.1");
    }

    #[test]
    fn inputs_map_to_parameters() {
        let (p, optional) = map_inputs(
            Some(&json!([
                {"name": "q", "kind": "string", "default": "hi"},
                {"name": "n", "kind": "integer", "required": true},
                {"name": "t", "kind": "thread"},
                {"name": "c", "kind": "string", "enumValues": ["a", "b"]}
            ])),
            true,
        )
        .unwrap();
        assert_eq!(p["q"], json!({"type": "string", "default": "hi"}));
        assert_eq!(p["n"], json!({"type": "integer"}));
        assert_eq!(p["t"], json!({"type": "messages", "default": []}));
        // Optional without a default: absent it is undefined, as in
        // Prompty's runtime; null is allowed.
        assert_eq!(
            p["c"],
            json!({"type": ["string", "null"], "enum": ["a", "b", null]})
        );
        assert_eq!(optional, ["c"]);
        // A native parameter needs a default to be optional: convert adds one.
        let mut mapped = Mapped {
            manifest: json!({"parameters": p}),
            dialect: Dialect::prompty(true),
            warnings: Vec::new(),
            optional_inputs: optional,
        };
        add_native_defaults(&mut mapped);
        assert_eq!(mapped.manifest["parameters"]["c"]["default"], Value::Null);
        let (p, optional) = map_inputs(Some(&json!({"s": {"type": "string"}})), false).unwrap();
        let mut mapped = Mapped {
            manifest: json!({"parameters": p}),
            dialect: Dialect::prompty(false),
            warnings: Vec::new(),
            optional_inputs: optional,
        };
        add_native_defaults(&mut mapped);
        assert_eq!(
            mapped.manifest["parameters"]["s"],
            json!({"type": "string", "default": ""})
        );
    }

    #[test]
    fn models_map_from_both_shapes() {
        assert_eq!(
            map_model(Some(&json!("gpt-4o"))),
            Some(json!({"name": "gpt-4o"}))
        );
        assert_eq!(
            map_model(Some(&json!({"id": "gpt-4", "provider": "openai",
                "options": {"temperature": 0.7, "maxOutputTokens": 1000}}))),
            Some(json!({"name": "gpt-4", "provider": "openai",
                "parameters": {"temperature": 0.7, "max_tokens": 1000}}))
        );
        assert_eq!(
            map_model(Some(
                &json!({"api": "chat", "configuration": {"type": "azure_openai",
                "azure_deployment": "gpt-35-turbo"}, "parameters": {"max_tokens": 128}})
            )),
            Some(json!({"name": "gpt-35-turbo", "provider": "azure",
                "parameters": {"max_tokens": 128}}))
        );
    }

    #[test]
    fn input_lines_are_found_in_both_shapes() {
        let map = "name: x\ninputs:\n  question:\n    type: string\n\n  history:\n    type: list\nmodel: {}\n";
        assert_eq!(
            input_lines(map),
            [("question".to_owned(), 3), ("history".to_owned(), 6)]
        );
        let list = "inputs:\n  - name: first\n    kind: string\n  -\n    name: 'second'\n    kind: thread\n  - {kind: string, name: third}\nsample:\n  name: no\n";
        assert_eq!(
            input_lines(list),
            [
                ("first".to_owned(), 2),
                ("second".to_owned(), 5),
                ("third".to_owned(), 7)
            ]
        );
        assert!(input_lines("inputs: ${file:inputs.json}\n").is_empty());
    }
}
