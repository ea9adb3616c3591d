//! Tests beside the template: `NAME.tests.yaml` files that render a
//! template on given inputs and check what comes out, offline, with no
//! keys, as `promptbook test` runs them.
//!
//! # Which template a test file tests
//!
//! A test file tests the template defined in the file with the same stem
//! in the same folder: `support/triage@2.1.0.tests.yaml` tests the version
//! in `support/triage@2.1.0.prompt.jinja` (or `.prompt.yaml`, `.prompty`),
//! and `chat/assistant.tests.yaml` tests `chat/assistant.prompt.yaml`,
//! whatever version that file declares. Tests follow the file: bumping the
//! version inside it keeps its tests; copying the file to a new
//! `@VERSION` file starts the new version without tests until the test
//! file is copied too. A test file without its template file is an error.
//!
//! Snapshots live in `STEM.snapshots/TEST.json` and cassettes in
//! `STEM.cassettes/TEST.json` beside the test file, `TEST` being the
//! test's name in lowercase letters, digits and `-` ([`spec::slug`]).
//!
//! See `docs/review.md` for the format, with an example of each assertion.

mod cassette;
mod expect;
mod snapshot;
mod spec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use cassette::Cassette;

use crate::error::{Diagnostic, Error, ErrorKind, Location};
use crate::reference::Reference;
use crate::registry::Registry;
use crate::render::RenderOptions;
use spec::Case;

/// The suffix of a test file.
pub const TESTS_SUFFIX: &str = ".tests.yaml";

/// The largest test file read.
const MAX_TEST_FILE_BYTES: u64 = crate::file::MAX_FILE_BYTES;

/// Every test file of a root, read and checked against the templates it
/// tests.
#[derive(Debug, Default)]
pub struct Suite {
    files: Vec<TestFile>,
    problems: Vec<Diagnostic>,
    /// The template name each problem's test file is for.
    problem_names: Vec<Option<String>>,
}

#[derive(Debug, Clone)]
struct TestFile {
    path: PathBuf,
    /// `NAME@VERSION` of the template it tests.
    template: String,
    cases: Vec<Case>,
}

/// How [`Suite::run`] treats snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Snapshots {
    /// Compare; a missing or different snapshot fails (what CI wants).
    #[default]
    Check,
    /// Write every missing or different snapshot, and pass
    /// (`promptbook test --update`).
    Update,
}

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// An assertion failed; see [`TestResult::failures`].
    Failed,
    /// Its cassette was recorded from a different version of the template:
    /// record it again (`promptbook test --record`). Counts as a failure.
    Stale,
}

/// The result of one test.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct TestResult {
    /// `NAME@VERSION` of the template tested.
    pub template: String,
    /// The test's name.
    pub name: String,
    /// The test file and the line the test starts on.
    pub file: PathBuf,
    /// The line of the test in its file.
    pub line: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// What failed, one sentence each.
    pub failures: Vec<String>,
    /// For a failed snapshot: the unified diff from the stored snapshot to
    /// this render.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_diff: Option<String>,
    /// A snapshot this run wrote (with [`Snapshots::Update`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrote: Option<PathBuf>,
}

/// What a run found.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Report {
    /// One result per test, in file order.
    pub results: Vec<TestResult>,
    /// How long the run took.
    #[serde(skip)]
    pub elapsed: Duration,
}

impl Report {
    /// How many tests ended so.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Whether every test passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.outcome == Outcome::Passed)
    }
}

