//! Compiling: each resolved template into a registry [`Entry`], parents
//! first: its Jinja source (a manifest's messages synthesised into a body,
//! role lines and history splices into markers, namespace assignments
//! guarded), its typed `model:` and `context:`, and its compiled input
//! schema, with the defaults it declares checked against it.
//!
//! Compiled sources keep the file's line numbers, so Jinja errors point at
//! the right line of the file.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::inherit::{Inherited, Resolved};
use super::parse::SourceFile;
use super::{ADOPTED, ENTRIES, Key, Parsed};
use crate::body::{self, CompiledBody};
use crate::dialect::{Engine, LeadingText};
use crate::error::{Error, ErrorKind, Location, line_col};
use crate::message::Role;
use crate::registry::{Entry, FastMap, Index, exact_ref};
use crate::schema::{self, InputSchema};
use crate::template::{ContextConfig, FileForm, ModelConfig, Parameter, Template};

/// What compiling one template produced, before it becomes an [`Entry`].
struct Compiled {
    /// The Jinja source: same lines as the file.
    source: String,
    /// Whether a body without role lines is one user message; `None` when
    /// the template only overrides a parent's blocks (it inherits this).
    own_implicit: Option<bool>,
    model: Option<ModelConfig>,
    context: Option<ContextConfig>,
    /// The input schema, compiled; `None` when it did not compile.
    schema: Option<InputSchema>,
    errors: Vec<Error>,
}

/// Compiles one template (no I/O; on any core).
fn compile_one(src: &SourceFile, res: &Resolved) -> Compiled {
    let mut errs = Vec::new();
    let (source, own_implicit) = match src.form {
        FileForm::Manifest => {
            let s = synthesize_manifest(src, res, &mut errs);
            (s, src.manifest.messages.as_ref().map(|_| false))
        }
        FileForm::Body => compile_jinja_body(src, res, &mut errs),
    };
    // Before minijinja ever parses it: a chain it would recurse on too
    // deeply (see `lex::MAX_TAG_OPERATORS`).
    if let Some((offset, n)) = crate::lex::overlong_tag(&source) {
        let (line, column) = crate::error::line_col(&source, offset);
        errs.push(
            Error::new(
                ErrorKind::Limit,
                format!(
                    "this tag chains {n} operators, more than the {} one tag may hold; \
                     split it with `{{% set %}}`",
                    crate::lex::MAX_TAG_OPERATORS
                ),
            )
            .with_location(Location::at(
                &src.path,
                line,
                (src.form == FileForm::Body).then_some(column),
            )),
        );
        return Compiled {
            source,
            own_implicit,
            model: None,
            context: None,
            schema: None,
            errors: errs,
        };
    }
    let source = crate::bounded::guard_bindings(&source);
    let source = match src.dialect.engine {
        Engine::Native => keep_newline_after_includes(&source).into_owned(),
        Engine::Prompty => source.into_owned(),
    };
    let model = res.model.as_ref().and_then(|v| {
        typed::<ModelConfig>(v, "model", src, src.manifest.model.as_ref(), &mut errs)
    });
    let context = res.context.as_ref().and_then(|v| {
        typed::<ContextConfig>(v, "context", src, src.manifest.context.as_ref(), &mut errs)
    });
    // One compile per template: the object schema of its parameters. The
    // defaults it declares are checked against it in one pass; a bad
    // parameter schema is traced back to the parameter only when that
    // compile fails.
    let declares = src.manifest.parameters.is_some();
    let schema = match schema::compile_input(&res.input_schema) {
        Ok(v) => {
            if declares {
                check_defaults(&v.validator, res, &mut errs);
            }
            Some(v)
        }
        Err(msg) => {
            let mut traced = false;
            if declares {
                for (pname, at) in &res.own_params {
                    if let Some(p) = res.parameters.iter().find(|p| p.name == *pname)
                        && let Err(m) = check_parameter(p)
                    {
                        errs.push(Error::new(ErrorKind::Schema, m).with_location(at.clone()));
                        traced = true;
                    }
                }
            }
            if !traced {
                errs.push(
                    Error::new(ErrorKind::Schema, msg).with_location(Location::file(&src.path)),
                );
            }
            None
        }
    };
    Compiled {
        source,
        own_implicit,
        model,
        context,
        schema,
        errors: errs,
    }
}

