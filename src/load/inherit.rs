//! Inheritance: each template's effective parameters, input schema,
//! model and context, its parent's (through `extends:`) merged under its
//! own, parents first.
//!
//! A child's parameter replaces its parent's of the same name (in the
//! parent's position); `model:` and `context:` merge deeply (maps key by
//! key, anything else replaced); a whole `input_schema` replaces the
//! parameters. A cycle, an unknown parent or one with errors leaves the
//! template (and its children) out, with one error each.

use std::collections::HashSet;
use std::sync::Arc;

use semver::Version;
use serde_json::Value;

use super::parse::SourceFile;
use super::walk::{RefFiles, SchemaFile};
use super::{Key, Parsed, RESOLVED, Versions, resolved_key};
use crate::error::{Error, ErrorKind, Location};
use crate::reference::Reference;
use crate::registry::FastMap;
use crate::schema;
use crate::template::Parameter;

/// The templates resolved: each one's result (`None` when it or an
/// ancestor failed), and the keys that succeeded, parents first.
pub(crate) struct Inherited {
    pub resolved: FastMap<Key, Option<Arc<Resolved>>>,
    pub order: Vec<Key>,
}

/// Resolves every parsed template, parents first. Templates without a
/// parent resolve on their own first, on all cores, into the memo, which
/// the sequential parents-first pass then hits (failures are not
/// memoised; that pass reports them).
pub(crate) fn resolve_all(
    parsed: &Parsed,
    versions: Versions,
    errors: &mut Vec<Error>,
) -> Inherited {
    let mut keys: Vec<&Key> = parsed.sources.keys().collect();
    keys.sort();
    let mut loader = Loader {
        parsed,
        versions,
        resolved: FastMap::default(),
        order: Vec::new(),
        errors: Vec::new(),
    };
    let roots: Vec<&&Key> = keys
        .iter()
        .filter(|k| parsed.sources[**k].manifest.extends.is_none())
        .collect();
    crate::par::map(&roots, |key| {
        let memo_key = resolved_key(parsed.content_keys[**key], None);
        if RESOLVED.get(memo_key).is_none()
            && let Ok(mut r) = loader.resolve_own(
                &parsed.sources[**key],
                parsed.ref_files.get(**key),
                None,
                None,
            )
        {
            r.memo_key = memo_key;
            RESOLVED.put(memo_key, Arc::new(r));
        }
    });
    for key in keys {
        loader.resolve(key, &mut Vec::new());
    }
    errors.append(&mut loader.errors);
    Inherited {
        resolved: loader.resolved,
        order: loader.order,
    }
}

/// Deep merge: objects merge key by key, anything else in `over` wins.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Effective settings of a template after inheritance, before compiling.
pub(crate) struct Resolved {
    /// Identifies this result by its inputs: the file's content key and the
    /// parent's memo key. Equal keys, equal results.
    pub memo_key: u128,
    pub parameters: Arc<[Parameter]>,
    /// Where each parameter is declared in this file (for lint).
    pub own_params: Vec<(String, Location)>,
    pub input_schema: Arc<Value>,
    pub model: Option<Value>,
    pub context: Option<Value>,
    /// `output`, `tools`, `tool_choice`, `output_retries`.
    pub declared: super::declared::Declared,
    pub extends: Option<(String, Version)>,
}

impl Resolved {
    /// Names of the `messages` parameters (spliceable history).
    pub(crate) fn history_params(&self) -> HashSet<&str> {
        self.parameters
            .iter()
            .filter(|p| p.messages)
            .map(|p| p.name.as_str())
            .collect()
    }
}

struct Loader<'a> {
    parsed: &'a Parsed,
    versions: Versions,
    resolved: FastMap<Key, Option<Arc<Resolved>>>,
    /// Keys resolved successfully, parents before children.
    order: Vec<Key>,
    errors: Vec<Error>,
}

