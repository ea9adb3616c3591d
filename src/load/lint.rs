//! Lint: what a template gets wrong that only the whole registry shows.
//! Every compiled source goes through Jinja's compiler (a syntax error is
//! an error at its line); a variable read but neither declared nor set is
//! an error (a warning in Prompty's non-strict dialect, where it renders
//! empty); a literal include, import or parent must resolve; a declared
//! parameter that nothing reads (the template, its parent, its static
//! includes) is a warning.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use minijinja::Environment;

use super::inherit::Inherited;
use super::{CHECKED, Parsed};
use crate::body;
use crate::error::{Diagnostic, Error, ErrorKind, Location, Severity, line_col};
use crate::registry::{Entry, Index, exact_ref};
use crate::template::FileForm;

/// Lints a template root: every problem [`Registry::load`] would report,
/// plus warnings, sorted by file and line.
///
/// # Errors
/// [`ErrorKind::Io`] when the root cannot be read at all.
pub fn lint(dir: impl AsRef<Path>) -> Result<Vec<Diagnostic>, Error> {
    let dir = dir.as_ref();
    let analysis = super::analyze(super::Source::Dir(dir), &super::LoadOptions::new())?;
    let mut out: Vec<Diagnostic> = analysis
        .errors
        .iter()
        .flat_map(|e| e.problems())
        .map(|e| Diagnostic::from_error(e, dir))
        .chain(analysis.warnings.into_iter().map(Diagnostic::for_lint))
        .collect();
    out.sort_by(|a, b| (a.location(), a.severity()).cmp(&(b.location(), b.severity())));
    out.dedup();
    Ok(out)
}