/// Compiles every resolved template into the index, parents first: the
/// per-template work on all cores (memoised), then, in order, what a
/// template inherits from its compiled parent (`implicit_user`).
pub(crate) fn compile_all(
    parsed: &Parsed,
    inherited: &Inherited,
    errors: &mut Vec<Error>,
) -> Index {
    let sources = &parsed.sources;
    let resolved = &inherited.resolved;
    let mut index = Index::default();
    let mut implicit: FastMap<Key, bool> = FastMap::default();
    let prepare = |key: &Key| Some(compile_one(&sources[key], resolved.get(key)?.as_ref()?));
    let prepared = crate::par::map(&inherited.order, |key| {
        let res = resolved.get(key)?.as_ref()?;
        if ENTRIES.get(res.memo_key).is_some() {
            return None;
        }
        prepare(key)
    });
    for (key, prepared) in inherited.order.iter().zip(prepared) {
        let Some(Some(res)) = resolved.get(key) else {
            continue;
        };
        if let Some(entry) = ENTRIES.get(res.memo_key) {
            implicit.insert(key.clone(), entry.implicit_user);
            index.insert(entry);
            continue;
        }
        // (A memo that filled up meanwhile forgot the entry: do it here.)
        let Some(mut compiled) = prepared.or_else(|| prepare(key)) else {
            continue;
        };
        let src = &sources[key];
        let implicit_user = compiled.own_implicit.unwrap_or_else(|| {
            res.extends
                .as_ref()
                .and_then(|p| implicit.get(p).copied())
                .unwrap_or(false)
        });
        implicit.insert(key.clone(), implicit_user);
        if !compiled.errors.is_empty() {
            errors.append(&mut compiled.errors);
            continue;
        }
        let Some(schema) = compiled.schema else {
            continue;
        };
        let entry = Arc::new(entry(
            key,
            src,
            res,
            schema,
            compiled.source,
            compiled.model,
            compiled.context,
            implicit_user,
        ));
        ENTRIES.put(res.memo_key, entry.clone());
        index.insert(entry);
    }
    index.sort();
    let index = super::stamp::stamp(index, parsed);
    adopt_included_parameters(index, errors)
}

/// A partial's (or an imported macro file's) declared parameters become
/// parameters of every template that includes or imports it, literally
/// and transitively, with their schemas and defaults; the includer's own
/// declaration wins on a clash, and a name the includer sets itself
/// (`{% set %}`, a loop variable, a macro) is not adopted. So a parameter the included text reads is
/// known to the includer: lint passes, inputs are validated, `--var` takes
/// it, and a render does not fail on it being undefined.
fn adopt_included_parameters(index: Index, errors: &mut Vec<Error>) -> Index {
    let entries: Vec<Arc<Entry>> = index.entries().cloned().collect();
    let mut out = Index::default();
    for entry in entries {
        let (params, partials) = included_parameters(&entry, &index, &mut Vec::new());
        // What the includer declares, or sets itself, is not an input.
        let assigned = crate::lex::assigned_names(&entry.source);
        let own: HashSet<&str> = entry
            .template
            .parameters
            .iter()
            .map(|p| p.name.as_str())
            .chain(assigned.iter().map(String::as_str))
            .collect();
        let new: Vec<&Parameter> = params
            .iter()
            .filter(|p| !own.contains(p.name.as_str()))
            .collect();
        if new.is_empty() {
            out.insert(entry);
            continue;
        }
        let key = crate::memo::key(
            &std::iter::once(entry.memo_key.to_le_bytes())
                .chain(partials.iter().map(|k| k.to_le_bytes()))
                .collect::<Vec<_>>()
                .iter()
                .map(|b| &b[..])
                .collect::<Vec<_>>(),
        );
        if let Some(hit) = ADOPTED.get(key) {
            out.insert(hit);
            continue;
        }
        match with_parameters(&entry, &new) {
            Ok(merged) => {
                let merged = Arc::new(merged);
                ADOPTED.put(key, merged.clone());
                out.insert(merged);
            }
            Err(message) => {
                errors.push(
                    Error::new(ErrorKind::Schema, message)
                        .with_location(Location::file(&entry.template.path)),
                );
                out.insert(entry);
            }
        }
    }
    out.sort();
    out
}