impl Suite {
    /// Finds every `*.tests.yaml` under the registry's root (hidden files
    /// and folders skipped, as for templates), pairs each with the template
    /// of its file, and reads its tests. Problems (an unknown key, a bad
    /// regular expression, inputs that break the template's schema, a test
    /// file without a template) are collected in [`problems`](Suite::problems),
    /// each with file and line; the tests of a file with problems do not
    /// run.
    pub fn load(registry: &Registry) -> Suite {
        let root = registry.root();
        let mut suite = Suite::default();
        let mut errors: Vec<Error> = Vec::new();
        let mut paths = Vec::new();
        let walk = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        let canonical_root = root.canonicalize().ok();
        for entry in walk {
            match entry {
                Ok(e) if e.file_type().is_dir() => {}
                Ok(e) => {
                    let name = e.file_name().to_string_lossy();
                    if !name.ends_with(TESTS_SUFFIX) {
                        if let Some(right) = near_miss(&name) {
                            errors.push(
                                Error::new(
                                    ErrorKind::Syntax,
                                    format!(
                                        "named like a test file, but test files end `{TESTS_SUFFIX}` and this one never runs: rename it `{right}`"
                                    ),
                                )
                                .with_location(Location::file(e.path())),
                            );
                        }
                        continue;
                    }
                    // As for templates: a regular file, or a link to one
                    // inside the root.
                    let ft = e.file_type();
                    let inside = || {
                        let target = e.path().canonicalize().ok()?;
                        let root = canonical_root.as_ref()?;
                        (target.starts_with(root) && target.is_file()).then_some(())
                    };
                    if ft.is_file() || (ft.is_symlink() && inside().is_some()) {
                        paths.push(e.into_path());
                    } else {
                        let why = if ft.is_symlink() {
                            "symlink leads outside the template root (or nowhere, or not to a regular file); refused".to_owned()
                        } else {
                            format!(
                                "{} is named like a test file but only regular files are read; refused",
                                crate::file::describe(ft)
                            )
                        };
                        errors.push(
                            Error::new(ErrorKind::Io, why).with_location(Location::file(e.path())),
                        );
                    }
                }
                Err(e) => errors.push(
                    Error::new(ErrorKind::Io, e.to_string())
                        .with_location(Location::file(e.path().unwrap_or(root))),
                ),
            }
        }
        let templates = template_files(registry);
        for path in paths {
            let stem = stem_of(&path);
            let key = path.with_file_name(&stem);
            let matching: Vec<&String> = templates
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, id)| id)
                .collect();
            if matching.len() > 1 {
                errors.push(
                    Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "ambiguous: {} template files have the stem `{stem}` ({}); a test \
                             file tests one template file, so give each its own stem",
                            matching.len(),
                            matching
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .with_location(Location::file(&path)),
                );
                continue;
            }
            let Some(id) = matching.first().map(|id| (*id).clone()) else {
                errors.push(
                    Error::new(
                        ErrorKind::Reference,
                        format!(
                            "no template file `{stem}.prompt.yaml`, `{stem}.prompt.jinja` or \
                             `{stem}.prompty` beside this test file (a test file tests the \
                             template file with its stem), or that template did not load"
                        ),
                    )
                    .with_location(Location::file(&path)),
                );
                continue;
            };
            let text = match crate::file::read_text(&path, MAX_TEST_FILE_BYTES) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(
                        Error::new(ErrorKind::Io, format!("cannot read: {e}"))
                            .with_location(Location::file(&path)),
                    );
                    continue;
                }
            };
            match spec::parse(&text, &path, root) {
                Err(mut errs) => errors.append(&mut errs),
                Ok(cases) => {
                    let mut bad = false;
                    for case in &cases {
                        if case.expect.error.is_some() {
                            continue;
                        }
                        if let Err(e) = registry.validate(&id, &case.inputs) {
                            bad = true;
                            errors.push(
                                Error::new(
                                    ErrorKind::InvalidInput,
                                    format!(
                                        "test `{}`: its inputs break the schema of `{id}`: {e} \
                                         (a test that means to, says `expect: {{error: {{kind: \
                                         invalid_input}}}}`)",
                                        case.name
                                    ),
                                )
                                .with_location(case.at.clone()),
                            );
                        }
                    }
                    if !bad {
                        suite.files.push(TestFile {
                            path,
                            template: id,
                            cases,
                        });
                    }
                }
            }
        }
        suite.problems = errors
            .iter()
            .map(|e| Diagnostic::from_error(e, root))
            .collect();
        suite.problem_names = suite
            .problems
            .iter()
            .map(|p| name_of(p.location().path(), root))
            .collect();
        suite
    }

    /// Problems found reading the test files, as `promptbook lint` prints
    /// them (`path:line:col: error: message`).
    pub fn problems(&self) -> &[Diagnostic] {
        &self.problems
    }

    /// How many tests there are (in files without problems).
    pub fn len(&self) -> usize {
        self.files.iter().map(|f| f.cases.len()).sum()
    }

    /// Whether there are no tests.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the tests of the templates `references` name: `NAME`
    /// keeps every version's tests, `NAME@REQ` or `NAME@LABEL` those of the
    /// version it resolves to.
    ///
    /// # Errors
    /// A reference that is malformed or names no template.
    pub fn retain_templates(
        &mut self,
        registry: &Registry,
        references: &[String],
    ) -> Result<(), Error> {
        if references.is_empty() {
            return Ok(());
        }
        let mut keep: Vec<String> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for r in references {
            let parsed = Reference::parse(r)?;
            if matches!(parsed.selector(), crate::reference::Selector::Latest) {
                registry.get(r)?;
                names.push(parsed.name().to_owned());
            } else {
                keep.push(registry.get(r)?.id());
            }
        }
        self.files.retain(|f| {
            keep.contains(&f.template)
                || names.iter().any(|n| {
                    f.template
                        .split_once('@')
                        .is_some_and(|(name, _)| name == n)
                })
        });
        let wanted: Vec<&str> = keep
            .iter()
            .map(|id| id.split_once('@').map_or(id.as_str(), |(n, _)| n))
            .chain(names.iter().map(String::as_str))
            .collect();
        let mut kept = self.problem_names.iter();
        self.problems.retain(|_| {
            kept.next()
                .and_then(Option::as_deref)
                .is_some_and(|n| wanted.contains(&n))
        });
        self.problem_names
            .retain(|n| n.as_deref().is_some_and(|n| wanted.contains(&n)));
        Ok(())
    }

    /// Runs every test: renders its template on its inputs and checks its
    /// assertions, its snapshot and its cassette. Nothing is sent anywhere.
    pub fn run(&self, registry: &Registry, snapshots: Snapshots) -> Report {
        self.run_until(registry, snapshots, None)
    }

    /// [`run`](Suite::run), stopping at `deadline`: every test not
    /// started by then fails with "not run: the time limit passed" (a
    /// server answering within a time limit runs tests this way).
    pub fn run_until(
        &self,
        registry: &Registry,
        snapshots: Snapshots,
        deadline: Option<std::time::Instant>,
    ) -> Report {
        let started = std::time::Instant::now();
        let mut results = Vec::with_capacity(self.len());
        for file in &self.files {
            for case in &file.cases {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    let mut result = TestResult::new(file, case);
                    result.outcome = Outcome::Failed;
                    result
                        .failures
                        .push("not run: the time limit passed before it started".to_owned());
                    results.push(result);
                    continue;
                }
                results.push(run_case(registry, file, case, snapshots));
            }
        }
        Report {
            results,
            elapsed: started.elapsed(),
        }
    }

    /// Every test, in file order.
    pub fn cases(&self) -> impl Iterator<Item = TestCase<'_>> {
        self.files.iter().flat_map(|f| {
            f.cases.iter().map(move |c| TestCase {
                template: &f.template,
                name: &c.name,
                inputs: &c.inputs,
                model: c.model.as_deref(),
                record: c.record,
                expects_error: c.expect.error.is_some(),
                cassette: cassette::path(&f.path, &c.slug),
            })
        })
    }

    /// The tests that record an answer (`record: true`): what
    /// `promptbook test --record` sends.
    pub fn recordings(&self) -> impl Iterator<Item = TestCase<'_>> {
        self.cases().filter(|c| c.record)
    }
}

