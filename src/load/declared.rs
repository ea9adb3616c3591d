//! What a template declares about its answer: `output:` (the answer's
//! JSON Schema), `tools:` and `tool_choice:`, and `output_retries:`, read
//! from the file and the files it names by `$ref`, over its parent's.
//!
//! Inheritance: a child's `output` replaces its parent's; its tools are
//! added to the parent's, one with a parent's tool's name replacing it in
//! place; `tool_choice` and `output_retries` are inherited unless set.

use std::sync::Arc;

use serde_json::Value;

use super::parse::SourceFile;
use super::walk::{RefFiles, ref_file, ref_value};
use crate::error::{Error, ErrorKind};
use crate::tool::{Tool, ToolChoice, is_tool_name};

/// The most repairs `output_retries` may ask for: each is a whole new
/// call, paid for.
pub(crate) const MAX_OUTPUT_RETRIES: u64 = 10;

/// A template's declared answer, after inheritance.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Declared {
    pub output: Option<Arc<Value>>,
    pub tools: Arc<[Tool]>,
    pub tool_choice: Option<ToolChoice>,
    pub output_retries: Option<u32>,
}

/// `src`'s declarations over `parent`'s; every problem is pushed to
/// `errors` with the file and line of the field.
pub(crate) fn resolve(
    src: &SourceFile,
    files: Option<&RefFiles>,
    parent: Option<&Declared>,
    errors: &mut Vec<Error>,
) -> Declared {
    let m = &src.manifest;
    let mut out = parent.cloned().unwrap_or_default();
    let mut fail = |at: &serde_saphyr::Spanned<Value>, message: String| {
        errors.push(Error::new(ErrorKind::Schema, message).with_location(src.at_span(at)));
    };

    if let Some(output) = &m.output {
        match referenced(&output.value, ref_file(files, "output"), "output")
            .and_then(|schema| checked_schema(schema, "output", false))
        {
            Ok(schema) => out.output = Some(Arc::new(schema)),
            Err(message) => fail(output, message),
        }
    }

    let mut tools_failed = false;
    if let Some(tools) = &m.tools {
        match own_tools(&tools.value, files) {
            Ok(own) => {
                let mut merged: Vec<Tool> = out.tools.to_vec();
                for tool in own {
                    match merged.iter_mut().find(|t| t.name == tool.name) {
                        Some(slot) => *slot = tool,
                        None => merged.push(tool),
                    }
                }
                out.tools = merged.into();
            }
            Err(messages) => {
                // `tool_choice` is not judged against tools that failed.
                tools_failed = true;
                for message in messages {
                    fail(tools, message);
                }
            }
        }
    }

    if let Some(choice) = &m.tool_choice {
        let names: Vec<&str> = out.tools.iter().map(|t| t.name.as_str()).collect();
        match ToolChoice::parse(&choice.value, &names) {
            // Both providers refuse a tool choice without tools.
            Ok(_) if names.is_empty() && tools_failed => {}
            Ok(_) if names.is_empty() => fail(
                choice,
                "`tool_choice` needs `tools:` (both providers refuse a tool choice without tools)"
                    .to_owned(),
            ),
            Ok(c) => out.tool_choice = Some(c),
            Err(_) if tools_failed => {}
            Err(message) => fail(choice, message),
        }
    }

    if let Some(retries) = &m.output_retries {
        match retries.value.as_u64() {
            Some(n) if n <= MAX_OUTPUT_RETRIES => out.output_retries = Some(n as u32),
            _ => fail(
                retries,
                format!(
                    "`output_retries` is a whole number from 0 to {MAX_OUTPUT_RETRIES} (each repair is another call)"
                ),
            ),
        }
    }
    out
}

