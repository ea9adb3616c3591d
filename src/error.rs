//! The error type of the library, and lint diagnostics.
//!
//! Modelled on minijinja's and reqwest's errors: one opaque struct holding a
//! kind, a message, where it happened and an optional source. Loading a
//! directory collects every problem into one [`Error`] whose
//! [`related`](Error::related) list holds one error per problem.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

/// The kind of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be read.
    Io,
    /// A template file is malformed: bad YAML, a bad field, a bad file name.
    Syntax,
    /// Jinja failed to compile or to render a template.
    Template,
    /// A reference (`NAME@REQ`) is malformed or matches no template.
    Reference,
    /// Two files claim the same version or label, or inheritance is cyclic.
    Conflict,
    /// A template's declared schema is not a valid JSON Schema, or a default
    /// does not satisfy it.
    Schema,
    /// Inputs passed to a render do not satisfy the template's input schema.
    InvalidInput,
    /// A template uses a variable it does not declare, or a similar static
    /// problem found by the linter.
    Lint,
    /// Loading a template root found one or more problems; see
    /// [`Error::related`].
    Load,
    /// The rendered prompt does not fit its token budget even with all the
    /// history it may drop dropped.
    Budget,
    /// A render hit one of its [`RenderLimits`](crate::RenderLimits):
    /// fuel, recursion, output size, input size or input depth. The message
    /// names the limit.
    Limit,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Io => "i/o error",
            ErrorKind::Syntax => "syntax error",
            ErrorKind::Template => "template error",
            ErrorKind::Reference => "reference error",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Schema => "schema error",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Lint => "lint error",
            ErrorKind::Load => "load error",
            ErrorKind::Budget => "over token budget",
            ErrorKind::Limit => "resource limit",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A place in a template file: its path, and line and column when known
/// (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    path: PathBuf,
    line: Option<u32>,
    column: Option<u32>,
}

impl Location {
    /// A location covering a whole file.
    pub fn file(path: impl Into<PathBuf>) -> Location {
        Location {
            path: path.into(),
            line: None,
            column: None,
        }
    }

    /// A location at `line` (and `column`, when known) of `path`.
    pub fn at(path: impl Into<PathBuf>, line: u32, column: Option<u32>) -> Location {
        Location {
            path: path.into(),
            line: Some(line.max(1)),
            column: column.map(|c| c.max(1)),
        }
    }

