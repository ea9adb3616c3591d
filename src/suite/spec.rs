//! The test file format, `NAME.tests.yaml`, and reading one: every key
//! checked (an unknown key is an error at its line), every regular
//! expression compiled, every input file read, before a test runs.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::{Error, ErrorKind, Location};
use crate::message::Role;

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    tests: Vec<Spanned<TestSpec>>,
}

/// One test as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    name: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    inputs: Option<Spanned<Value>>,
    #[serde(default)]
    inputs_file: Option<Spanned<String>>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    expect: Option<Spanned<ExpectSpec>>,
    #[serde(default)]
    record: bool,
    #[serde(default)]
    answer: Option<Spanned<AnswerSpec>>,
}

/// One string or a list of them.
#[derive(Debug)]
enum Strings {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strings, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Strings;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a string or a list of strings (quote a value YAML would read as a number or boolean: \"42\", \"true\")",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Strings, E> {
                Ok(Strings::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Strings, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item);
                }
                Ok(Strings::Many(out))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl Strings {
    fn into_vec(self) -> Vec<String> {
        match self {
            Strings::One(s) => vec![s],
            Strings::Many(v) => v,
        }
    }
}

/// The text assertions of an `expect`, a `messages` entry or an `answer`
/// (serde's `flatten` would not report unknown keys).
struct TextSpec {
    contains: Option<Strings>,
    not_contains: Option<Strings>,
    matches: Option<Spanned<Strings>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    #[serde(default)]
    roles: Option<Vec<Role>>,
    #[serde(default)]
    contains: Option<Strings>,
    #[serde(default)]
    not_contains: Option<Strings>,
    #[serde(default)]
    matches: Option<Spanned<Strings>>,
    #[serde(default)]
    messages: Vec<Spanned<MessageSpec>>,
    #[serde(default)]
    tokens: Option<TokensSpec>,
    #[serde(default)]
    truncated: Option<bool>,
    #[serde(default)]
    error: Option<Spanned<ErrorSpec>>,
    #[serde(default)]
    snapshot: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageSpec {
    #[serde(default)]
    at: Option<i64>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    equals: Option<String>,
    #[serde(default)]
    contains: Option<Strings>,
    #[serde(default)]
    not_contains: Option<Strings>,
    #[serde(default)]
    matches: Option<Spanned<Strings>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensSpec {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max: Option<u64>,
    #[serde(default)]
    min: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorSpec {
    kind: Spanned<String>,
    #[serde(default)]
    parameter: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerSpec {
    #[serde(default)]
    contains: Option<Strings>,
    #[serde(default)]
    not_contains: Option<Strings>,
    #[serde(default)]
    matches: Option<Spanned<Strings>>,
    #[serde(default)]
    schema: Option<Spanned<Value>>,
    #[serde(default)]
    tool_called: Option<Strings>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    valid: bool,
}

// ------------------------------------------------------------ checked form

/// Assertions on a text: all must hold.
#[derive(Debug, Default, Clone)]
pub(crate) struct TextExpect {
    pub contains: Vec<String>,
    pub not_contains: Vec<String>,
    /// Patterns checked to compile when the file was read; compiled again
    /// (through a small memo) when a test runs, so that memory does not
    /// grow with the number of patterns a suite holds.
    pub matches: Vec<String>,
}

/// Which message an assertion is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which {
    /// By position; negative counts from the end (`-1` is the last).
    At(i64),
    /// The first message with this role.
    Role(Role),
}

#[derive(Debug, Clone)]
pub(crate) struct MessageExpect {
    pub which: Which,
    /// Also required to have this role (when given with `at`).
    pub role: Option<Role>,
    pub equals: Option<String>,
    pub text: TextExpect,
}

#[derive(Debug, Clone)]
pub(crate) struct TokensExpect {
    pub model: Option<String>,
    pub max: Option<u64>,
    pub min: Option<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct ErrorExpect {
    pub kind: crate::error::ErrorKind,
    pub parameter: Option<String>,
    pub rule: Option<String>,
    pub contains: Option<String>,
}

/// What a render must look like.
#[derive(Debug, Default, Clone)]
pub(crate) struct Expect {
    pub roles: Option<Vec<Role>>,
    pub text: TextExpect,
    pub messages: Vec<MessageExpect>,
    pub tokens: Option<TokensExpect>,
    pub truncated: Option<bool>,
    pub error: Option<ErrorExpect>,
    pub snapshot: bool,
}

/// What a recorded answer must look like.
#[derive(Debug, Clone)]
pub(crate) struct AnswerExpect {
    pub text: TextExpect,
    pub schema: Option<std::sync::Arc<jsonschema::Validator>>,
    pub tool_called: Vec<String>,
    pub finish_reason: Option<String>,
    /// The answer is valid as the template declares it: its output against
    /// the template's `output:` schema, each tool call against its tool.
    pub valid: bool,
}

/// One test, checked.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub name: String,
    /// The name as a file name: what its snapshot and cassette are called.
    pub slug: String,
    /// Where the test starts.
    pub at: Location,
    pub inputs: Value,
    pub model: Option<String>,
    pub expect: Expect,
    pub record: bool,
    pub answer: Option<AnswerExpect>,
}

/// The error kinds a test may expect, by the name a test file uses.
pub(crate) const ERROR_KINDS: &[(&str, ErrorKind)] = &[
    ("invalid_input", ErrorKind::InvalidInput),
    ("template", ErrorKind::Template),
    ("budget", ErrorKind::Budget),
    ("limit", ErrorKind::Limit),
    ("reference", ErrorKind::Reference),
];

/// The name a test file uses for an error kind.
pub(crate) fn kind_name(kind: ErrorKind) -> String {
    ERROR_KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or_else(|| kind.to_string(), |(n, _)| (*n).to_owned())
}

/// Reads a test file's text into its cases. Every problem found is
/// returned, each with the file and line.
pub(crate) fn parse(text: &str, path: &Path, root: &Path) -> Result<Vec<Case>, Vec<Error>> {
    // YAML 1.2's booleans (`true`, `false`) only: `NO`, `y` and `on` are
    // the strings they look like (a test of a Norwegian answer, `NO`,
    // must not read as `false`).
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let spec: FileSpec = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let at = e.location().filter(|l| l.line() > 0).map_or_else(
            || Location::file(path),
            |l| Location::at(path, l.line() as u32, Some(l.column() as u32)),
        );
        let mut message = e.without_snippet().to_string();
        if let Some(pos) = message.rfind(" at line ") {
            message.truncate(pos);
        }
        if message.contains("budget breached") {
            message = "the file is over the YAML reader's safety limits (nodes, nesting or \
                       aliases): split its tests over several templates' files, or use \
                       `inputs_file` for large inputs"
                .into();
        }
        vec![Error::new(ErrorKind::Syntax, message).with_location(at)]
    })?;
    let mut errors = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    for test in spec.tests {
        let at = spanned_at(path, &test);
        match check(test.value, at.clone(), path, root) {
            Ok(case) => {
                if let Some(prev) = cases.iter().find(|c| c.slug == case.slug) {
                    errors.push(
                        Error::new(
                            ErrorKind::Syntax,
                            format!(
                                "test `{}` has the file name `{}` of test `{}` (line {}): rename one",
                                case.name,
                                case.slug,
                                prev.name,
                                prev.at.line().unwrap_or(0)
                            ),
                        )
                        .with_location(at),
                    );
                } else {
                    cases.push(case);
                }
            }
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

fn spanned_at<T>(path: &Path, s: &Spanned<T>) -> Location {
    let l = s.referenced;
    Location::at(
        path,
        l.line() as u32,
        Some(l.column() as u32).filter(|&c| c > 0),
    )
}

fn check(spec: TestSpec, at: Location, path: &Path, root: &Path) -> Result<Case, Vec<Error>> {
    let mut errors = Vec::new();
    let name = spec.name.value.trim().to_owned();
    let slug = slug(&name);
    if slug.is_empty() {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                "a test needs a name with a letter or digit in it",
            )
            .with_location(spanned_at(path, &spec.name)),
        );
    }
    let inputs = match (spec.inputs, spec.inputs_file) {
        (Some(_), Some(file)) => {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "give `inputs` or `inputs_file`, not both",
                )
                .with_location(spanned_at(path, &file)),
            );
            Value::Null
        }
        (Some(inputs), None) => inputs.value,
        (None, Some(file)) => match read_inputs_file(&file.value, path, root) {
            Ok(v) => v,
            Err(message) => {
                errors.push(
                    Error::new(ErrorKind::Io, message).with_location(spanned_at(path, &file)),
                );
                Value::Null
            }
        },
        (None, None) => Value::Object(Default::default()),
    };
    let inputs = match inputs {
        Value::Null => Value::Object(Default::default()),
        v @ Value::Object(_) => v,
        _ => {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "`inputs` must be a map of parameter values",
                )
                .with_location(at.clone()),
            );
            Value::Null
        }
    };
    let expect = match spec.expect {
        None => Expect::default(),
        Some(e) => {
            let at = spanned_at(path, &e);
            let e = e.value;
            let error = e.error.and_then(|err| {
                let at = spanned_at(path, &err.value.kind);
                let kind = err.value.kind.value.trim();
                match ERROR_KINDS.iter().find(|(n, _)| *n == kind) {
                    Some((_, k)) => Some(ErrorExpect {
                        kind: *k,
                        parameter: err.value.parameter,
                        rule: err.value.rule,
                        contains: err.value.contains,
                    }),
                    None => {
                        errors.push(
                            Error::new(
                                ErrorKind::Syntax,
                                format!(
                                    "unknown error kind `{kind}` (expected {})",
                                    ERROR_KINDS
                                        .iter()
                                        .map(|(n, _)| *n)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                            .with_location(at),
                        );
                        None
                    }
                }
            });
            if error.is_some()
                && (e.roles.is_some()
                    || e.snapshot
                    || e.tokens.is_some()
                    || e.truncated.is_some()
                    || !e.messages.is_empty())
            {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        "a test that expects an error cannot also assert on the render",
                    )
                    .with_location(at.clone()),
                );
            }
            let mut messages = Vec::new();
            for m in e.messages {
                let at = spanned_at(path, &m);
                let m = m.value;
                let which = match (m.at, m.role) {
                    (Some(i), _) => Which::At(i),
                    (None, Some(role)) => Which::Role(role),
                    (None, None) => {
                        errors.push(
                            Error::new(
                                ErrorKind::Syntax,
                                "say which message: `at: INDEX` (0 is the first, -1 the last) \
                                 or `role: ROLE` (the first with that role)",
                            )
                            .with_location(at),
                        );
                        continue;
                    }
                };
                messages.push(MessageExpect {
                    which,
                    role: m.at.and(m.role),
                    equals: m.equals,
                    text: text_expect(
                        TextSpec {
                            contains: m.contains,
                            not_contains: m.not_contains,
                            matches: m.matches,
                        },
                        path,
                        &mut errors,
                    ),
                });
            }
            if let Some(t) = &e.tokens
                && t.max.is_none()
                && t.min.is_none()
            {
                errors.push(
                    Error::new(ErrorKind::Syntax, "`tokens` needs `max` or `min`")
                        .with_location(at.clone()),
                );
            }
            Expect {
                roles: e.roles,
                text: text_expect(
                    TextSpec {
                        contains: e.contains,
                        not_contains: e.not_contains,
                        matches: e.matches,
                    },
                    path,
                    &mut errors,
                ),
                messages,
                tokens: e.tokens.map(|t| TokensExpect {
                    model: t.model,
                    max: t.max,
                    min: t.min,
                }),
                truncated: e.truncated,
                error,
                snapshot: e.snapshot,
            }
        }
    };
    let answer = spec.answer.map(|a| {
        let at = spanned_at(path, &a);
        let a = a.value;
        let schema = a.schema.and_then(|s| {
            let at = spanned_at(path, &s);
            match jsonschema::validator_for(&s.value) {
                Ok(v) => Some(std::sync::Arc::new(v)),
                Err(e) => {
                    errors.push(
                        Error::new(
                            ErrorKind::Schema,
                            format!("`schema` is not a valid JSON Schema: {e}"),
                        )
                        .with_location(at),
                    );
                    None
                }
            }
        });
        let _ = at;
        AnswerExpect {
            text: text_expect(
                TextSpec {
                    contains: a.contains,
                    not_contains: a.not_contains,
                    matches: a.matches,
                },
                path,
                &mut errors,
            ),
            schema,
            tool_called: a.tool_called.map(Strings::into_vec).unwrap_or_default(),
            finish_reason: a.finish_reason,
            valid: a.valid,
        }
    });
    if spec.record && expect.error.is_some() {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                "a test that expects an error renders nothing to send: drop `record` or `error`",
            )
            .with_location(at.clone()),
        );
    }
    if let Some(t) = &expect.tokens
        && let (Some(min), Some(max)) = (t.min, t.max)
        && min > max
    {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                format!("`tokens`: `min` {min} is over `max` {max}: no render can pass"),
            )
            .with_location(at.clone()),
        );
    }
    if answer.is_some() && !spec.record {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                "`answer` assertions need `record: true` (they run against the recorded answer)",
            )
            .with_location(at.clone()),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Case {
        name,
        slug,
        at,
        inputs,
        model: spec.model,
        expect,
        record: spec.record,
        answer,
    })
}

