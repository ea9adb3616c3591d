//! The Jinja side of promptbook, shared by loading and rendering: the two
//! environments (native and Prompty rules) over a registry's index, and the
//! mapping of minijinja's errors to our file and line.
//!
//! Both environments resolve includes, imports and parents through the
//! loaded index, never the file system; run under the registry's
//! [`RenderLimits`] (fuel and recursion); and make `namespace()` and
//! attribute assignment safe (see [`crate::namespace`]).

use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};

use crate::dialect::AbsentInput;

use crate::error::{Error, ErrorKind, Location, line_col};
use crate::limits::RenderLimits;
use crate::reference::Reference;
use crate::registry::Index;
use crate::template::FileForm;

/// The methods a render can call on a value: Python's, as
/// minijinja-contrib's `pycompat` layer provides them (its
/// `unknown_method_callback`, minijinja-contrib 3.1), by the kind of value
/// they work on. Anything else is "unknown method" at render time.
pub(crate) const METHODS: &[(&str, &[&str])] = &[
    (
        "strings",
        &[
            "capitalize",
            "count",
            "endswith",
            "find",
            "format",
            "isalnum",
            "isalpha",
            "isascii",
            "isdigit",
            "islower",
            "isnumeric",
            "isspace",
            "isupper",
            "join",
            "lower",
            "lstrip",
            "replace",
            "rfind",
            "rstrip",
            "split",
            "splitlines",
            "startswith",
            "strip",
            "title",
            "upper",
        ],
    ),
    ("maps", &["get", "items", "keys", "values"]),
    ("lists", &["count"]),
];

/// Methods of Jinja's own objects: `loop.cycle(...)`, `loop.changed(...)`.
pub(crate) const LOOP_METHODS: &[&str] = &["changed", "cycle"];

/// The Jinja environment: strict undefined, trim and lstrip blocks, no
/// auto-escaping, templates loaded from the in-memory index.
pub(crate) fn environment(index: Arc<Index>, limits: &RenderLimits) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(limits.fuel);
    env.set_recursion_limit(limits.recursion);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build();
    if let Ok(syntax) = syntax {
        env.set_syntax(syntax);
    }
    env.set_debug(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    crate::namespace::register(&mut env, limits.max_input_depth);
    crate::bounded::register(
        &mut env,
        crate::namespace::max_depth(limits.max_input_depth),
        limits.max_output_bytes,
    );

    // A name that parses but matches nothing is "not found" (so Jinja's
    // `ignore missing` works); a malformed one is an error of its own.
    // Static includes were already checked at load, with version lists.
    env.set_loader(move |name| match index.resolve(name) {
        Ok(entry) => Ok(Some(entry.source.clone())),
        Err(_) if Reference::parse(name).is_ok() => Ok(None),
        Err(e) => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            e.message().to_owned(),
        )),
    });
    env
}

/// Prompty's rendering rules: no `trim_blocks`/`lstrip_blocks`, Jinja2's
/// default undefined (an undefined value prints empty, tests false and
/// iterates as nothing; an attribute or item of one is an error, as in
/// Prompty's runtime), `none` renders empty,
/// booleans render `true`/`false` and a float without a fraction renders as
/// an integer (as Prompty's runtimes print them).
pub(crate) fn prompty_environment(
    index: Arc<Index>,
    limits: &RenderLimits,
) -> Environment<'static> {
    let mut env = environment(index, limits);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    // Prompty keeps the body's trailing newline (a marker on the last line
    // with nothing after it is then an absent message, not an empty one).
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    let budget = limits.max_output_bytes as u64;
    env.set_formatter(move |out, state, value| {
        // A media value prints its marker: that is how it is placed.
        if let Some(marker) = crate::media_input::marker(value) {
            return out.write_str(&marker).map_err(minijinja::Error::from);
        }
        crate::bounded::check_printable(state, value, budget)?;
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        if value.kind() == minijinja::value::ValueKind::Bool {
            let text = if value.is_true() { "true" } else { "false" };
            return out.write_str(text).map_err(minijinja::Error::from);
        }
        if value.kind() == minijinja::value::ValueKind::Number {
            let text = value.to_string();
            if let Some(int) = text.strip_suffix(".0") {
                return out.write_str(int).map_err(minijinja::Error::from);
            }
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

/// Maps a Jinja error to the file and line it comes from.
pub(crate) fn jinja_error(e: &minijinja::Error, index: &Index) -> Error {
    let entry = e.name().and_then(|n| index.resolve(n).ok());
    let mut message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let span = e.range().zip(entry).and_then(|(r, entry)| {
        entry
            .source
            .get(r.clone())
            .map(|snippet| (snippet.to_owned(), r.start))
    });
    if let (Some((snippet, _)), minijinja::ErrorKind::UndefinedError, None) =
        (&span, e.kind(), e.detail())
        && !snippet.is_empty()
        && snippet.len() < 80
    {
        message.push_str(&format!(" (`{snippet}`)"));
    }
    if e.kind() == minijinja::ErrorKind::UndefinedError
        && entry.is_some_and(|en| en.dialect.absent_input == AbsentInput::Undefined)
    {
        message.push_str(
            ": an input that was not passed can be printed (it is empty) or tested (`{% if x %}`), \
             but an attribute or item of it is an error, as in Prompty's runtime; pass it, or \
             test it first",
        );
    }
    let kind = match e.kind() {
        minijinja::ErrorKind::OutOfFuel => {
            message =
                "the render ran out of fuel: it did more work than RenderLimits::fuel allows \
                       (a runaway loop, or strings built too large?)"
                    .to_owned();
            ErrorKind::Limit
        }
        minijinja::ErrorKind::InvalidOperation
            if e.detail().is_some_and(|d| d.contains("recursion limit")) =>
        {
            message = "the render nested macro calls, includes or blocks deeper than \
                       RenderLimits::recursion allows (runaway recursion?)"
                .to_owned();
            ErrorKind::Limit
        }
        // The bounds of `crate::bounded`.
        minijinja::ErrorKind::InvalidOperation
            if e.detail().is_some_and(|d| {
                d.starts_with("a value grew past") || d.starts_with("a value may nest at most")
            }) =>
        {
            ErrorKind::Limit
        }
        _ => ErrorKind::Template,
    };
    let mut err = Error::new(kind, message);
    if let Some(entry) = entry {
        let line = e.line().map(|l| l as u32);
        let column = match (&span, entry.form) {
            (Some((_, start)), FileForm::Body) => Some(line_col(&entry.source, *start).1),
            _ => None,
        };
        err = err.with_location(match line {
            Some(l) => Location::at(&entry.template.path, l, column),
            None => Location::file(&entry.template.path),
        });
    }
    // Errors raised inside an include carry the include's error as source.
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if let Some(inner) = inner.downcast_ref::<minijinja::Error>() {
            return jinja_error(inner, index);
        }
        cause = inner.source();
    }
    err
}