/// Compiles every entry's Jinja and lints it (on all cores); findings are
/// merged in order.
pub(crate) fn lint_all(
    env: &Environment<'static>,
    index: &Index,
    parsed: &Parsed,
    inherited: &Inherited,
    root: &Path,
    errors: &mut Vec<Error>,
    warnings: &mut Vec<Diagnostic>,
) {
    let sources = &parsed.sources;
    let resolved = &inherited.resolved;
    // Templates whose files had errors already: an include of one says
    // so, rather than that no such template exists.
    let failed_names: HashSet<String> = errors
        .iter()
        .filter_map(|e| e.location())
        .filter_map(|l| {
            let rel = l.path().strip_prefix(root).unwrap_or(l.path());
            super::parse::classify(
                &rel.to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/"),
            )
            .map(|(name, _, _)| name)
        })
        .collect();
    // Compile every template and lint its variables.
    let mut broken = HashSet::new();
    let all: Vec<&Arc<Entry>> = index.entries().collect();
    let checked = crate::par::map(&all, |entry| {
        let t = &entry.template;
        let name = exact_ref(&t.name, &t.version);
        check_jinja(env, &name, &entry.source)
            .err()
            .map(|e| (name, e))
    });
    for (name, e) in checked.into_iter().flatten() {
        errors.push(crate::jinja::jinja_error(&e, index));
        broken.insert(name);
    }
    // Lint each template on all cores; findings are merged in order.
    let findings = crate::par::map(&all, |entry| {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let t = &entry.template;
        let name = exact_ref(&t.name, &t.version);
        let key = (t.name.clone(), t.version.clone());
        let (Some(src), Some(Some(res))) = (sources.get(&key), resolved.get(&key)) else {
            return (errors, warnings);
        };
        if broken.contains(&name) {
            return (errors, warnings);
        }
        let declared: HashSet<&str> = t.parameters.iter().map(|p| p.name.as_str()).collect();
        let own = own_variables(env, &name, &entry.source);
        let mut undeclared: Vec<&String> = own
            .iter()
            .filter(|v| !declared.contains(v.as_str()) && !BUILTIN_NAMES.contains(&v.as_str()))
            .collect();
        undeclared.sort();
        for var in undeclared {
            let location = find_use(&entry.source, var)
                .map(|(l, c)| {
                    let column = match &src.manifest_text {
                        // The generated source keeps the file's lines, not
                        // its columns: find the use on the file's line.
                        Some(text) => manifest_column(text, l, var),
                        None => Some(c),
                    };
                    Location::at(&src.path, l, column)
                })
                .unwrap_or_else(|| Location::file(&src.path));
            let message =
                format!("`{var}` is used but is neither a parameter nor set in the template");
            match entry.dialect.undeclared {
                Severity::Error => {
                    errors.push(Error::new(ErrorKind::Lint, message).with_location(location));
                }
                // The dialect renders an undeclared variable empty.
                Severity::Warning => warnings.push(Diagnostic::new(
                    Severity::Warning,
                    location,
                    format!("{message} (it renders empty)"),
                )),
            }
        }
        // Includes named when loading must resolve: one of a list (the
        // first that exists renders), and none under `ignore missing`.
        // A computed one is noted: the hash covers what it may name.
        for r in super::targets::tag_refs(&entry.source).iter() {
            let (l, c) = line_col(&entry.source, r.offset);
            let at = Location::at(&src.path, l, (entry.form == FileForm::Body).then_some(c));
            let names = match &r.target {
                super::targets::Target::Names(names) => names,
                super::targets::Target::Computed { prefix } => {
                    let which = if prefix.is_empty() {
                        "every template".to_owned()
                    } else {
                        format!("every template whose name starts with `{prefix}`")
                    };
                    warnings.push(Diagnostic::new(
                        Severity::Warning,
                        at,
                        format!(
                            "this include names its template at render time, so the content hash covers {which} (any may be included): a change to one changes this template's hash; name the template literally to narrow it"
                        ),
                    ));
                    continue;
                }
            };
            if r.ignore_missing || names.iter().any(|n| index.resolve(n).is_ok()) {
                continue;
            }
            let Some(target) = names.first() else {
                continue;
            };
            let Err(e) = index.resolve(target) else {
                continue;
            };
            let message = match crate::reference::Reference::parse(target) {
                Ok(r) if failed_names.contains(r.name()) => format!(
                    "`{target}`: `{}` did not load (see the errors of its file)",
                    r.name()
                ),
                _ if names.len() > 1 => format!(
                    "none of {} resolves: {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    e.message()
                ),
                _ => e.message().to_owned(),
            };
            errors.push(Error::new(e.kind(), message).with_location(at));
        }
        // Method calls the engine has no method for.
        for (offset, message) in unknown_methods(&entry.source, &ancestor_aliases(entry, index)) {
            let (l, c) = line_col(&entry.source, offset);
            errors.push(
                Error::new(ErrorKind::Lint, message).with_location(Location::at(
                    &src.path,
                    l,
                    (entry.form == FileForm::Body).then_some(c),
                )),
            );
        }
        // Unused parameters (only those this file declares).
        let mut used_cache = HashMap::new();
        let used = used_variables(env, index, &name, &mut used_cache, 0).unwrap_or_default();
        let spliced: HashSet<String> = static_splices(&entry.source);
        for (pname, at) in &res.own_params {
            if !used.contains(pname) && !spliced.contains(pname) {
                warnings.push(Diagnostic::new(
                    Severity::Warning,
                    at.clone(),
                    format!("parameter `{pname}` is declared but never used"),
                ));
            }
        }
        declared_answer(src, t, &mut warnings);
        warnings.extend(super::static_prefix::check(entry, index, &src.path));
        (errors, warnings)
    });
    for (mut e, mut w) in findings {
        errors.append(&mut e);
        warnings.append(&mut w);
    }
    warnings.extend(case_collisions(
        sources.values().map(|s| (s.name.as_str(), &s.path)),
    ));
}