/// The parameters of everything `entry` includes or imports (literally,
/// transitively), and the memo keys of those templates; cycles stop.
fn included_parameters(
    entry: &Entry,
    index: &Index,
    stack: &mut Vec<String>,
) -> (Vec<Parameter>, Vec<u128>) {
    let mut params: Vec<Parameter> = Vec::new();
    let mut keys = Vec::new();
    stack.push(entry.id.clone());
    for (target, _) in super::targets::static_refs(&entry.source) {
        let Ok(partial) = index.resolve(&target) else {
            continue;
        };
        if stack.contains(&partial.id) {
            continue;
        }
        keys.push(partial.memo_key);
        let (deeper, deeper_keys) = included_parameters(partial, index, stack);
        keys.extend(deeper_keys);
        // A parent (`{% extends %}`) gave its own parameters already; what
        // its includes declare comes through it.
        let own: &[Parameter] = if entry.template.extends.as_deref() == Some(partial.id.as_str()) {
            &[]
        } else {
            &partial.template.parameters
        };
        for p in own.iter().chain(&deeper) {
            if !params.iter().any(|q| q.name == p.name) {
                params.push(p.clone());
            }
        }
    }
    stack.pop();
    (params, keys)
}

/// `entry` with `more` parameters: in its parameter list, its input schema
/// (generated, or a whole `input_schema` with the properties added), its
/// compiled validator and its defaults.
fn with_parameters(entry: &Entry, more: &[&Parameter]) -> Result<Entry, String> {
    let t = &entry.template;
    let mut parameters: Vec<Parameter> = t.parameters.to_vec();
    parameters.extend(more.iter().map(|p| (*p).clone()));
    let generated = *t.input_schema == schema::object_schema(&t.parameters);
    let input_schema = if generated {
        schema::object_schema(&parameters)
    } else {
        let mut whole = (*t.input_schema).clone();
        for p in more {
            if let Some(props) = whole.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert(p.name.clone(), p.schema.clone());
            }
            if p.required
                && let Some(required) = whole.get_mut("required").and_then(Value::as_array_mut)
            {
                required.push(Value::String(p.name.clone()));
            }
        }
        whole
    };
    let schema = schema::compile_input(&input_schema)?;
    let template = Template {
        parameters: parameters.into(),
        input_schema: Arc::new(input_schema),
        ..t.clone()
    };
    let (defaults, declared) = parameter_values(&template);
    let media = crate::media_input::slots(&template.input_schema).into();
    Ok(Entry {
        media,
        memo_key: entry.memo_key,
        id: entry.id.clone(),
        schema,
        jinja_name: entry.jinja_name.clone(),
        defaults,
        declared,
        messages_hint: std::sync::atomic::AtomicUsize::new(4),
        template,
        source: entry.source.clone(),
        form: entry.form,
        implicit_user: entry.implicit_user,
        dialect: entry.dialect,
    })
}

/// A compiled template as the registry holds it.
#[allow(clippy::too_many_arguments)]
fn entry(
    key: &Key,
    src: &SourceFile,
    res: &Resolved,
    schema: InputSchema,
    source: String,
    model: Option<ModelConfig>,
    context: Option<ContextConfig>,
    implicit_user: bool,
) -> Entry {
    let template = Template {
        name: key.0.clone(),
        version: key.1.clone(),
        path: src.path.clone(),
        description: src.manifest.description.clone(),
        labels: src
            .manifest
            .labels
            .as_ref()
            .map(|l| l.value.clone())
            .unwrap_or_default(),
        extends: res.extends.as_ref().map(|(n, v)| format!("{n}@{v}")),
        parameters: res.parameters.clone(),
        input_schema: res.input_schema.clone(),
        model: model.map(Arc::new),
        context,
        output_schema: res.declared.output.clone(),
        tools: res.declared.tools.clone(),
        tool_choice: res.declared.tool_choice.clone(),
        output_retries: res.declared.output_retries,
        hash: Default::default(),
    };
    let jinja_name = exact_ref(&template.name, &template.version);
    let (defaults, declared) = parameter_values(&template);
    let media = crate::media_input::slots(&template.input_schema).into();
    Entry {
        media,
        memo_key: res.memo_key,
        id: template.id(),
        schema,
        jinja_name,
        defaults,
        declared,
        messages_hint: std::sync::atomic::AtomicUsize::new(4),
        template,
        source,
        form: src.form,
        implicit_user,
        dialect: src.dialect,
    }
}