impl Loader<'_> {
    fn parent_of(&mut self, src: &SourceFile) -> Result<Option<Key>, Error> {
        let Some(ext) = &src.manifest.extends else {
            return Ok(None);
        };
        let at = src.at_span(ext);
        let r = Reference::parse(ext.value.trim()).map_err(|e| e.with_location(at.clone()))?;
        let Some(versions) = self.versions.get(r.name()) else {
            return Err(Error::new(
                ErrorKind::Reference,
                format!("`extends: {}`: no template named `{}`", ext.value, r.name()),
            )
            .with_location(at));
        };
        let i = r
            .select(versions.iter().map(|(v, l)| (v, l.as_slice())))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Reference,
                    format!(
                        "`extends: {}`: no version matches; available: {}",
                        ext.value,
                        versions
                            .iter()
                            .map(|(v, _)| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .with_location(at)
            })?;
        Ok(Some((r.name().to_owned(), versions[i].0.clone())))
    }

    /// Resolves inheritance for `key`, parents first. `None` when it (or an
    /// ancestor) failed; the error is recorded once.
    fn resolve(&mut self, key: &Key, stack: &mut Vec<Key>) -> Option<Arc<Resolved>> {
        if let Some(done) = self.resolved.get(key) {
            return done.clone();
        }
        let src = &self.parsed.sources[key];
        if let Some(pos) = stack.iter().position(|k| k == key) {
            let cycle: Vec<String> = stack[pos..]
                .iter()
                .chain(std::iter::once(key))
                .map(|(n, v)| format!("{n}@{v}"))
                .collect();
            self.errors.push(
                Error::new(
                    ErrorKind::Conflict,
                    format!("inheritance cycle: {}", cycle.join(" -> ")),
                )
                .with_location(
                    src.manifest
                        .extends
                        .as_ref()
                        .map_or_else(|| Location::file(&src.path), |e| src.at_span(e)),
                ),
            );
            return None;
        }
        let parent_key = match self.parent_of(src) {
            Ok(p) => p,
            Err(e) => {
                self.errors.push(e);
                self.resolved.insert(key.clone(), None);
                return None;
            }
        };
        let parent = match &parent_key {
            Some(pk) => {
                stack.push(key.clone());
                let p = self.resolve(pk, stack);
                stack.pop();
                match p {
                    Some(p) => Some(p),
                    None => {
                        self.resolved.insert(key.clone(), None);
                        return None;
                    }
                }
            }
            None => None,
        };
        // The same file under the same parent resolves the same: reuse it.
        let memo_key = resolved_key(self.parsed.content_keys[key], parent.as_deref());
        let result = match RESOLVED.get(memo_key) {
            Some(hit) => Ok(hit),
            None => self
                .resolve_own(
                    src,
                    self.parsed.ref_files.get(key),
                    parent.as_deref(),
                    parent_key,
                )
                .map(|mut r| {
                    r.memo_key = memo_key;
                    let r = Arc::new(r);
                    RESOLVED.put(memo_key, r.clone());
                    r
                }),
        };
        let result = match result {
            Ok(r) => {
                self.order.push(key.clone());
                Some(r)
            }
            Err(mut errs) => {
                self.errors.append(&mut errs);
                None
            }
        };
        self.resolved.insert(key.clone(), result.clone());
        result
    }

    /// One template's own settings over its parent's. Reads nothing: the
    /// files it names by `$ref`, if any, were read by the walk (`files`).
    fn resolve_own(
        &self,
        src: &SourceFile,
        files: Option<&RefFiles>,
        parent: Option<&Resolved>,
        parent_key: Option<Key>,
    ) -> Result<Resolved, Vec<Error>> {
        let mut errors = Vec::new();
        let m = &src.manifest;
        let schema = super::walk::ref_file(files, "input_schema");
        let mut parameters: Vec<Parameter> =
            parent.map(|p| p.parameters.to_vec()).unwrap_or_default();
        let mut own_params = Vec::new();
        let mut input_schema = None;

        if let (Some(_), Some(is)) = (&m.parameters, &m.input_schema) {
            errors.push(
                Error::new(
                    ErrorKind::Schema,
                    "give either `parameters` or `input_schema`, not both",
                )
                .with_location(src.at_span(is)),
            );
        }
        for (name, fragment) in m.parameters.iter().flatten() {
            let at = src.param_at(name, fragment);
            if !crate::reference::is_identifier(name) {
                errors.push(
                    Error::new(
                        ErrorKind::Schema,
                        format!(
                            "parameter name `{name}` is not an identifier (letters, digits, `_`)"
                        ),
                    )
                    .with_location(at),
                );
                continue;
            }
            let shape = match &fragment.value {
                Value::String(t) => serde_json::json!({ "type": t }),
                other => other.clone(),
            };
            let wrong = crate::keywords::input_problems(&shape, true);
            if !wrong.is_empty() {
                for (pointer, message) in wrong {
                    errors.push(
                        Error::new(
                            ErrorKind::Schema,
                            format!("parameter `{name}`{}: {message}", pointed(&pointer)),
                        )
                        .with_location(at.clone()),
                    );
                }
                continue;
            }
            match declare(name, &fragment.value) {
                Ok(mut p) => {
                    // A Prompty input is optional without a default.
                    p.required &= !src.optional_inputs.contains(name);
                    own_params.push((name.clone(), at));
                    match parameters.iter_mut().find(|q| q.name == *name) {
                        Some(slot) => *slot = p,
                        None => parameters.push(p),
                    }
                }
                Err(msg) => errors.push(Error::new(ErrorKind::Schema, msg).with_location(at)),
            }
        }
        if let Some(is) = &m.input_schema {
            let at = src.at_span(is);
            // The keywords of the schema as written (a `$ref` file's, or
            // the inline one's).
            let written = match schema {
                Some(Ok((_, text))) => serde_json::from_str::<Value>(text).ok(),
                _ => Some(is.value.clone()),
            };
            let unknown = written
                .map(|w| crate::keywords::input_problems(&w, false))
                .unwrap_or_default();
            match load_input_schema(&is.value, schema) {
                Ok((_, _)) if !unknown.is_empty() => {
                    for (pointer, message) in unknown {
                        errors.push(
                            Error::new(
                                ErrorKind::Schema,
                                format!("input_schema{}: {message}", pointed(&pointer)),
                            )
                            .with_location(at.clone()),
                        );
                    }
                }
                Ok((schema, history)) => {
                    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                        own_params.extend(props.keys().map(|k| (k.clone(), at.clone())));
                    }
                    parameters = schema::parameters_of(&schema, &history);
                    input_schema = Some(schema);
                }
                Err(msg) => errors.push(Error::new(ErrorKind::Schema, msg).with_location(at)),
            }
        }
        if !errors.is_empty() {
            // Compiling will not run: report the other declared parameters'
            // own problems (a schema that does not compile, a default that
            // breaks it) now, so one load names every problem.
            for (pname, at) in &own_params {
                if let Some(p) = parameters.iter().find(|p| p.name == *pname)
                    && let Err(m) = super::compile::check_parameter(p)
                {
                    errors.push(Error::new(ErrorKind::Schema, m).with_location(at.clone()));
                }
            }
        }
        let input_schema = input_schema.unwrap_or_else(|| schema::object_schema(&parameters));

        let mut model = parent.and_then(|p| p.model.clone());
        let mut context = parent.and_then(|p| p.context.clone());
        for (slot, own, what) in [
            (&mut model, &m.model, "model"),
            (&mut context, &m.context, "context"),
        ] {
            if let Some(own) = own {
                if !own.value.is_object() {
                    errors.push(
                        Error::new(
                            ErrorKind::Syntax,
                            format!(
                                "`{what}:` must be a map, not {}",
                                crate::input::kind_name(&own.value)
                            ),
                        )
                        .with_location(src.at_span(own)),
                    );
                    continue;
                }
                match slot {
                    Some(base) => merge(base, &own.value),
                    None => *slot = Some(own.value.clone()),
                }
            }
        }
        let declared =
            super::declared::resolve(src, files, parent.map(|p| &p.declared), &mut errors);
        if errors.is_empty() {
            Ok(Resolved {
                memo_key: 0,
                parameters: parameters.into(),
                own_params,
                input_schema: Arc::new(input_schema),
                model,
                context,
                declared,
                extends: parent_key,
            })
        } else {
            Err(errors)
        }
    }
}