fn text_expect(spec: TextSpec, path: &Path, errors: &mut Vec<Error>) -> TextExpect {
    let mut matches = Vec::new();
    if let Some(m) = spec.matches {
        let at = spanned_at(path, &m);
        for pattern in m.value.into_vec() {
            match compiled(&pattern) {
                Ok(_) => matches.push(pattern),
                Err(e) => errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!(
                            "`{pattern}` is not a regular expression: {}",
                            // The last line says what; the others draw it.
                            e.to_string()
                                .lines()
                                .last()
                                .unwrap_or("")
                                .trim_start_matches("error: ")
                        ),
                    )
                    .with_location(at.clone()),
                ),
            }
        }
    }
    TextExpect {
        contains: spec.contains.map(Strings::into_vec).unwrap_or_default(),
        not_contains: spec.not_contains.map(Strings::into_vec).unwrap_or_default(),
        matches,
    }
}

/// Compiled patterns (or why they do not compile), by their text. At most
/// 1,024 are kept, each at most [`REGEX_SIZE`] compiled, so a suite of
/// thousands of distinct patterns, or a server running suites across
/// reloads, stays within 64 MiB for them.
static REGEXES: crate::memo::Memo<Result<std::sync::Arc<regex::Regex>, regex::Error>> =
    crate::memo::Memo::new(1024);

