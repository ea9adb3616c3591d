//! Input schemas: built from declared parameters, checked against inputs, and
//! compared with Rust types.

use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde_json::{Map, Value};

use crate::check::{Check, Tri};
use crate::error::{Error, ErrorKind};
use crate::input::InputMap;
use crate::message::history_item_schema;
use crate::template::Parameter;

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A compiled input schema: the full validator, and the fast path that
/// answers for the common case (see [`crate::check`]).
#[derive(Clone)]
pub(crate) struct InputSchema {
    pub validator: Arc<jsonschema::Validator>,
    pub fast: Option<Arc<Check>>,
}

impl fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputSchema").finish_non_exhaustive()
    }
}

/// Expands one declared parameter to JSON Schema: `type: messages` becomes a
/// list of chat messages, and a bare string (`name: string`) is short for
/// `{type: string}`.
///
/// # Errors
/// A message when the fragment is neither an object nor a type name.
pub(crate) fn expand_parameter(fragment: &Value) -> Result<(Value, bool), String> {
    let mut obj = match fragment {
        Value::Object(map) => map.clone(),
        Value::String(t) => {
            let mut m = Map::new();
            m.insert("type".into(), Value::String(t.clone()));
            m
        }
        other => {
            return Err(format!(
                "a parameter is a JSON Schema object or a type name, not {}",
                crate::input::kind_name(other)
            ));
        }
    };
    let is_messages = obj.get("type") == Some(&Value::String("messages".into()));
    if is_messages {
        obj.insert("type".into(), Value::String("array".into()));
        obj.insert("items".into(), history_item_schema());
    }
    let mut value = Value::Object(obj);
    if !is_messages {
        expand_media(&mut value, 0);
    }
    Ok((value, is_messages))
}

/// Rewrites `type: image`, `file` and `audio` (here and below, through
/// `properties` and `items`) into the media value's JSON Schema
/// ([`crate::media::schema`]), annotated with
/// [`ANNOTATION`](crate::media_input::ANNOTATION) so that rendering finds
/// them.
pub(crate) fn expand_media(schema: &mut Value, depth: usize) {
    if depth > 64 {
        return;
    }
    let Value::Object(obj) = schema else {
        return;
    };
    // `type: image`, or `type: [image, "null"]` (an optional Prompty input).
    let (kind, nullable) = match obj.get("type") {
        Some(Value::String(t)) => (crate::media::Kind::parse(t), false),
        Some(Value::Array(ts)) if ts.len() == 2 && ts.contains(&Value::from("null")) => (
            ts.iter()
                .filter_map(Value::as_str)
                .find_map(crate::media::Kind::parse),
            true,
        ),
        _ => (None, false),
    };
    if let Some(kind) = kind {
        obj.remove("type");
        let Value::Object(mut media) = crate::media::schema(kind) else {
            return;
        };
        // `default: null` makes it optional: nothing is placed then.
        let nullable = nullable || obj.get("default") == Some(&Value::Null);
        if nullable && let Some(Value::Array(any)) = media.get_mut("anyOf") {
            any.push(serde_json::json!({"type": "null"}));
        }
        if obj.contains_key("anyOf") {
            let all = obj
                .entry("allOf")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(all) = all {
                all.push(Value::Object(media));
            }
        } else {
            obj.extend(media);
        }
        obj.insert(
            crate::media_input::ANNOTATION.into(),
            Value::String(kind.as_str().into()),
        );
        return;
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for prop in props.values_mut() {
            expand_media(prop, depth + 1);
        }
    }
    if let Some(items @ Value::Object(_)) = obj.get_mut("items") {
        expand_media(items, depth + 1);
    }
}

/// Rewrites `type: messages` inside a whole `input_schema`'s properties,
/// and the media types anywhere in it.
pub(crate) fn expand_properties(schema: &mut Value) -> Vec<String> {
    expand_media(schema, 0);
    let mut history = Vec::new();
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        for (name, prop) in props.iter_mut() {
            if let Ok((expanded, true)) = expand_parameter(prop) {
                *prop = expanded;
                history.push(name.clone());
            }
        }
    }
    history
}

/// Compiles a JSON Schema (memoised: the same schema compiles once per
/// process).
///
/// # Errors
/// A message saying where in the schema it is invalid.
pub(crate) fn compile(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    compile_keyed(schema, crate::memo::value_key(schema))
}

