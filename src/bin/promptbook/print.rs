//! How the commands print templates and renders for people.

use std::io::{self, Write};

use promptbook::{Registry, Rendered, Template};
use serde_json::Value;

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(crate) fn print_table(out: &mut impl Write, registry: &Registry) -> io::Result<()> {
    let rows: Vec<(String, String, String)> = registry
        .names()
        .map(|name| {
            let versions: Vec<&Template> = registry.versions(name).collect();
            let shown = versions
                .iter()
                .map(|t| {
                    if t.labels().is_empty() {
                        t.version().to_string()
                    } else {
                        format!("{} [{}]", t.version(), t.labels().join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let description = versions
                .last()
                .and_then(|t| t.description())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            (name.to_owned(), shown, description)
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(8);
    writeln!(out, "{:w0$}  {:w1$}  DESCRIPTION", "NAME", "VERSIONS")?;
    for (name, versions, description) in rows {
        writeln!(out, "{name:w0$}  {versions:w1$}  {description}").map(|()| ())?;
    }
    Ok(())
}

pub(crate) fn print_messages(out: &mut impl Write, rendered: &Rendered) -> io::Result<()> {
    let tokens = &rendered.tokens;
    writeln!(
        out,
        "# {} | {}{} tokens ({})",
        rendered.template,
        if tokens.approximate { "~" } else { "" },
        tokens.total,
        tokens.encoding
    )?;
    if let Some(t) = &rendered.truncation {
        writeln!(
            out,
            "# dropped the {} oldest history message{} to fit a budget of {} tokens",
            t.dropped,
            plural(t.dropped),
            t.budget
        )?;
    }
    for d in &rendered.dropped_empty {
        writeln!(
            out,
            "# dropped an empty {} message (a role line whose text rendered empty)",
            d.role
        )?;
    }
    for (i, (m, origin)) in rendered.messages_with_origin().enumerate() {
        let mut head = format!("[{}", m.role);
        if let Some(name) = &m.name {
            head.push_str(&format!(" name={name}"));
        }
        head.push(']');
        if let promptbook::Origin::History { parameter } = origin {
            head.push_str(&format!(" (from {parameter})"));
        }
        if let Some(n) = tokens.messages.get(i) {
            head.push_str(&format!(" {n} tokens"));
        }
        writeln!(out)?;
        writeln!(out, "{head}")?;
        if !m.content.is_empty() {
            writeln!(out, "{}", m.content.display())?;
        }
        if let Some(calls) = &m.tool_calls {
            writeln!(out, "tool_calls: {}", Value::Array(calls.clone()))?;
        }
    }
    Ok(())
}
