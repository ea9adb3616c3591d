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
        .chain(analysis.warnings)
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
        // Static includes must resolve.
        for (target, offset) in static_refs(&entry.source) {
            if let Err(e) = index.resolve(&target) {
                let (l, c) = line_col(&entry.source, offset);
                let message = match crate::reference::Reference::parse(&target) {
                    Ok(r) if failed_names.contains(r.name()) => format!(
                        "`{target}`: `{}` did not load (see the errors of its file)",
                        r.name()
                    ),
                    _ => e.message().to_owned(),
                };
                errors.push(Error::new(e.kind(), message).with_location(Location::at(
                    &src.path,
                    l,
                    (entry.form == FileForm::Body).then_some(c),
                )));
            }
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
                        "`model.parameters.{key}` is passed through as written (Anthropic's wire drops `response_format`); declare `{declared}` instead: one form for both providers, and the answer validated"
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
    vars.extend(target_variables(source));
    vars
}

/// The names read by the template expressions of `{% include %}`,
/// `{% import %}`, `{% from %}` and `{% extends %}` tags: identifiers
/// outside strings, not after a `.`, that are not Jinja's operators.
fn target_variables(source: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut rest = 0;
    while let Some(p) = source[rest..].find("{%") {
        let start = rest + p + 2;
        let end = source[start..]
            .find("%}")
            .map_or(source.len(), |e| start + e);
        let inner = source[start..end]
            .trim_matches(['-', '+', '~'])
            .trim_start();
        let keyword_len = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        if matches!(
            &inner[..keyword_len],
            "include" | "import" | "from" | "extends"
        ) {
            let expr = target_expression(&inner[keyword_len..]);
            let b = expr.as_bytes();
            let mut word: Option<(usize, usize)> = None; // (start, end)
            let mut finish = |w: (usize, usize)| {
                let text = &expr[w.0..w.1];
                let after_dot = w.0 > 0 && b[w.0 - 1] == b'.';
                if !after_dot
                    && !matches!(text, "and" | "or" | "not" | "in" | "is" | "if" | "else")
                    && !BUILTIN_NAMES.contains(&text)
                {
                    out.insert(text.to_owned());
                }
            };
            for (i, c, _) in crate::lex::unquoted(b) {
                let ident = c.is_ascii_alphanumeric() || c == b'_';
                match word {
                    Some((w, e)) if ident && e == i => word = Some((w, i + 1)),
                    Some(w) => {
                        finish(w);
                        word = (ident && !c.is_ascii_digit()).then_some((i, i + 1));
                    }
                    None => word = (ident && !c.is_ascii_digit()).then_some((i, i + 1)),
                }
            }
            if let Some(w) = word {
                finish(w);
            }
        }
        rest = end;
    }
    out
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
    let mut targets: Vec<String> = static_refs(&entry.source)
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

/// `(reference, offset)` of every template name an `{% include %}`,
/// `{% import %}`, `{% from %}` or `{% extends %}` tag names literally:
/// a string (`"x"`, `'x'`), in parentheses or not, or each string of a
/// list or tuple of strings (`include ["a", "b"]` tries each in turn). A
/// name computed at render time (`"tones/" ~ tone`, a variable) is not
/// literal and not given. The offset is the tag's.
pub(crate) fn static_refs(source: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    // Statement tags as the engine reads them: not inside a comment, an
    // expression's string or a `{% raw %}` block.
    for token in crate::lex::tokenize(source) {
        if token.kind != crate::lex::Tok::Stmt {
            continue;
        }
        let tag = &source[token.start..token.end];
        let inner = tag[2..]
            .strip_suffix("%}")
            .unwrap_or(&tag[2..])
            .trim_start_matches(['-', '+', '~'])
            .trim_end_matches(['-', '+', '~'])
            .trim_start();
        let keyword_len = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let keyword = &inner[..keyword_len];
        if matches!(keyword, "include" | "import" | "from" | "extends") {
            let expr = target_expression(&inner[keyword_len..]);
            for name in literal_names(expr) {
                out.push((name, token.start));
            }
        }
    }
    out
}

/// The template expression at the start of a tag's arguments: up to the
/// first top-level `ignore`, `with`, `without`, `as` or `import` word.
fn target_expression(args: &str) -> &str {
    let b = args.as_bytes();
    let mut cut = b.len();
    for (i, _, depth) in crate::lex::unquoted(b) {
        if depth != 0 || i == 0 {
            continue;
        }
        let before = b[i - 1];
        if !(before.is_ascii_whitespace() || matches!(before, b'"' | b'\'' | b')' | b']')) {
            continue;
        }
        let word_end = args[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(args.len(), |e| i + e);
        if matches!(
            &args[i..word_end],
            "ignore" | "with" | "without" | "as" | "import"
        ) {
            cut = i;
            break;
        }
    }
    args[..cut].trim()
}

/// The names an expression gives without any variable: a string, or a
/// list or tuple of strings, built from string literals alone (with `~`,
/// `+` and parentheses between them). The engine itself evaluates it, so
/// escapes (`"\u005e"`) and concatenations (`"a" ~ "@^1"`) read as at
/// render time. Empty for anything that names a variable, a function or a
/// filter: a name known only at render time.
fn literal_names(expr: &str) -> Vec<String> {
    use minijinja::value::ValueKind;
    let b = expr.as_bytes();
    let constant = !expr.trim().is_empty()
        && crate::lex::unquoted(b)
            .all(|(_, c, _)| c.is_ascii_whitespace() || b"~+()[],".contains(&c));
    if !constant {
        return Vec::new();
    }
    static ENGINE: std::sync::LazyLock<minijinja::Environment<'static>> =
        std::sync::LazyLock::new(|| {
            let mut env = minijinja::Environment::empty();
            // Literals only: the work is bounded by the source's length.
            env.set_fuel(Some(100_000));
            env
        });
    let Ok(value) = ENGINE
        .compile_expression(expr)
        .and_then(|e| e.eval(minijinja::context! {}))
    else {
        return Vec::new();
    };
    let name = |v: &minijinja::Value| v.as_str().map(str::to_owned);
    match value.kind() {
        ValueKind::String => name(&value).into_iter().collect(),
        ValueKind::Seq => {
            let Ok(items) = value.try_iter() else {
                return Vec::new();
            };
            items
                .map(|v| name(&v))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
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

    #[test]
    fn static_refs_finds_literal_names_and_survives_unclosed_tags() {
        let src = "{% include \"a@^1\" %}{%- import 'm' as m -%}{% from \"f\" import x %}{% include var %}";
        let refs: Vec<String> = static_refs(src).into_iter().map(|(r, _)| r).collect();
        assert_eq!(refs, ["a@^1", "m", "f"]);
        assert_eq!(static_refs("{% include \"x"), []);
        // Not a name alone: nothing (and no panic on a multi-byte tail).
        assert_eq!(static_refs("{% include \"x\" 你"), []);
        assert_eq!(
            static_refs("{% include \"x\" ignore missing 你"),
            [("x".to_owned(), 0)]
        );
        assert_eq!(static_refs("{%"), []);
        let names =
            |src: &str| -> Vec<String> { static_refs(src).into_iter().map(|(r, _)| r).collect() };
        // Every literal form Jinja accepts; no computed one.
        assert_eq!(names("{%include\"p@^1\"%}"), ["p@^1"]);
        assert_eq!(names("{% include (\"p\") %}"), ["p"]);
        assert_eq!(names("{% include ((\"p\")) ignore missing %}"), ["p"]);
        assert_eq!(names("{% include [\"a\", 'b',] %}"), ["a", "b"]);
        assert_eq!(
            names("{% include (\"a\", \"b\") with context %}"),
            ["a", "b"]
        );
        assert_eq!(names("{% from\"m\"import f %}"), ["m"]);
        assert_eq!(names("{% import 'm' as m %}"), ["m"]);
        assert_eq!(names("{%- extends \"base\" -%}"), ["base"]);
        assert_eq!(names("{% include \"a\\\"b\" %}"), ["a\"b"]);
        // Escapes and concatenations read as the engine reads them.
        assert_eq!(names("{% include \"p@\\u005e1\" %}"), ["p@^1"]);
        assert_eq!(names("{% include \"p\" ~ '@^1' %}"), ["p@^1"]);
        assert_eq!(names("{% include (\"p\" ~ \"@\") + \"1\" %}"), ["p@1"]);
        // Tags that are not tags: in a comment, a string, a raw block.
        assert_eq!(
            names("{# {% #}{% include \"a\" %}{{ \"{%\" }}{% include 'b' %}"),
            ["a", "b"]
        );
        assert_eq!(
            names("{% raw %}{% include \"no\" %}{% endraw %}{# {% include \"no\" %} #}"),
            Vec::<String>::new()
        );
        assert!(names("{% include \"tones/\" ~ tone %}").is_empty());
        assert!(names("{% include \"a\" | lower %}").is_empty());
        assert!(names("{% include range(3) %}").is_empty());
        assert!(names("{% include (\"a\") ~ x %}").is_empty());
        assert!(names("{% include [\"a\", x] %}").is_empty());
        assert!(names("{% include name %}").is_empty());
        assert!(names("{% included \"x\" %}").is_empty());
        let vars = target_variables(
            "{% include \"tones/\" ~ tone %}{% include [a.b, 'c' ~ d] %}{% include \"x\" %}",
        );
        let mut vars: Vec<String> = vars.into_iter().collect();
        vars.sort();
        assert_eq!(vars, ["a", "d", "tone"]);
    }
}