    /// The file's path, as found under the template root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The 1-based column, when known.
    pub fn column(&self) -> Option<u32> {
        self.column
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error type of promptbook.
///
/// Display gives `path:line:col: message` when the error comes from a file.
/// Errors that gather several problems (loading a directory, validating
/// inputs) list them in [`related`](Error::related) and in their display.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: Cow<'static, str>,
    location: Option<Location>,
    parameter: Option<String>,
    rule: Option<String>,
    related: Vec<Error>,
    source: Option<BoxError>,
}

impl Error {
    /// Creates an error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                location: None,
                parameter: None,
                rule: None,
                related: Vec::new(),
                source: None,
            }),
        }
    }

    pub(crate) fn with_location(mut self, location: Location) -> Error {
        self.inner.location = Some(location);
        self
    }

    /// Sets the location only when none is known yet.
    pub(crate) fn or_location(mut self, location: impl FnOnce() -> Location) -> Error {
        if self.inner.location.is_none() {
            self.inner.location = Some(location());
        }
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.inner.source = Some(Box::new(source));
        self
    }

    pub(crate) fn with_parameter(mut self, pointer: impl Into<String>, rule: &str) -> Error {
        self.inner.parameter = Some(pointer.into());
        self.inner.rule = Some(rule.to_owned());
        self
    }

    pub(crate) fn with_related(mut self, related: Vec<Error>) -> Error {
        self.inner.related = related;
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message, without location.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The file (and line and column) the error comes from, when it comes
    /// from a file.
    pub fn location(&self) -> Option<&Location> {
        self.inner.location.as_ref()
    }

    /// For [`ErrorKind::InvalidInput`]: the JSON pointer of the offending
    /// value inside the inputs (`/examples/0/answer`; `""` for the inputs
    /// object itself). For an error gathering several violations, the first.
    pub fn parameter(&self) -> Option<&str> {
        self.inner
            .parameter
            .as_deref()
            .or_else(|| self.inner.related.iter().find_map(Error::parameter))
    }

    /// For [`ErrorKind::InvalidInput`]: the JSON Schema keyword that was
    /// broken (`type`, `required`, `minLength`, ...).
    pub fn rule(&self) -> Option<&str> {
        self.inner
            .rule
            .as_deref()
            .or_else(|| self.inner.related.iter().find_map(Error::rule))
    }

    /// The individual problems this error gathers (every bad file of a
    /// directory load, every violation of an input schema). Empty for a
    /// single problem.
    pub fn related(&self) -> &[Error] {
        &self.inner.related
    }

    /// This error and its related errors, flattened: every single problem.
    pub fn problems(&self) -> Vec<&Error> {
        if self.inner.related.is_empty() {
            vec![self]
        } else {
            self.inner
                .related
                .iter()
                .flat_map(Error::problems)
                .collect()
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.inner.location {
            write!(f, "{location}: ")?;
        }
        f.write_str(&self.inner.message)?;
        for related in &self.inner.related {
            write!(f, "\n  {related}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Error");
        s.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(location) = &self.inner.location {
            s.field("location", &format_args!("{location}"));
        }
        if let Some(parameter) = &self.inner.parameter {
            s.field("parameter", parameter);
        }
        if let Some(rule) = &self.inner.rule {
            s.field("rule", rule);
        }
        if !self.inner.related.is_empty() {
            s.field("related", &self.inner.related);
        }
        if let Some(source) = &self.inner.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// The template root does not load while this is present.
    Error,
    /// Worth fixing; the template still loads and renders.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding of [`lint`](crate::lint): displays as
/// `path:line:col: error|warning: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    severity: Severity,
    location: Location,
    message: String,
    /// A warning when loading that [`lint`](crate::lint) reports as an
    /// error (a cache breakpoint whose prefix is not static: the template
    /// works, but pays full price on every call).
    lint_error: bool,
}

impl Diagnostic {
    pub(crate) fn new(severity: Severity, location: Location, message: String) -> Diagnostic {
        Diagnostic {
            severity,
            location,
            message,
            lint_error: false,
        }
    }

    /// A warning when loading, an error in [`lint`](crate::lint).
    pub(crate) fn lint_error(location: Location, message: String) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            location,
            message,
            lint_error: true,
        }
    }

    /// This diagnostic as `promptbook lint` reports it.
    pub(crate) fn for_lint(mut self) -> Diagnostic {
        if self.lint_error {
            self.severity = Severity::Error;
        }
        self
    }

    pub(crate) fn from_error(error: &Error, root: &Path) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            location: error
                .location()
                .cloned()
                .unwrap_or_else(|| Location::file(root)),
            message: error.message().to_owned(),
            lint_error: false,
        }
    }

    /// Error or warning.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// Where the problem is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// What the problem is.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A diagnostic serialises as `{"severity": "error"|"warning", "message",
/// "file", "line", "column"}` (line and column `null` when unknown).
impl serde::Serialize for Diagnostic {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("severity", &self.severity.to_string())?;
        map.serialize_entry("message", &self.message)?;
        map.serialize_entry("file", &self.location.path)?;
        map.serialize_entry("line", &self.location.line)?;
        map.serialize_entry("column", &self.location.column)?;
        map.end()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loc = &self.location;
        write!(
            f,
            "{}:{}:{}: {}: {}",
            loc.path.display(),
            loc.line.unwrap_or(1),
            loc.column.unwrap_or(1),
            self.severity,
            self.message
        )
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |p| &before[p + 1..])
        .chars()
        .count()
        + 1;
    (line as u32, col as u32)
}

#[cfg(test)]
mod line_col_tests {
    #[test]
    fn line_col_counts_chars() {
        assert_eq!(super::line_col("ab\ncé\u{fdd0}", 6), (2, 3));
        assert_eq!(super::line_col("x", 0), (1, 1));
    }
}