/// Checks the defaults a template declares against its compiled input
/// schema: one error per parameter whose default breaks its own schema.
fn check_defaults(validator: &jsonschema::Validator, res: &Resolved, errs: &mut Vec<Error>) {
    let mut defaults = serde_json::Map::new();
    for (pname, _) in &res.own_params {
        if let Some(d) = res
            .parameters
            .iter()
            .find(|p| p.name == *pname)
            .and_then(|p| p.default.as_ref())
        {
            defaults.insert(pname.clone(), d.clone());
        }
    }
    if defaults.is_empty() {
        return;
    }
    let instance = Value::Object(defaults);
    let mut reported = HashSet::new();
    for e in validator.iter_errors(&instance) {
        let path = e.instance_path().as_str();
        let mut parts = path.splitn(3, '/').skip(1);
        let Some(name) = parts.next() else { continue }; // `required` at the root
        let Some((_, at)) = res.own_params.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if !reported.insert(name.to_owned()) {
            continue;
        }
        let inner = parts
            .next()
            .map_or_else(String::new, |rest| format!(" at `/{rest}`"));
        errs.push(
            Error::new(
                ErrorKind::Schema,
                format!("the default of `{name}` does not satisfy its own schema{inner}: {e}"),
            )
            .with_location(at.clone()),
        );
    }
}

/// Checks that a declared parameter's schema is valid and that its default
/// satisfies it.
pub(super) fn check_parameter(p: &Parameter) -> Result<(), String> {
    let name = &p.name;
    let validator = schema::compile(&p.schema).map_err(|m| format!("parameter `{name}`: {m}"))?;
    if let Some(d) = &p.default
        && let Some(e) = validator.iter_errors(d).next()
    {
        let at = e.instance_path().as_str();
        let at = if at.is_empty() {
            String::new()
        } else {
            format!(" at `{at}`")
        };
        return Err(format!(
            "the default of `{name}` does not satisfy its own schema{at}: {e}"
        ));
    }
    Ok(())
}