/// One test, as [`Suite::cases`] shows it.
#[derive(Debug)]
#[non_exhaustive]
pub struct TestCase<'a> {
    /// `NAME@VERSION` of its template.
    pub template: &'a str,
    /// The test's name.
    pub name: &'a str,
    /// Its inputs.
    pub inputs: &'a Value,
    /// The model it renders for, when it names one.
    pub model: Option<&'a str>,
    /// Whether it records an answer (`record: true`).
    pub record: bool,
    /// Whether it expects the render to fail.
    pub expects_error: bool,
    /// Where its cassette is (or goes, when it records).
    pub cassette: PathBuf,
}

impl TestResult {
    /// A passed result for `case`, before anything ran.
    fn new(file: &TestFile, case: &Case) -> TestResult {
        TestResult {
            template: file.template.clone(),
            name: case.name.clone(),
            file: file.path.clone(),
            line: case.at.line().unwrap_or(0),
            outcome: Outcome::Passed,
            failures: Vec::new(),
            snapshot_diff: None,
            wrote: None,
        }
    }
}

fn run_case(registry: &Registry, file: &TestFile, case: &Case, snapshots: Snapshots) -> TestResult {
    let mut result = TestResult::new(file, case);
    let mut options = RenderOptions::new();
    if let Some(model) = &case.model {
        options = options.model(model.clone());
    }
    let render = registry.render_with(&file.template, &case.inputs, &options);
    match &render {
        Err(e) => expect::error(case.expect.error.as_ref(), e, &mut result.failures),
        Ok(rendered) => {
            expect::render(
                &case.expect,
                rendered,
                registry,
                &file.template,
                &case.inputs,
                &mut result.failures,
            );
            if case.expect.snapshot && case.expect.error.is_none() {
                check_snapshot(&file.path, case, rendered, snapshots, &mut result);
            }
        }
    }
    if case.record {
        check_cassette(file, case, render.as_ref().ok(), &mut result);
    }
    if result.outcome == Outcome::Passed && !result.failures.is_empty() {
        result.outcome = Outcome::Failed;
    }
    result
}