/// The largest compiled `pattern` (bytes, the regex crate's estimate):
/// 1 MiB, a tenth of the crate's default.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// [`compile`] with the schema's memo key already computed.
fn compile_keyed(schema: &Value, key: u128) -> Result<Arc<jsonschema::Validator>, String> {
    static COMPILED: crate::memo::Memo<Arc<jsonschema::Validator>> = crate::memo::Memo::new(20_000);
    if let Some(v) = COMPILED.get(key) {
        return Ok(v);
    }
    // `pattern` and `patternProperties` run on the `regex` crate, whose
    // matching is linear in the text: a pattern an author (or a copied
    // schema) wrote cannot make validating an input take minutes. Its
    // price: lookaround and backreferences are not supported, and a
    // pattern using them is an error at load.
    // `format` is asserted (`format: email`, `date`, `uri`, ...): an
    // author who writes it means it, though 2020-12 makes it an
    // annotation by default.
    let options = jsonschema::options()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(PATTERN_SIZE_LIMIT));
    let validator = options.build(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        let hint = if e.to_string().contains("is not a \"regex\"") {
            "; patterns are matched in linear time (the regex crate), without lookaround \
             (`(?=`, `(?!`, `(?<=`, `(?<!`) or backreferences (`\\1`)"
        } else {
            ""
        };
        if at.is_empty() {
            format!("invalid JSON Schema: {e}{hint}")
        } else {
            format!("invalid JSON Schema at `{at}`: {e}{hint}")
        }
    })?;
    let validator = Arc::new(validator);
    COMPILED.put(key, validator.clone());
    Ok(validator)
}

/// Compiles an input schema: the validator (see [`compile`]) and, when the
/// schema stays inside its subset, the fast path (memoised likewise).
///
/// # Errors
/// As [`compile`].
pub(crate) fn compile_input(schema: &Value) -> Result<InputSchema, String> {
    static FAST: crate::memo::Memo<Option<Arc<Check>>> = crate::memo::Memo::new(20_000);
    let key = crate::memo::value_key(schema);
    let validator = compile_keyed(schema, key)?;
    let fast = FAST.get(key).unwrap_or_else(|| {
        let fast = crate::check::compile(schema).map(Arc::new);
        FAST.put(key, fast.clone());
        fast
    });
    Ok(InputSchema { validator, fast })
}

/// Builds the object schema of a parameter list.
pub(crate) fn object_schema(params: &[Parameter]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in params {
        properties.insert(p.name.clone(), p.schema.clone());
        if p.required {
            required.push(Value::String(p.name.clone()));
        }
    }
    // Built by hand: `json!` would serialise `properties` into a copy.
    let mut schema = Map::new();
    schema.insert("$schema".into(), Value::String(DRAFT.into()));
    schema.insert("type".into(), Value::String("object".into()));
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("required".into(), Value::Array(required));
    schema.insert("additionalProperties".into(), Value::Bool(false));
    Value::Object(schema)
}

/// The first way `value` breaks `schema`: its JSON pointer (a missing
/// property named by where it should be), the keyword broken and the
/// validator's message; `None` when it satisfies it. A schema that does
/// not compile (checked when its template loaded) is reported as rule
/// `schema`.
pub(crate) fn first_violation(schema: &Value, value: &Value) -> Option<(String, String, String)> {
    let validator = match compile(schema) {
        Ok(v) => v,
        Err(e) => return Some((String::new(), "schema".into(), e)),
    };
    validator.iter_errors(value).next().map(|e| {
        use jsonschema::error::ValidationErrorKind as K;
        let mut pointer = e.instance_path().as_str().to_owned();
        if let K::Required { property } = e.kind()
            && let Some(name) = property.as_str()
        {
            pointer = format!("{pointer}/{}", crate::input::escape_pointer(name));
        }
        (pointer, e.kind().keyword().to_owned(), e.to_string())
    })
}

/// The names an object schema's `required` lists (none when it has none).
pub(crate) fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Derives the parameter list of a whole `input_schema`.
pub(crate) fn parameters_of(schema: &Value, history: &[String]) -> Vec<Parameter> {
    let required = required(schema);
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, s)| Parameter {
                    name: name.clone(),
                    schema: s.clone(),
                    required: required.contains(&name.as_str()),
                    default: s.get("default").cloned(),
                    messages: history.contains(name),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl InputSchema {
    /// Checks the inputs of a render (defaults applied): by the fast path
    /// when it can say yes, else by the full validator, which writes the
    /// errors.
    pub(crate) fn validate_inputs(&self, inputs: &InputMap, template: &str) -> Result<(), Error> {
        if let Some(fast) = &self.fast
            && fast.check_map(inputs) == Tri::Yes
        {
            return Ok(());
        }
        let json = serde_json::to_value(inputs).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("invalid input for {template}: cannot serialize inputs: {e}"),
            )
        })?;
        self.validate(&json, template)
    }

    /// Checks `inputs` (already an object with defaults applied). Every
    /// violation becomes one error naming the parameter path and the rule.
    pub(crate) fn validate(&self, inputs: &Value, template: &str) -> Result<(), Error> {
        // The common case, valid inputs, without collecting errors.
        if self.validator.is_valid(inputs) {
            return Ok(());
        }
        let mut problems: Vec<Error> = self
            .validator
            .iter_errors(inputs)
            .flat_map(violation)
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        problems.sort_by(|a, b| a.parameter().cmp(&b.parameter()));
        if problems.len() == 1 {
            let only = problems.remove(0);
            let (pointer, rule) = (
                only.parameter().unwrap_or_default().to_owned(),
                only.rule().unwrap_or_default().to_owned(),
            );
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("invalid input for {template}: {}", only.message()),
            )
            .with_parameter(pointer, &rule));
        }
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("invalid input for {template}: {} problems", problems.len()),
        )
        .with_related(problems))
    }
}