/// "`system:`, `user:`, ... or `developer:`": every role line, from
/// [`Role::ALL`].
fn role_lines() -> String {
    let names: Vec<String> = crate::message::Role::ALL
        .iter()
        .map(|r| format!("`{}:`", r.as_str()))
        .collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Builds the Jinja source of a manifest's `messages:`/`blocks:`, keeping
/// each piece of text on its own line number.
fn synthesize_manifest(src: &SourceFile, resolved: &Resolved, errors: &mut Vec<Error>) -> String {
    let m = &src.manifest;
    let mut out = String::new();
    let mut line = 1u64;
    let pad_to = |out: &mut String, line: &mut u64, target: u64| {
        while *line < target {
            out.push('\n');
            *line += 1;
        }
    };
    let history = resolved.history_params();

    match (&m.messages, &m.blocks, &resolved.extends) {
        (Some(_), Some(b), _) => {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "give either `messages` (replacing the parent's) or `blocks` (overriding its blocks), not both",
                )
                .with_location(src.at_span(b.values().next().unwrap_or(&m.version))),
            );
        }
        (None, Some(_), None) => errors.push(
            Error::new(
                ErrorKind::Syntax,
                "`blocks:` needs `extends:` (blocks override a parent's)",
            )
            .with_location(Location::file(&src.path)),
        ),
        (None, None, None) => errors.push(
            Error::new(
                ErrorKind::Syntax,
                "a manifest needs `messages:` (or `extends:` a parent)",
            )
            .with_location(Location::file(&src.path)),
        ),
        _ => {}
    }

    if let Some(messages) = &m.messages {
        let mut breakpoints = 0;
        let mut seen_history = false;
        for entry in messages {
            let at = src.at_span(entry);
            let e = &entry.value;
            if let Some(ttl) = &e.cache_breakpoint {
                if e.role.is_some() || e.content.is_some() || e.history.is_some() {
                    errors.push(
                        Error::new(
                            ErrorKind::Syntax,
                            "a `cache_breakpoint` entry stands alone between messages: \
                             `- cache_breakpoint: 5m` (or `1h`)",
                        )
                        .with_location(at),
                    );
                    continue;
                }
                let Some(parsed) = crate::cache_breakpoint::CacheTtl::parse(ttl.value.trim())
                else {
                    errors.push(
                        Error::new(
                            ErrorKind::Syntax,
                            format!(
                                "a cache breakpoint's TTL is 5m or 1h (what Anthropic offers), \
                                 not `{}`",
                                ttl.value
                            ),
                        )
                        .with_location(src.at_span(ttl)),
                    );
                    continue;
                };
                breakpoints += 1;
                if breakpoints > crate::cache_breakpoint::MAX_BREAKPOINTS {
                    errors.push(
                        Error::new(
                            ErrorKind::Syntax,
                            format!(
                                "a template may mark at most {} cache breakpoints (Anthropic's \
                                 limit per request); this is one more",
                                crate::cache_breakpoint::MAX_BREAKPOINTS
                            ),
                        )
                        .with_location(at),
                    );
                    continue;
                }
                pad_to(
                    &mut out,
                    &mut line,
                    ttl.referenced.line() + src.span_line_offset,
                );
                out.push_str(&crate::cache_breakpoint::marker(Some(parsed), seen_history));
                continue;
            }
            match (&e.role, &e.content, &e.history) {
                (Some(role), Some(content), None) => {
                    let role_at = src.at_span(role);
                    let Ok(r) = role.value.parse::<Role>() else {
                        errors.push(
                            Error::new(
                                ErrorKind::Syntax,
                                format!(
                                    "unknown role `{}` (expected system, user, assistant or tool)",
                                    role.value
                                ),
                            )
                            .with_location(role_at),
                        );
                        continue;
                    };
                    if let Some(what) = reserved(&content.value, e.name.as_deref()) {
                        errors.push(
                            Error::new(ErrorKind::Syntax, what).with_location(src.at_span(content)),
                        );
                        continue;
                    }
                    if let Some((i, line)) = body::first_role_line(&content.value) {
                        errors.push(
                            Error::new(
                                ErrorKind::Syntax,
                                format!(
                                    "`{line}` inside a manifest message's `content` is text, not \
                                     a new message: add a `- role: ...` entry for it (or, to keep \
                                     it as text, write `{{{{ '{line}' }}}}`)"
                                ),
                            )
                            .with_location(line_in_value(src, content, i, line)),
                        );
                    }
                    if crate::lex::tokenize(&content.value).iter().any(|t| {
                        matches!(t.kind, crate::lex::Tok::Expr | crate::lex::Tok::Stmt)
                            && crate::cache_breakpoint::mentions_call(
                                &content.value[t.start..t.end],
                            )
                    }) {
                        errors.push(
                            Error::new(
                                ErrorKind::Syntax,
                                "in a manifest, a cache breakpoint is a `messages:` entry of its \
                                 own between messages (`- cache_breakpoint: 5m`), not a call in \
                                 `content`",
                            )
                            .with_location(src.at_span(content)),
                        );
                        continue;
                    }
                    let aliases = body::history_aliases(&content.value, &|n| history.contains(n));
                    for tag in crate::lex::tokenize(&content.value)
                        .iter()
                        .filter(|t| t.kind == crate::lex::Tok::Expr)
                        .map(|t| &content.value[t.start..t.end])
                    {
                        if let Some(param) = body::printed_history(tag, &|n| {
                            history.contains(n) || aliases.iter().any(|a| a == n)
                        }) {
                            errors.push(
                                printed_history_error(tag, param)
                                    .with_location(src.at_span(content)),
                            );
                        }
                    }
                    let content_line = content.referenced.line() + src.span_line_offset;
                    pad_to(&mut out, &mut line, content_line);
                    out.push_str(&body::role_marker(r, e.name.as_deref()));
                    out.push_str(&content.value);
                    line += content.value.matches('\n').count() as u64;
                }
                (None, None, Some(h)) => {
                    if !history.contains(h.value.as_str()) {
                        errors.push(
                            Error::new(
                                ErrorKind::Schema,
                                format!(
                                    "`history: {}` needs a parameter `{}` of `type: messages`",
                                    h.value, h.value
                                ),
                            )
                            .with_location(src.at_span(h)),
                        );
                        continue;
                    }
                    pad_to(
                        &mut out,
                        &mut line,
                        h.referenced.line() + src.span_line_offset,
                    );
                    out.push_str(&body::splice_marker(&h.value));
                    seen_history = true;
                }
                _ => errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        "a message is either `{role, content}`, `{history: PARAM}` or \
                         `{cache_breakpoint: 5m}`",
                    )
                    .with_location(at),
                ),
            }
        }
        return out;
    }

    if let Some((pname, pver)) = &resolved.extends {
        out.push_str(&format!("{{% extends {:?} %}}", exact_ref(pname, pver)));
        for (name, text) in m.blocks.iter().flatten() {
            if !crate::reference::is_identifier(name) {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!("block name `{name}` is not an identifier"),
                    )
                    .with_location(src.at_span(text)),
                );
                continue;
            }
            if let Some(what) = reserved(&text.value, None) {
                errors.push(Error::new(ErrorKind::Syntax, what).with_location(src.at_span(text)));
                continue;
            }
            if let Some((i, line)) = body::first_role_line(&text.value) {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!(
                            "`{line}` inside a YAML `blocks:` override is text (a role line starts \
                             a message only in a `.prompt.jinja` body): write the child as a \
                             `.prompt.jinja` file to start messages in a block, or keep it as \
                             text with `{{{{ '{line}' }}}}`"
                        ),
                    )
                    .with_location(line_in_value(src, text, i, line)),
                );
            }
            pad_to(
                &mut out,
                &mut line,
                text.referenced.line() + src.span_line_offset,
            );
            out.push_str(&format!("{{% block {name} %}}"));
            out.push_str(&text.value);
            line += text.value.matches('\n').count() as u64;
            out.push_str("{% endblock %}");
        }
    }
    out
}