/// The most a test's pattern may take compiled: 64 KiB, ample for the
/// patterns a test asserts (the regex crate's default is 10 MiB).
const REGEX_SIZE: usize = 64 * 1024;

/// `pattern` compiled (Rust's `regex` syntax; at most [`REGEX_SIZE`]
/// compiled, so that a test file cannot make the run slow or big).
/// Shared (not cloned): a clone of a `Regex` starts with an empty cache,
/// which each search would then allocate again.
pub(crate) fn compiled(pattern: &str) -> Result<std::sync::Arc<regex::Regex>, regex::Error> {
    let key = crate::memo::key(&[pattern.as_bytes()]);
    if let Some(r) = REGEXES.get(key) {
        return r;
    }
    let r = regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE)
        .dfa_size_limit(REGEX_SIZE)
        .build()
        .map(std::sync::Arc::new);
    REGEXES.put(key, r.clone());
    r
}

/// A test name as a file name: its letters and digits (any script) in
/// lowercase, every other run of characters one `-`, at most 100
/// characters.
pub(crate) fn slug(name: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in name.chars() {
        if count >= 100 {
            break;
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            count += 1;
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
            count += 1;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The inputs in `file` (relative to the test file's folder, inside the
/// root): JSON, or YAML for `.yaml`/`.yml`.
fn read_inputs_file(file: &str, test_file: &Path, root: &Path) -> Result<Value, String> {
    let dir = test_file.parent().unwrap_or(Path::new(""));
    let path: PathBuf = dir.join(file);
    let inside = match (path.canonicalize(), root.canonicalize()) {
        (Ok(p), Ok(r)) => p.starts_with(r),
        (Err(e), _) => return Err(format!("cannot read inputs file `{file}`: {e}")),
        (_, Err(e)) => return Err(format!("cannot read the root: {e}")),
    };
    if !inside {
        return Err(format!(
            "inputs file `{file}` is outside the template root; keep test inputs in the root"
        ));
    }
    let text = crate::file::read_text(&path, 64 << 20)
        .map_err(|e| format!("cannot read inputs file `{file}`: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if file.ends_with(".yaml") || file.ends_with(".yml") {
        serde_saphyr::from_str(text).map_err(|e| {
            format!(
                "inputs file `{file}` is not valid YAML: {}",
                e.without_snippet()
            )
        })
    } else {
        serde_json::from_str(text)
            .map_err(|e| format!("inputs file `{file}` is not valid JSON: {e}"))
    }
}