/// `value` itself, or the file its `{$ref: PATH}` names (read by the walk
/// as `file`).
fn referenced(
    value: &Value,
    file: Option<&super::walk::SchemaFile>,
    what: &str,
) -> Result<Value, String> {
    match file {
        None => Ok(value.clone()),
        Some(_) if value.as_object().is_some_and(|o| o.len() > 1) => {
            Err(format!("a `$ref` {what} must hold nothing but the `$ref`"))
        }
        Some(Err(message)) => Err(message.clone()),
        Some(Ok((path, text))) => ref_value(path, text),
    }
}

/// `schema` when it is an object schema the validator accepts, with no
/// unknown keyword (a typo such as `requried` would silently check
/// nothing). `object` also requires `type: object`.
fn checked_schema(schema: Value, what: &str, object: bool) -> Result<Value, String> {
    if !schema.is_object() {
        return Err(format!(
            "{what} must be a JSON Schema (a map), not {}",
            crate::input::kind_name(&schema)
        ));
    }
    if object && schema.get("type") != Some(&Value::String("object".into())) {
        return Err(format!("{what} must have `type: object`"));
    }
    if let Some((pointer, message)) = crate::keywords::problems(&schema, false).into_iter().next() {
        let at = if pointer.is_empty() {
            String::new()
        } else {
            format!(" at `{pointer}`")
        };
        return Err(format!("{what}{at}: {message}"));
    }
    crate::schema::compile(&schema).map_err(|e| format!("{what}: {e}"))?;
    Ok(schema)
}

/// The tools a file declares itself, in order; every problem found.
fn own_tools(value: &Value, files: Option<&RefFiles>) -> Result<Vec<Tool>, Vec<String>> {
    let Value::Array(items) = value else {
        return Err(vec![
            "`tools` is a list of `{name, description, parameters}`".into(),
        ]);
    };
    let mut tools: Vec<Tool> = Vec::new();
    let mut problems = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("tools/{i}");
        let from_file = ref_file(files, &field).is_some();
        let tool = referenced(item, ref_file(files, &field), "tool").and_then(|item| {
            read_tool(
                &item,
                ref_file(files, &format!("{field}/parameters")),
                from_file,
            )
        });
        match tool {
            Ok(tool) if tools.iter().any(|t| t.name == tool.name) => {
                problems.push(format!("tool `{}` is declared twice", tool.name));
            }
            Ok(tool) => tools.push(tool),
            Err(message) => problems.push(format!("tools[{i}]: {message}")),
        }
    }
    if problems.is_empty() {
        Ok(tools)
    } else {
        Err(problems)
    }
}

/// One tool: `{name, description?, parameters?}`.
fn read_tool(
    item: &Value,
    parameters_file: Option<&super::walk::SchemaFile>,
    from_file: bool,
) -> Result<Tool, String> {
    let Some(map) = item.as_object() else {
        return Err("a tool is `{name, description, parameters}`".into());
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "description" | "parameters"))
    {
        return Err(format!(
            "unknown field `{unknown}` (a tool has `name`, `description` and `parameters`)"
        ));
    }
    let name = map
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool needs a `name`")?;
    if !is_tool_name(name) {
        return Err(format!(
            "tool name `{name}` must be 1 to 64 of `a-z`, `A-Z`, `0-9`, `_`, `-` (and not `auto`, `none` or `required`)"
        ));
    }
    let description = match map.get("description") {
        None => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(format!("tool `{name}`: `description` is text")),
    };
    let parameters = match map.get("parameters") {
        None => serde_json::json!({"type": "object", "properties": {}}),
        Some(p) => {
            if from_file
                && p.get("$ref")
                    .and_then(Value::as_str)
                    .is_some_and(|r| !r.starts_with('#'))
            {
                return Err(format!(
                    "tool `{name}`: a tool read from a file holds its `parameters` inline"
                ));
            }
            let what = format!("tool `{name}` parameters");
            let schema = referenced(p, parameters_file, &what)?;
            checked_schema(schema, &what, true)?
        }
    };
    Ok(Tool {
        name: name.to_owned(),
        description,
        parameters,
    })
}
