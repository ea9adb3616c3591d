//! `promptbook test`: the tests beside the templates.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use promptbook::suite::{Outcome, Snapshots, Suite};

use crate::load_isolated;
use crate::print::plural;

/// Runs the tests (recording first with `record`).
pub(crate) fn test(
    dir: &Path,
    references: &[String],
    update: bool,
    record: bool,
    json: bool,
) -> Result<ExitCode> {
    // The summary's time covers loading the templates and the test files
    // too: what a user waits for.
    let started = std::time::Instant::now();
    let registry = load_isolated(dir)?;
    let mut suite = Suite::load(&registry);
    suite.retain_templates(&registry, references)?;
    for problem in suite.problems() {
        eprintln!("{problem}");
    }
    if suite.is_empty() && suite.problems().is_empty() {
        eprintln!(
            "note: no tests{}: add a `STEM.tests.yaml` beside a template file (docs/review.md)",
            if references.is_empty() {
                ""
            } else {
                " for these templates"
            }
        );
    }
    if record {
        record_answers(dir, &registry, &suite)?;
    }
    let report = suite.run(
        &registry,
        if update {
            Snapshots::Update
        } else {
            Snapshots::Check
        },
    );
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for r in &report.results {
            let status = match r.outcome {
                Outcome::Passed => "ok",
                Outcome::Failed => "FAILED",
                Outcome::Stale => "STALE",
                _ => "?",
            };
            writeln!(out, "test {} :: {} ... {status}", r.template, r.name)?;
            if let Some(path) = &r.wrote {
                writeln!(out, "    wrote snapshot {}", path.display())?;
            }
        }
        let failed: Vec<_> = report
            .results
            .iter()
            .filter(|r| r.outcome != Outcome::Passed)
            .collect();
        if !failed.is_empty() {
            writeln!(out, "\nfailures:")?;
            for r in failed {
                writeln!(
                    out,
                    "\n---- {} :: {} ({}:{})",
                    r.template,
                    r.name,
                    r.file.display(),
                    r.line
                )?;
                for f in &r.failures {
                    writeln!(out, "    {f}")?;
                }
                if let Some(diff) = &r.snapshot_diff {
                    for line in diff.lines() {
                        writeln!(out, "    {line}")?;
                    }
                }
            }
        }
        let (passed, failed, stale) = (
            report.count(Outcome::Passed),
            report.count(Outcome::Failed),
            report.count(Outcome::Stale),
        );
        let problems = suite.problems().len();
        writeln!(
            out,
            "\ntest result: {}. {passed} passed; {failed} failed; {stale} stale; {problems} \
             test file problem{} ({:.2} s, {:.2} s running tests)",
            if report.passed() && problems == 0 {
                "ok"
            } else {
                "FAILED"
            },
            plural(problems),
            started.elapsed().as_secs_f64(),
            report.elapsed.as_secs_f64()
        )?;
        let wrote = report.results.iter().filter(|r| r.wrote.is_some()).count();
        if wrote > 0 {
            writeln!(
                out,
                "wrote {wrote} snapshot{}: review them before committing",
                plural(wrote)
            )?;
        }
    }
    if report.passed() && suite.problems().is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(not(feature = "dispatch"))]
fn record_answers(_: &Path, _: &promptbook::Registry, _: &Suite) -> Result<()> {
    anyhow::bail!("this promptbook was built without the `dispatch` feature: it cannot record")
}

/// Sends every test that records (`record: true`) to its provider and
/// writes its cassette.
#[cfg(feature = "dispatch")]
fn record_answers(dir: &Path, registry: &promptbook::Registry, suite: &Suite) -> Result<()> {
    use anyhow::Context;
    use promptbook::RenderOptions;
    use promptbook::dispatch::{ClientBuilder, SendOptions};
    use promptbook::suite::Cassette;

    let recordings: Vec<_> = suite.recordings().collect();
    if recordings.is_empty() {
        eprintln!("no test records an answer (`record: true`)");
        return Ok(());
    }
    let client = ClientBuilder::new().template_root(dir)?.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut failed = 0;
    for r in recordings {
        let mut render = RenderOptions::new();
        let mut send = SendOptions::new();
        if let Some(model) = r.model {
            render = render.model(model.to_owned());
            send = send.model(model.to_owned());
        }
        let rendered = match registry.render_with(r.template, r.inputs, &render) {
            Ok(rendered) => rendered,
            Err(e) => {
                failed += 1;
                eprintln!("error: {} :: {}: cannot render: {e}", r.template, r.name);
                continue;
            }
        };
        let recorded = client.request_body(&rendered, &send).and_then(|request| {
            let response = runtime.block_on(client.send_with(&rendered, &send))?;
            if !response.fallback {
                return Ok((request, response));
            }
            // A fallback answered: the cassette holds the request that
            // model was sent, so that request and answer belong together.
            let answered = format!("{}:{}", response.provider, response.model);
            eprintln!(
                "note: {} :: {}: the primary model failed and {answered} answered; recording its request",
                r.template, r.name
            );
            let request =
                client.request_body(&rendered, &send.clone().model(answered).fallbacks(Vec::new()))?;
            Ok((request, response))
        });
        match recorded {
            Ok((request, response)) => {
                let cassette = Cassette::new(
                    r.name,
                    &rendered,
                    serde_json::to_value(&request)?,
                    serde_json::to_value(&response)?,
                );
                cassette
                    .write(&r.cassette)
                    .with_context(|| format!("cannot write {}", r.cassette.display()))?;
                eprintln!("recorded {}", r.cassette.display());
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {} :: {}: {e}", r.template, r.name);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} recording{} failed", plural(failed));
    }
    Ok(())
}