/// Lint of what a file declares about the answer: keywords of its output
/// schema and tool parameters that the model's provider does not enforce
/// in strict mode (promptbook still validates them), and a hand-written
/// JSON Schema `response_format`, `tools` or `tool_choice` in
/// `model.parameters`.
fn declared_answer(src: &super::parse::SourceFile, t: &crate::Template, out: &mut Vec<Diagnostic>) {
    let model = t.model();
    let strict = crate::strict::Strict::of(
        model.and_then(|m| m.provider.as_deref()),
        model.and_then(|m| m.name.as_deref()),
    );
    let at = |pointer: &str| {
        if pointer.is_empty() {
            String::new()
        } else {
            format!(" at `{pointer}`")
        }
    };
    let not_enforced = |what: &str| {
        format!(
            "{what} is not enforced by {}'s strict mode: the model may break it (promptbook still validates the answer, and `output_retries` can ask again)",
            strict.name()
        )
    };
    if let (Some(own), Some(schema)) = (&src.manifest.output, t.output_schema()) {
        if let Some((pointer, what)) = crate::strict::inexpressible(schema, strict) {
            out.push(Diagnostic::new(
                Severity::Warning,
                src.at_span(own),
                format!(
                    "output schema{}: {what} has no form in {}'s strict mode, so the schema is sent {}; the model may not follow it (promptbook still validates the answer)",
                    at(&pointer),
                    strict.name(),
                    match strict {
                        crate::strict::Strict::OpenAi => "without strict mode",
                        crate::strict::Strict::Anthropic => "as an instruction",
                    }
                ),
            ));
        }
        for (pointer, what) in crate::strict::unenforced(schema, strict) {
            out.push(Diagnostic::new(
                Severity::Warning,
                src.at_span(own),
                format!("output schema{}: {}", at(&pointer), not_enforced(&what)),
            ));
        }
    }
    if let Some(own) = &src.manifest.tools {
        for tool in t.tools() {
            for (pointer, what) in crate::strict::unenforced(&tool.parameters, strict) {
                out.push(Diagnostic::new(
                    Severity::Warning,
                    src.at_span(own),
                    format!(
                        "tool `{}` parameters{}: {}",
                        tool.name,
                        at(&pointer),
                        not_enforced(&what)
                    ),
                ));
            }
        }
    }
    if let Some(own) = &src.manifest.model
        && let Some(params) = own.value.get("parameters")
    {
        for (key, declared) in [
            ("response_format", "output:"),
            ("tools", "tools:"),
            ("tool_choice", "tool_choice:"),
        ] {
            // JSON mode without a schema (`{type: json_object}`) has no
            // declared equivalent: only a hand-written schema is flagged.
            let hand_written = match params.get(key) {
                Some(v) if key == "response_format" => {
                    v.get("type").and_then(serde_json::Value::as_str) == Some("json_schema")
                }
                Some(_) => true,
                None => false,
            };
            if hand_written {
                out.push(Diagnostic::new(
                    Severity::Warning,
                    src.at_span(own),
                    format!(
                        "`model.parameters.{key}` is passed through as written{}; declare `{declared}` instead: one form for both providers, and the answer validated",
                        if key == "response_format" { " (and dropped for Anthropic)" } else { "" }
                    ),
                ));
            }
        }
    }
}

/// Template names that differ only in letter case (`Support/triage` and
/// `support/triage`): distinct here, but their files collide on a
/// case-insensitive file system (macOS and Windows by default), where a
/// checkout keeps one of them. One warning per pair, at the later file.
fn case_collisions<'a>(
    names: impl Iterator<Item = (&'a str, &'a std::path::PathBuf)>,
) -> Vec<Diagnostic> {
    let mut first: HashMap<String, (&str, &std::path::PathBuf)> = HashMap::new();
    let mut out = Vec::new();
    let mut reported = HashSet::new();
    let mut all: Vec<(&str, &std::path::PathBuf)> = names.collect();
    all.sort();
    for (name, path) in all {
        match first.get(&name.to_lowercase()) {
            Some((other, _)) if *other != name => {
                if reported.insert((other.to_string(), name.to_owned())) {
                    out.push(Diagnostic::new(
                        Severity::Warning,
                        Location::file(path),
                        format!(
                            "template `{name}` differs from `{other}` only in letter case: on a case-insensitive file system (macOS, Windows) their files collide; rename one"
                        ),
                    ));
                }
            }
            Some(_) => {}
            None => {
                first.insert(name.to_lowercase(), (name, path));
            }
        }
    }
    out
}

