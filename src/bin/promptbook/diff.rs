//! `promptbook diff A B`: what changes for the model between two
//! references, on the same inputs.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use promptbook::suite::Suite;
use promptbook::{RenderDiff, RenderOptions};
use serde_json::Value;

use crate::InputArgs;
use crate::inputs::read_inputs;
use crate::load_isolated;

pub(crate) struct DiffArgs<'a> {
    pub old: &'a str,
    pub new: &'a str,
    pub inputs: &'a InputArgs,
    pub tests: bool,
    pub model: Option<String>,
    pub json: bool,
    pub exit_code: bool,
}

pub(crate) fn diff(dir: &Path, args: DiffArgs<'_>) -> Result<ExitCode> {
    let registry = load_isolated(dir)?;
    let old = registry.get(args.old)?;
    let new = registry.get(args.new)?;
    // The inputs: given, or every test's of either template.
    let mut runs: Vec<(Option<String>, Value)> = Vec::new();
    if args.tests {
        if args.inputs.input.is_some() || !args.inputs.vars.is_empty() {
            bail!("give --tests or --input/--var, not both");
        }
        let suite = Suite::load(&registry);
        let ids = [old.id(), new.id()];
        for case in suite.cases() {
            if ids.iter().any(|id| id == case.template)
                && !case.expects_error
                && !runs.iter().any(|(n, _)| n.as_deref() == Some(case.name))
            {
                runs.push((Some(case.name.to_owned()), case.inputs.clone()));
            }
        }
        if runs.is_empty() {
            bail!(
                "neither {} nor {} has tests that render (a `*.tests.yaml` beside its file)",
                old.id(),
                new.id()
            );
        }
    } else {
        let inputs = read_inputs(args.inputs.input.as_deref(), &args.inputs.vars, Some(new))?;
        runs.push((None, inputs));
    }
    let mut options = RenderOptions::new();
    if let Some(model) = &args.model {
        options = options.model(model.clone());
    } else if let Some(name) = new.model().and_then(|m| m.name.clone()) {
        // Both counted for the second reference's model (the one that
        // will be sent), so that the deltas compare like with like.
        options = options.model(name);
    }
    let mut diffs: Vec<(Option<String>, RenderDiff)> = Vec::new();
    // A test whose inputs only one side takes is a difference too, shown
    // on stderr; a single given input that either side refuses is an error.
    let mut skipped: Vec<(String, String)> = Vec::new();
    for (name, inputs) in runs {
        let render = |reference: &str| registry.render_with(reference, &inputs, &options);
        match (render(&old.id()), render(&new.id())) {
            (Ok(a), Ok(b)) => {
                // Both were counted for one model: compare the templates'
                // own `model:` blocks.
                let d = promptbook::diff(&a, &b)
                    .with_model_changes(promptbook::model_changes(old.model(), new.model()));
                diffs.push((name, d));
            }
            (a, b) => {
                let (side, e) = match (a, b) {
                    (Err(e), _) => (old.id(), e),
                    (_, Err(e)) => (new.id(), e),
                    _ => unreachable!("both rendered"),
                };
                let Some(test) = name else {
                    return Err(anyhow::Error::new(e).context(format!("cannot render {side}")));
                };
                let why = format!("{side} does not render its inputs: {e}");
                eprintln!("## test: {test}: not compared: {why}");
                skipped.push((test, why));
            }
        }
    }
    if diffs.is_empty() {
        bail!(
            "no test's inputs render on both {} and {}",
            old.id(),
            new.id()
        );
    }
    let differs = !skipped.is_empty() || diffs.iter().any(|(_, d)| d.differs);
    let mut out = io::stdout().lock();
    if args.json {
        let value: Value = if args.tests {
            Value::Array(
                diffs
                    .iter()
                    .map(|(name, d)| {
                        let mut v = serde_json::to_value(d).unwrap_or_default();
                        if let Some(map) = v.as_object_mut() {
                            map.insert("test".into(), Value::from(name.clone()));
                        }
                        v
                    })
                    .chain(skipped.iter().map(|(test, why)| {
                        serde_json::json!({"test": test, "differs": true, "error": why})
                    }))
                    .collect(),
            )
        } else {
            serde_json::to_value(&diffs[0].1)?
        };
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        for (i, (name, d)) in diffs.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            if let Some(name) = name {
                writeln!(out, "## test: {name}")?;
            }
            write!(out, "{d}")?;
        }
    }
    Ok(if differs && args.exit_code {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