/// Where line `i` of a manifest's YAML value is in the file: the value's
/// line plus `i` when the file has `line` there (a block scalar, written
/// line for line), else the value's own place.
fn line_in_value(
    src: &SourceFile,
    value: &serde_saphyr::Spanned<String>,
    i: usize,
    line: &str,
) -> Location {
    let first = value.referenced.line() + src.span_line_offset;
    let at = first + i as u64;
    let written = src.manifest_text.as_deref().and_then(|text| {
        text.lines()
            .nth(usize::try_from(at).ok()?.checked_sub(1)?)
            .map(str::trim)
    });
    if written == Some(line) {
        src.at(at, 0)
    } else {
        src.at_span(value)
    }
}

/// What is wrong when a manifest's text (after YAML's escapes, such as
/// `"\uFDD0"`) or a message name holds a character reserved for role
/// markers.
fn reserved(text: &str, name: Option<&str>) -> Option<String> {
    let bad = [body::MARK_OPEN, body::MARK_CLOSE];
    let c = text
        .chars()
        .chain(name.into_iter().flat_map(str::chars))
        .find(|c| bad.contains(c))?;
    Some(format!(
        "the value holds the reserved character U+{:04X} (written as a YAML escape?); \
         role boundaries come from `role:` entries only",
        c as u32
    ))
}