fn check_snapshot(
    tests_file: &Path,
    case: &Case,
    rendered: &crate::render::Rendered,
    snapshots: Snapshots,
    result: &mut TestResult,
) {
    let path = snapshot::path(tests_file, &case.slug);
    let now = snapshot::text(rendered);
    let stored = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => match snapshot::no_links(&path)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::file::read_text(&path, crate::file::MAX_FILE_BYTES)
                    .map_err(|e| e.to_string())
            }) {
            Ok(text) => Some(crate::load::parse::normalize_newlines(&text).into_owned()),
            Err(e) => {
                result
                    .failures
                    .push(format!("cannot read snapshot {}: {e}", path.display()));
                return;
            }
        },
    };
    if stored.as_deref() == Some(now.as_str()) {
        return;
    }
    if snapshots == Snapshots::Update {
        match snapshot::write(&path, &now) {
            Ok(()) => result.wrote = Some(path),
            Err(e) => result
                .failures
                .push(format!("cannot write snapshot {}: {e}", path.display())),
        }
        return;
    }
    match stored {
        None => result.failures.push(format!(
            "no snapshot at {}; run `promptbook test --update` to write it, then review it",
            path.display()
        )),
        Some(stored) => {
            result.failures.push(format!(
                "the render differs from its snapshot {}; if the change is intended, run \
                 `promptbook test --update`",
                path.display()
            ));
            result.snapshot_diff = Some(snapshot::diff(
                &stored,
                &now,
                &path.display().to_string(),
                "rendered now",
            ));
        }
    }
}

fn check_cassette(
    file: &TestFile,
    case: &Case,
    rendered: Option<&crate::render::Rendered>,
    result: &mut TestResult,
) {
    let path = cassette::path(&file.path, &case.slug);
    let recorded = match cassette::read(&path) {
        Ok(Some(c)) => c,
        Ok(None) => {
            result.failures.push(format!(
                "no recorded answer at {}; run `promptbook test --record` with the provider's key",
                path.display()
            ));
            return;
        }
        Err(message) => {
            result.failures.push(message);
            return;
        }
    };
    let Some(rendered) = rendered else {
        result.failures.push(format!(
            "the render failed, so {} cannot be checked against it",
            path.display()
        ));
        return;
    };
    let now = rendered.hash.to_string();
    let why = if recorded.hash != now || recorded.template != file.template {
        Some(format!(
            "it was recorded from {} with hash {}, the template is now {} with hash {}",
            recorded.template,
            short(&recorded.hash),
            file.template,
            short(&now)
        ))
    } else if recorded.render_hash != cassette::render_hash(rendered) {
        Some("the test's render differs from the one recorded (its inputs or model, or what the template renders for them, changed)".into())
    } else {
        None
    };
    if let Some(why) = why {
        result.outcome = Outcome::Stale;
        result.failures.push(format!(
            "stale: {}: {why}; run `promptbook test --record`",
            path.display()
        ));
        return;
    }
    if let Some(answer) = &case.answer {
        expect::answer(
            answer,
            &recorded.request,
            &recorded.response,
            rendered,
            &mut result.failures,
        );
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The template name a test file is for: its path below the root, without
/// `.tests.yaml` and any `@VERSION` (`support/triage`).
fn name_of(tests_file: &Path, root: &Path) -> Option<String> {
    let rel = tests_file.strip_prefix(root).ok()?;
    let rel = rel.to_str()?.replace(std::path::MAIN_SEPARATOR, "/");
    let stem = rel.strip_suffix(TESTS_SUFFIX)?;
    let (dir, file) = stem.rsplit_once('/').map_or(("", stem), |(d, f)| (d, f));
    let file = file.split_once('@').map_or(file, |(f, _)| f);
    Some(if dir.is_empty() {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    })
}

/// The name a test file misnamed `name` should have (`x.tests.yml`,
/// `x.test.yaml`, `x.test.yml` -> `x.tests.yaml`), if it is one.
fn near_miss(name: &str) -> Option<String> {
    [
        ".tests.yml",
        ".test.yaml",
        ".test.yml",
        ".tests.YAML",
        ".Tests.yaml",
    ]
    .iter()
    .find_map(|wrong| name.strip_suffix(wrong))
    .filter(|stem| !stem.is_empty())
    .map(|stem| format!("{stem}{TESTS_SUFFIX}"))
}

/// A test file's stem: its file name without `.tests.yaml`.
pub(crate) fn stem_of(tests_file: &Path) -> String {
    let name = tests_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(TESTS_SUFFIX).unwrap_or(&name).to_owned()
}

/// Every template's file as `DIR/STEM` (its path without the template
/// suffix), with its id.
fn template_files(registry: &Registry) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for name in registry.names() {
        for t in registry.versions(name) {
            let file = t
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = crate::load::parse::SUFFIXES
                .iter()
                .find_map(|(suffix, _)| file.strip_suffix(suffix));
            if let Some(stem) = stem {
                out.push((t.path().with_file_name(stem), t.id()));
            }
        }
    }
    out
}