/// Compiles a template's Jinja source and returns the variables it reads
/// without setting them; memoised by source, since neither depends on
/// anything else.
pub(crate) fn check_jinja(
    env: &Environment<'static>,
    name: &str,
    source: &str,
) -> Result<Arc<HashSet<String>>, minijinja::Error> {
    let key = crate::memo::key(&[source.as_bytes()]);
    if let Some(vars) = CHECKED.get(key) {
        return Ok(vars);
    }
    let vars = Arc::new(env.get_template(name)?.undeclared_variables(false));
    CHECKED.put(key, vars.clone());
    Ok(vars)
}

/// Names that are not template variables: globals, and the names Jinja
/// defines inside loops, macros and blocks.
const BUILTIN_NAMES: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "loop",
    "self",
    "super",
    "caller",
    "varargs",
    "kwargs",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
];

/// Variables a compiled template reads without setting them, with those
/// that name what it includes (`{% include "tones/" ~ tone %}`), which
/// minijinja's `undeclared_variables` does not report.
fn own_variables(env: &Environment<'static>, name: &str, source: &str) -> HashSet<String> {
    let mut vars = check_jinja(env, name, source)
        .map(|v| HashSet::clone(&v))
        .unwrap_or_default();
    // A computed include's variables, unless the template sets them.
    let targets = super::targets::target_variables(source);
    if !targets.is_empty() {
        let assigned = crate::lex::assigned_names(source);
        vars.extend(targets.into_iter().filter(|v| !assigned.contains(v)));
    }
    vars
}

/// Variables read by a template, its parent and its static includes.
fn used_variables(
    env: &Environment<'static>,
    index: &Index,
    name: &str,
    cache: &mut HashMap<String, Option<HashSet<String>>>,
    depth: usize,
) -> Option<HashSet<String>> {
    if let Some(hit) = cache.get(name) {
        return hit.clone();
    }
    if depth > 32 {
        return None;
    }
    cache.insert(name.to_owned(), None); // cycle guard
    let entry = index.resolve(name).ok()?;
    let mut used = own_variables(env, name, &entry.source);
    let mut targets: Vec<String> = super::targets::static_refs(&entry.source)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    if let Some(parent) = &entry.template.extends
        && let Some((n, v)) = parent.split_once('@')
    {
        targets.push(exact_ref(n, &v));
    }
    for target in targets {
        if let Some(more) = used_variables(env, index, &target, cache, depth + 1) {
            used.extend(more);
        }
    }
    cache.insert(name.to_owned(), Some(used.clone()));
    Some(used)
}

/// The `{% import ... as m %}` aliases of a template and its ancestors:
/// a dotted call on one is a macro call.
fn ancestor_aliases(entry: &Entry, index: &Index) -> HashSet<String> {
    let mut aliases = crate::lex::import_aliases(&entry.source);
    let mut parent = entry.template.extends.clone();
    let mut seen = 0;
    while let Some(id) = parent {
        let Ok(p) = index.resolve(&id) else { break };
        aliases.extend(crate::lex::import_aliases(&p.source));
        parent = p.template.extends.clone();
        seen += 1;
        if seen > 64 {
            break;
        }
    }
    aliases
}

/// minijinja's built-in filters (minijinja 3.1, `builtins` feature), to
/// point a method that does not exist at the filter that does.
const BUILTIN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "count",
    "default",
    "dictsort",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
];