/// `{% include %}` tags that end in a plain `%}` end in `+%}` instead: with
/// `trim_blocks` on, the newline after an include would be eaten, gluing
/// the next line onto the included text; an include alone on its line
/// means its text as lines. `-%}` (trim) and `+%}` (keep) as written stay.
/// The tag grows by one character: later columns on its line shift by one.
fn keep_newline_after_includes(source: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for t in crate::lex::tokenize(source) {
        if t.kind != crate::lex::Tok::Stmt {
            continue;
        }
        let tag = &source[t.start..t.end];
        if crate::lex::stmt_keyword(tag) != "include" || !tag.ends_with("%}") {
            continue;
        }
        let before = tag[..tag.len() - 2].chars().next_back();
        if matches!(before, Some('-' | '+' | '~')) {
            continue;
        }
        out.push_str(&source[copied..t.end - 2]);
        out.push_str("+%}");
        copied = t.end;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(source);
    }
    out.push_str(&source[copied..]);
    std::borrow::Cow::Owned(out)
}

/// The error for an expression that prints a `messages` parameter as text.
fn printed_history_error(tag: &str, param: &str) -> Error {
    Error::new(
        ErrorKind::Lint,
        format!(
            "`{tag}` prints the message list `{param}` as text into this message; splice it \
             as messages with `{{{{ {param} }}}}` alone on its own line (in a manifest: \
             `- history: {param}`), or loop over it: `{{% for m in {param} %}}{{{{ m.role }}}}: \
             {{{{ m.content }}}}{{% endfor %}}`"
        ),
    )
}

/// The error for a line that prints a role from data; see
/// [`crate::role_loop`].
fn role_print_error(
    print: &crate::role_loop::RolePrint,
    grammar: body::Grammar,
    is_param: &dyn Fn(&str) -> bool,
) -> Error {
    let line = &print.line;
    // The loop's list can be spliced as it is only when it is a parameter
    // the loop takes whole; otherwise the caller passes the history it
    // means (filtered, sliced) as an input of its own.
    let whole = print.whole && print.list.as_deref().is_some_and(is_param);
    let list = match &print.list {
        Some(list) if whole => list.clone(),
        _ => "history".to_owned(),
    };
    let kind = match grammar {
        body::Grammar::Prompty => "an input of `kind: thread` (v1: `type: thread`)",
        body::Grammar::Native => "a parameter of `type: messages`",
    };
    let declare = if whole {
        format!("declare `{list}` as {kind}")
    } else {
        format!(
            "pass the turns this loop sends (filtered or sliced by the caller as it needs) as {kind} \
             named, say, `{list}`,"
        )
    };
    let convert = if whole && grammar == body::Grammar::Prompty {
        "; `promptbook convert` rewrites a loop of this shape for you"
    } else {
        ""
    };
    Error::new(
        ErrorKind::Syntax,
        format!(
            "`{line}` prints a role line from data: role lines here are only those written in \
             the template, so this would render the whole history as text inside the message \
             before it (Prompty 2.1.0 refuses it unless its strict check is off: \"Nonce mismatch\"). To send the history \
             as messages, {declare} and replace the loop with `{{{{ {list} }}}}` alone on its \
             line{convert}"
        ),
    )
}

/// A template's parameter defaults and declared names as the values a
/// render reads them as ([`Entry::defaults`], [`Entry::declared`]).
#[allow(clippy::type_complexity)]
fn parameter_values(
    template: &Template,
) -> (
    Vec<(minijinja::Value, minijinja::Value)>,
    Vec<minijinja::Value>,
) {
    let defaults = template
        .parameters
        .iter()
        .filter_map(|p| {
            let d = p.default.as_ref()?;
            Some((
                minijinja::Value::from(p.name.as_str()),
                crate::input::from_json(d),
            ))
        })
        .collect();
    let declared = template
        .parameters
        .iter()
        .map(|p| minijinja::Value::from(p.name.as_str()))
        .collect();
    (defaults, declared)
}