/// Turns one validation error into errors naming a parameter path: a
/// missing property or an unexpected one is named by its own path.
fn violation(e: jsonschema::ValidationError<'_>) -> Vec<Error> {
    use jsonschema::error::ValidationErrorKind as K;
    let at = e.instance_path().as_str().to_owned();
    let rule = e.kind().keyword().to_owned();
    match e.kind() {
        K::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            let pointer = format!("{at}/{}", crate::input::escape_pointer(&name));
            vec![
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{pointer}: missing required value (rule `required`)"),
                )
                .with_parameter(pointer, &rule),
            ]
        }
        K::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                let pointer = format!("{at}/{}", crate::input::escape_pointer(name));
                let what = if at.is_empty() {
                    "not a parameter of this template"
                } else {
                    "not an allowed field here"
                };
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{pointer}: {what} (rule `additionalProperties`)"),
                )
                .with_parameter(pointer, &rule)
            })
            .collect(),
        _ => {
            let shown = e.to_string();
            let text = if shown.len() > 160 {
                e.masked().to_string()
            } else {
                shown
            };
            let place = if at.is_empty() { "/" } else { &at };
            vec![
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{place}: {text} (rule `{rule}`)"),
                )
                .with_parameter(at, &rule),
            ]
        }
    }
}

/// One way a Rust type's schema disagrees with a template's input schema,
/// found by [`Template::check_input_type`](crate::Template::check_input_type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    /// JSON pointer of the field (`/examples/items/answer`).
    pub pointer: String,
    /// What disagrees.
    pub message: String,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.message)
    }
}