/// `(offset, message)` for each `x.name(...)` whose `name` is no method the
/// engine has ([`crate::jinja::METHODS`]), unless `x` is `loop`, `self`,
/// or an import alias (a macro call). Such a call fails every render that
/// reaches it.
fn unknown_methods(source: &str, aliases: &HashSet<String>) -> Vec<(usize, String)> {
    let known = || {
        crate::jinja::METHODS
            .iter()
            .flat_map(|(_, m)| m.iter().copied())
    };
    crate::lex::method_calls(source)
        .into_iter()
        .filter(|call| match call.root.as_deref() {
            Some("self") => false,
            Some("loop") => !crate::jinja::LOOP_METHODS.contains(&call.method.as_str()),
            Some(root) => !aliases.contains(root),
            None => true,
        })
        .filter(|call| !known().any(|m| m == call.method))
        .map(|call| {
            let hint = if BUILTIN_FILTERS.contains(&call.method.as_str()) {
                format!(" (the filter `|{}` does this)", call.method)
            } else {
                let methods = known().map(|m| (m, format!("`.{m}()`")));
                let filters = BUILTIN_FILTERS
                    .iter()
                    .map(|f| (*f, format!("the filter `|{f}`")));
                methods
                    .chain(filters)
                    .map(|(name, shown)| (strsim::jaro_winkler(name, &call.method), shown))
                    .filter(|(score, _)| *score > 0.85)
                    // The first best: a method before a filter on a tie.
                    .fold(None::<(f64, String)>, |best, (score, shown)| match best {
                        Some((b, _)) if b >= score => best,
                        _ => Some((score, shown)),
                    })
                    .map(|(_, shown)| format!(" (did you mean {shown}?)"))
                    .unwrap_or_default()
            };
            let lists: Vec<String> = crate::jinja::METHODS
                .iter()
                .map(|(kind, m)| format!("{kind}: {}", m.join(", ")))
                .collect();
            (
                call.offset,
                format!(
                    "`.{}()` is not a method the engine has{hint}, so every render that reaches \
                     it fails; the methods are {}",
                    call.method,
                    lists.join("; "),
                ),
            )
        })
        .collect()
}

/// Parameters spliced by markers in a compiled source.
fn static_splices(source: &str) -> HashSet<String> {
    body::spliced_params(source)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The column of `var`'s first use inside a Jinja tag on `line` of a
/// manifest's text.
fn manifest_column(text: &str, line: u32, var: &str) -> Option<u32> {
    let line_text = text
        .split('\n')
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    find_use(line_text, var).map(|(_, c)| c)
}

/// First line and column where `var` appears inside a Jinja tag.
fn find_use(source: &str, var: &str) -> Option<(u32, u32)> {
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(p) = source[from..].find(var) {
        let i = from + p;
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + var.len()).copied();
        let word = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
        let in_tag = {
            let open = source[..i].rfind("{{").max(source[..i].rfind("{%"));
            let close = source[..i].rfind("}}").max(source[..i].rfind("%}"));
            open.is_some() && open > close
        };
        if !word(before) && !word(after) && before != Some(b'.') && in_tag {
            return Some(line_col(source, i));
        }
        from = i + var.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_differ_only_in_case_are_warned_about_once() {
        let (a, b, c) = (
            std::path::PathBuf::from("Support/triage.prompt.yaml"),
            std::path::PathBuf::from("support/triage.prompt.yaml"),
            std::path::PathBuf::from("support/triage@2.prompt.yaml"),
        );
        let found = case_collisions(
            [
                ("Support/triage", &a),
                ("support/triage", &b),
                ("support/triage", &c),
            ]
            .into_iter(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].to_string().contains("only in letter case"),
            "{}",
            found[0]
        );
        assert!(case_collisions([("a", &a), ("b", &b)].into_iter()).is_empty());
    }
}