/// Builds the Jinja source of a `.prompt.jinja` body.
/// Also returns whether the body has no role line (its text is one user
/// message), or `None` when it only overrides a parent's blocks.
fn compile_jinja_body(
    src: &SourceFile,
    resolved: &Resolved,
    errors: &mut Vec<Error>,
) -> (String, Option<bool>) {
    let Some(b) = &src.body else {
        return (String::new(), Some(false));
    };
    let history = resolved.history_params();
    let dialect = src.dialect;
    let compiled: CompiledBody =
        body::compile_body_as(&b.text, &|n| history.contains(n), dialect.grammar);
    let at = |offset: usize| {
        let (l, c) = line_col(&b.text, offset);
        Location::at(&src.path, l + b.first_line - 1, Some(c))
    };
    for (pos, tag, param) in &compiled.printed_histories {
        errors.push(printed_history_error(tag, param).with_location(at(*pos)));
    }
    for (pos, why) in &compiled.breakpoint_errors {
        errors.push(Error::new(ErrorKind::Syntax, why.clone()).with_location(at(*pos)));
    }
    if let Some(&fifth) = compiled
        .breakpoints
        .get(crate::cache_breakpoint::MAX_BREAKPOINTS)
    {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                format!(
                    "a template may mark at most {} cache breakpoints (Anthropic's limit per \
                     request); this is one more",
                    crate::cache_breakpoint::MAX_BREAKPOINTS
                ),
            )
            .with_location(at(fifth)),
        );
    }
    let is_param = |n: &str| resolved.parameters.iter().any(|p| p.name == n);
    for print in &compiled.role_prints {
        errors
            .push(role_print_error(print, dialect.grammar, &is_param).with_location(at(print.at)));
    }
    for (pos, line, meant) in &compiled.near_misses {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                format!(
                    "`{shown}` looks like a role line but is text here: a role line is \
                     lowercase, spelt as the role, alone on its line, with one ASCII colon and \
                     nothing invisible: write `{meant}` (or, to keep it as text, \
                     `{{{{ '{line}' }}}}`)",
                    shown = line.escape_default()
                ),
            )
            .with_location(at(*pos)),
        );
    }
    if let Some(pos) = compiled.extends_tag {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                "write `extends: NAME@REQ` in the front matter instead of `{% extends %}`",
            )
            .with_location(at(pos)),
        );
    }
    // Line 1 of the file (`---`) is free: the prefix goes there, so every
    // body line keeps its number.
    let mut out = String::new();
    let standalone = resolved.extends.is_none() || compiled.roles_outside_blocks;
    let implicit_user = standalone
        .then_some(!compiled.has_role_lines && dialect.body_without_roles == Some(Role::User));
    if dialect.leading_text != LeadingText::Error {
        // Text before the first marker is a message of its own.
    } else if standalone {
        if let Some(pos) = compiled.text_before_first_role {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    format!(
                        "text before the first role line ({} alone on a line)",
                        role_lines()
                    ),
                )
                .with_location(at(pos)),
            );
        }
    } else if let Some((pname, pver)) = &resolved.extends {
        if let Some(pos) = compiled.text_outside_blocks {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "text outside `{% block %}` in a template that extends a parent would be ignored; put it in a block, or write role lines to replace the parent's messages",
                )
                .with_location(at(pos)),
            );
        }
        out.push_str(&format!("{{% extends {:?} %}}", exact_ref(pname, pver)));
    }
    // Pad with a comment so the padding renders to nothing (trim_blocks
    // eats the newline after it) and an included partial adds no blank lines.
    if b.first_line >= 3 {
        out.push_str("{#");
        out.extend(std::iter::repeat_n('\n', b.first_line as usize - 2));
        out.push_str("#}\n");
    } else {
        out.extend(std::iter::repeat_n('\n', b.first_line as usize - 1));
    }
    out.push_str(&compiled.source);
    (out, implicit_user)
}

fn typed<T: serde::de::DeserializeOwned>(
    v: &Value,
    what: &str,
    src: &SourceFile,
    span: Option<&serde_saphyr::Spanned<Value>>,
    errors: &mut Vec<Error>,
) -> Option<T> {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(
                Error::new(ErrorKind::Syntax, format!("`{what}:` {e}")).with_location(
                    span.map_or_else(|| Location::file(&src.path), |s| src.at_span(s)),
                ),
            );
            None
        }
    }
}