/// Compares the schema of `T` with a template's input schema.
pub(crate) fn compare_type<T: JsonSchema>(template: &Value) -> Vec<SchemaMismatch> {
    let generated = schemars::schema_for!(T);
    let ty = serde_json::to_value(&generated).unwrap_or(Value::Null);
    let defs = ty
        .get("$defs")
        .or_else(|| ty.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = Vec::new();
    compare(template, &ty, &defs, String::new(), &mut out, 0, false);
    out
}

/// Compares the schema of `T` with a template's output schema: what the
/// output may hold that `T` cannot take.
pub(crate) fn compare_output_type<T: JsonSchema>(output: &Value) -> Vec<SchemaMismatch> {
    let generated = schemars::schema_for!(T);
    let ty = serde_json::to_value(&generated).unwrap_or(Value::Null);
    let defs_of = |v: &Value| {
        v.get("$defs")
            .or_else(|| v.get("definitions"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (out_defs, ty_defs) = (defs_of(output), defs_of(&ty));
    let mut out = Vec::new();
    compare_output(
        output,
        &ty,
        (&out_defs, &ty_defs),
        String::new(),
        &mut out,
        0,
    );
    out
}

fn compare_output(
    produced: &Value,
    ty: &Value,
    defs: (&Value, &Value),
    at: String,
    out: &mut Vec<SchemaMismatch>,
    depth: usize,
) {
    if depth > 32 {
        return;
    }
    let (produced, ty) = (resolve(produced, defs.0), resolve(ty, defs.1));
    if let (Some(may), Some(takes)) = (types_of(produced), types_of(ty)) {
        let taken = |t: &str| {
            takes
                .iter()
                .any(|w| w == t || (w == "number" && t == "integer"))
        };
        let bad: Vec<&str> = may
            .iter()
            .filter(|t| !taken(t))
            .map(String::as_str)
            .collect();
        if !bad.is_empty() {
            push(
                out,
                at.clone(),
                format!(
                    "the output may be {} but the Rust type takes {}",
                    bad.join(" or "),
                    takes.join(" or ")
                ),
            );
            return;
        }
    }
    let empty = serde_json::Map::new();
    let pp = produced.get("properties").and_then(Value::as_object);
    let yp = ty.get("properties").and_then(Value::as_object);
    if pp.is_some() || yp.is_some() {
        let (pp, yp) = (pp.unwrap_or(&empty), yp.unwrap_or(&empty));
        let (p_req, y_req) = (required(produced), required(ty));
        for (name, ysub) in yp {
            let path = format!("{at}/{}", crate::input::escape_pointer(name));
            match pp.get(name) {
                None if y_req.contains(&name.as_str()) => push(
                    out,
                    path,
                    "required by the Rust type, not in the output schema".into(),
                ),
                None => {}
                Some(psub) => {
                    if y_req.contains(&name.as_str()) && !p_req.contains(&name.as_str()) {
                        push(
                            out,
                            path.clone(),
                            "required by the Rust type, but the output may leave it out".into(),
                        );
                    }
                    compare_output(psub, ysub, defs, path, out, depth + 1);
                }
            }
        }
        if ty.get("additionalProperties") == Some(&Value::Bool(false)) {
            for name in pp.keys().filter(|n| !yp.contains_key(*n)) {
                out.push(SchemaMismatch {
                    pointer: format!("{at}/{}", crate::input::escape_pointer(name)),
                    message: "the output may hold it, but the Rust type refuses unknown fields"
                        .into(),
                });
            }
        }
    }
    if let (Some(pi), Some(yi)) = (produced.get("items"), ty.get("items")) {
        compare_output(pi, yi, defs, format!("{at}/items"), out, depth + 1);
    }
}

fn push(out: &mut Vec<SchemaMismatch>, pointer: String, message: String) {
    out.push(SchemaMismatch { pointer, message });
}

fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        let Some(r) = s.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let name = r.rsplit('/').next().unwrap_or_default();
        match defs.get(name) {
            Some(d) => s = d,
            None => break,
        }
    }
    s
}

/// The JSON types a schema allows (`type`, one or a list); `None` when it
/// does not restrict them.
pub(crate) fn types_of(schema: &Value) -> Option<Vec<String>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

fn compare(
    tpl: &Value,
    ty: &Value,
    defs: &Value,
    at: String,
    out: &mut Vec<SchemaMismatch>,
    depth: usize,
    optional_reported: bool,
) {
    if depth > 32 {
        return;
    }
    let ty = resolve(ty, defs);
    let mut push = |message: String| {
        out.push(SchemaMismatch {
            pointer: at.clone(),
            message,
        })
    };
    if let (Some(want), Some(have)) = (types_of(tpl), types_of(ty)) {
        // An integer is a number; null in the type means Option<_>.
        let accepted = |t: &str| {
            want.iter()
                .any(|w| w == t || (w == "number" && t == "integer"))
        };
        // `Option<T>` already reported as "optional" need not also say "null".
        let bad: Vec<&String> = have
            .iter()
            .filter(|t| !(accepted(t) || (optional_reported && *t == "null")))
            .collect();
        if !bad.is_empty() {
            let bad: Vec<&str> = bad.iter().map(|s| s.as_str()).collect();
            push(format!(
                "the Rust type allows {} but the template wants {}",
                bad.join(" or "),
                want.join(" or ")
            ));
            return;
        }
    }
    if let (Some(tp), Some(yp)) = (
        tpl.get("properties").and_then(Value::as_object),
        ty.get("properties").and_then(Value::as_object),
    ) {
        let (t_req, y_req) = (required(tpl), required(ty));
        for (name, sub) in tp {
            let path = format!("{at}/{}", crate::input::escape_pointer(name));
            match yp.get(name) {
                None if t_req.contains(&name.as_str()) => out.push(SchemaMismatch {
                    pointer: path,
                    message: "required by the template, missing from the Rust type".into(),
                }),
                None => {}
                Some(ysub) => {
                    let optional =
                        t_req.contains(&name.as_str()) && !y_req.contains(&name.as_str());
                    if optional {
                        out.push(SchemaMismatch {
                            pointer: path.clone(),
                            message: "required by the template, optional in the Rust type".into(),
                        });
                    }
                    compare(sub, ysub, defs, path, out, depth + 1, optional);
                }
            }
        }
        let closed = tpl.get("additionalProperties") == Some(&Value::Bool(false));
        if closed {
            for name in yp.keys().filter(|n| !tp.contains_key(*n)) {
                out.push(SchemaMismatch {
                    pointer: format!("{at}/{}", crate::input::escape_pointer(name)),
                    message: "in the Rust type, but the template does not accept it".into(),
                });
            }
        }
    }
    if let (Some(ti), Some(yi)) = (tpl.get("items"), ty.get("items")) {
        compare(ti, yi, defs, format!("{at}/items"), out, depth + 1, false);
    }
}