/// ` at /pointer` when a problem is inside a schema, nothing at its top.
fn pointed(pointer: &str) -> String {
    if pointer.is_empty() || pointer.matches('/').count() == 1 {
        String::new()
    } else {
        let parent = &pointer[..pointer.rfind('/').unwrap_or(0)];
        format!(" at `{parent}`")
    }
}

/// Builds one parameter from its declaration. Whether the fragment is a
/// valid schema and its default satisfies it is checked when compiling,
/// done later on all cores.
fn declare(name: &str, fragment: &Value) -> Result<Parameter, String> {
    let (schema, messages) =
        schema::expand_parameter(fragment).map_err(|m| format!("parameter `{name}`: {m}"))?;
    let default = schema.get("default").cloned();
    Ok(Parameter {
        name: name.to_owned(),
        required: default.is_none(),
        default,
        schema,
        messages,
    })
}

/// An `input_schema:`: inline, or the `{$ref: PATH}` file the walk read
/// (`file`). Returns the schema with `type: messages` expanded, and the
/// names of its history parameters.
fn load_input_schema(
    value: &Value,
    file: Option<&SchemaFile>,
) -> Result<(Value, Vec<String>), String> {
    let mut schema = match file {
        Some(file) => {
            if value.as_object().is_some_and(|o| o.len() > 1) {
                return Err("a `$ref` input_schema must hold nothing but the `$ref`".into());
            }
            let (path, text) = file.as_ref().map_err(Clone::clone)?;
            serde_json::from_str::<Value>(text)
                .map_err(|e| format!("input schema {} is not valid JSON: {e}", path.display()))?
        }
        None => value.clone(),
    };
    if schema.get("type") != Some(&Value::String("object".into())) {
        return Err("an input schema must have `type: object`".into());
    }
    let history = schema::expand_properties(&mut schema);
    schema::compile(&schema)?;
    // Defaults must satisfy their own property schema.
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            if let Some(d) = prop.get("default") {
                let v = schema::compile(prop)?;
                if let Some(e) = v.iter_errors(d).next() {
                    return Err(format!(
                        "the default of `{name}` does not satisfy its own schema: {e}"
                    ));
                }
            }
        }
    }
    Ok((schema, history))
}
