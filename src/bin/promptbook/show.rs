//! `promptbook show REF`: everything about one template version.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;
use promptbook::Registry;

pub(crate) fn show(registry: &Registry, reference: &str, json: bool) -> Result<ExitCode> {
    let t = registry.get(reference)?;
    let includes = registry.dependencies(reference)?;
    let dependents = registry.dependents(reference)?;
    let mut out = io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(t)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("name".into(), t.name().into());
            map.insert("depends_on".into(), includes.into());
            map.insert("dependents".into(), dependents.into());
        }
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{}", t.id())?;
    let labels = if t.labels().is_empty() {
        "(none)".to_owned()
    } else {
        t.labels().join(", ")
    };
    writeln!(out, "  labels:      {labels}")?;
    writeln!(out, "  hash:        {}", t.hash())?;
    writeln!(out, "  path:        {}", t.path().display())?;
    if let Some(d) = t.description() {
        writeln!(out, "  description: {}", d.trim())?;
    }
    if let Some(parent) = t.extends() {
        writeln!(out, "  extends:     {parent}")?;
    }
    let others: Vec<&String> = includes
        .iter()
        .filter(|i| Some(i.as_str()) != t.extends())
        .collect();
    if !others.is_empty() {
        writeln!(
            out,
            "  includes:    {}",
            others
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(
        out,
        "  used by:     {}",
        if dependents.is_empty() {
            "(nothing)".to_owned()
        } else {
            dependents.join(", ")
        }
    )?;
    if let Some(m) = t.model() {
        let name = match (&m.provider, &m.name) {
            (Some(p), Some(n)) => format!("{p}:{n}"),
            (None, Some(n)) => n.clone(),
            _ => "(unnamed)".into(),
        };
        writeln!(out, "  model:       {name}")?;
        if !m.parameters.is_empty() {
            writeln!(
                out,
                "  parameters:  {}",
                serde_json::Value::Object(m.parameters.clone())
            )?;
        }
        if !m.fallbacks.is_empty() {
            writeln!(out, "  fallbacks:   {}", m.fallbacks.join(", "))?;
        }
    }
    if let Some(c) = t.context() {
        writeln!(out, "  context:     {}", serde_json::to_string(c)?)?;
    }
    if let Some(choice) = t.tool_choice() {
        writeln!(out, "  tool choice: {}", serde_json::to_string(choice)?)?;
    }
    if let Some(n) = t.output_retries() {
        writeln!(out, "  output retries: {n}")?;
    }
    writeln!(out, "  input schema:")?;
    for line in serde_json::to_string_pretty(t.input_schema())?.lines() {
        writeln!(out, "    {line}")?;
    }
    if let Some(schema) = t.output_schema() {
        writeln!(out, "  output schema:")?;
        for line in serde_json::to_string_pretty(schema)?.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    for tool in t.tools() {
        writeln!(
            out,
            "  tool {}:{}",
            tool.name,
            tool.description
                .as_deref()
                .map_or_else(String::new, |d| format!(" {}", d.trim()))
        )?;
        for line in serde_json::to_string_pretty(&tool.parameters)?.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
