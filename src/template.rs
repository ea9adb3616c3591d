//! The template file model: the two file forms, their fields, and the
//! [`Template`] a registry holds once inheritance is applied.
//!
//! A template file is either a YAML manifest (`NAME.prompt.yaml`) whose
//! `messages:` list holds the messages, or YAML front matter between `---`
//! lines followed by a Jinja body (`NAME.prompt.jinja`). Both are described by
//! the same fields ([`Manifest`]); its JSON Schema is
//! `schemas/template.schema.json`.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::{Error, ErrorKind, Location};
use crate::prompty::Dialect;
use crate::reference::validate_name;

/// File suffixes of template files, longest first.
pub(crate) const SUFFIXES: [(&str, FileForm); 4] = [
    (".prompt.yaml", FileForm::Manifest),
    (".prompt.yml", FileForm::Manifest),
    (".prompt.jinja", FileForm::Body),
    // Prompty: front matter and a body too, read by `crate::prompty`.
    (".prompty", FileForm::Body),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileForm {
    /// `.prompt.yaml`: everything in YAML.
    Manifest,
    /// `.prompt.jinja`: front matter and a Jinja body.
    Body,
}

/// The fields of a template file (the YAML manifest, or the front matter of a
/// `.prompt.jinja` file).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "promptbook template", rename = "Template")]
pub(crate) struct Manifest {
    /// The template's semver version (`1.2.0`). When the file name carries
    /// `@VERSION`, the two must be equal.
    #[schemars(with = "String")]
    pub version: Spanned<String>,
    /// What the template is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels such as `production` or `canary`. A label names at most one
    /// version of a template; `NAME@LABEL` selects it.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub labels: Option<Spanned<Vec<String>>>,
    /// The inputs: a map from name to a JSON Schema fragment. The special
    /// `type: messages` declares a chat-history list. A parameter without a
    /// `default` is required.
    #[serde(default)]
    #[schemars(with = "Option<IndexMap<String, ParameterDoc>>")]
    pub parameters: Option<IndexMap<String, Spanned<Value>>>,
    /// A whole JSON Schema for the inputs, inline or as `{"$ref": "PATH"}`
    /// (a path relative to this file). Use either this or `parameters`.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub input_schema: Option<Spanned<Value>>,
    /// `NAME@REQ` of a parent template whose parameters, model, context and
    /// messages this one inherits.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub extends: Option<Spanned<String>>,
    /// The messages (YAML manifest only): `{role, content}` entries whose
    /// content is Jinja, and `{history: PARAM}` entries that splice a
    /// `messages` parameter.
    #[serde(default)]
    #[schemars(with = "Option<Vec<MessageEntryDoc>>")]
    pub messages: Option<Vec<Spanned<MessageEntry>>>,
    /// Overrides of the parent's Jinja `{% block %}`s (YAML manifest that
    /// `extends` a parent): block name to Jinja text.
    #[serde(default)]
    #[schemars(with = "Option<IndexMap<String, String>>")]
    pub blocks: Option<IndexMap<String, Spanned<String>>>,
    /// Which model the prompt is written for, and its parameters.
    #[serde(default)]
    #[schemars(with = "Option<ModelConfig>")]
    pub model: Option<Spanned<Value>>,
    /// The token budget the rendered prompt must fit.
    #[serde(default)]
    #[schemars(with = "Option<ContextConfig>")]
    pub context: Option<Spanned<Value>>,
}

/// One entry of `messages:`; which fields are set decides what it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageEntry {
    pub role: Option<Spanned<String>>,
    pub content: Option<Spanned<String>>,
    pub history: Option<Spanned<String>>,
    pub name: Option<String>,
}

/// One entry of `messages:` (schema only).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum MessageEntryDoc {
    /// A message written by the template.
    Message {
        /// system, user, assistant or tool.
        role: crate::message::Role,
        /// The text, as Jinja.
        content: String,
        /// Optional participant name.
        #[serde(default)]
        name: Option<String>,
    },
    /// Splices a `messages` parameter here.
    History {
        /// The name of a parameter of `type: messages`.
        history: String,
    },
}

/// A parameter: a JSON Schema fragment (schema only).
#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = true))]
#[allow(dead_code)]
pub(crate) struct ParameterDoc {
    /// A JSON Schema type, or `messages` for a chat-history list.
    #[serde(rename = "type")]
    #[schemars(with = "Option<Value>")]
    kind: Option<Value>,
    /// What the parameter means.
    description: Option<String>,
    /// The value used when the caller passes none; makes the parameter
    /// optional. Must satisfy the parameter's own schema.
    #[schemars(with = "Option<Value>")]
    default: Option<Value>,
}

/// The `model:` block: which provider and model a prompt is written for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Provider name (`openai`, `anthropic`, or one declared in
    /// `providers.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Model name as the provider knows it (`gpt-4o-mini`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Request parameters (`temperature`, `max_tokens`, ...), passed through.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub parameters: serde_json::Map<String, Value>,
    /// `provider:name` models to try in order when this one fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

/// The `context:` block: the token budget of the rendered prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ContextConfig {
    /// The context window in tokens (defaults to the model's known window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Tokens kept free for the reply (defaults to the model's `max_tokens`
    /// parameter when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_output: Option<u64>,
}

/// The JSON Schema of template files, as checked in at
/// `schemas/template.schema.json` and printed by `promptbook schema`.
pub fn template_file_schema() -> Value {
    let schema = schemars::schema_for!(Manifest);
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// A template file, parsed but not yet resolved against its parent.
#[derive(Debug)]
pub(crate) struct SourceFile {
    /// The path as the user will see it in messages (root joined).
    pub path: PathBuf,
    /// The template name (`support/triage`).
    pub name: String,
    pub version: Version,
    pub form: FileForm,
    pub manifest: Manifest,
    /// The Jinja body of a `.prompt.jinja` file.
    pub body: Option<Body>,
    /// Spans in front matter count from its own first line: add this.
    pub span_line_offset: u64,
    /// Native, or a `.prompty` file and its mode.
    pub dialect: Dialect,
    /// Lint warnings found while reading the file.
    pub warnings: Vec<(Location, String)>,
}

#[derive(Debug)]
pub(crate) struct Body {
    pub text: String,
    /// The 1-based line of the file on which the body starts.
    pub first_line: u32,
}

impl SourceFile {
    pub(crate) fn at(&self, line: u64, column: u64) -> Location {
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        let column = u32::try_from(column).ok().filter(|&c| c > 0);
        Location::at(&self.path, line, column)
    }

    pub(crate) fn at_span<T>(&self, spanned: &Spanned<T>) -> Location {
        self.at(
            spanned.referenced.line() + self.span_line_offset,
            spanned.referenced.column(),
        )
    }
}

/// Splits a path relative to the root into template name, the version its
/// file name carries (if any) and its form. `None` when the file is not a
/// template file.
pub(crate) fn classify(rel: &str) -> Option<(String, Option<String>, FileForm)> {
    let (stem, form) = SUFFIXES
        .iter()
        .find_map(|(suffix, form)| rel.strip_suffix(suffix).map(|stem| (stem, *form)))?;
    let (dir, file) = match stem.rsplit_once('/') {
        Some((dir, file)) => (Some(dir), file),
        None => (None, stem),
    };
    let (file, version) = match file.split_once('@') {
        Some((file, version)) => (file, Some(version.to_owned())),
        None => (file, None),
    };
    let name = match dir {
        Some(dir) => format!("{dir}/{file}"),
        None => file.to_owned(),
    };
    Some((name, version, form))
}

/// Reads the fields (and body) of one template file.
pub(crate) fn parse_file(path: &Path, rel: &str, bytes: Vec<u8>) -> Result<SourceFile, Vec<Error>> {
    let (name, stem_version, form) =
        classify(rel).ok_or_else(|| vec![Error::new(ErrorKind::Syntax, "not a template file")])?;
    let file_loc = || Location::file(path);
    let text =
        String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let col =
                valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
            vec![
                Error::new(ErrorKind::Syntax, "file is not valid UTF-8")
                    .with_location(Location::at(path, line as u32, Some(col as u32))),
            ]
        })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if let Err(msg) = validate_name(&name) {
        return Err(vec![
            Error::new(ErrorKind::Syntax, format!("bad template name: {msg}"))
                .or_location(file_loc),
        ]);
    }
    if let Some(bad) = text.find(['\0', crate::body::MARK_OPEN, crate::body::MARK_CLOSE]) {
        let (line, col) = line_col(text, bad);
        let what = match text[bad..].chars().next() {
            Some('\0') => "a NUL byte".to_owned(),
            Some(c) => format!("the reserved character U+{:04X}", c as u32),
            None => "a reserved character".to_owned(),
        };
        return Err(vec![
            Error::new(ErrorKind::Syntax, format!("file contains {what}"))
                .with_location(Location::at(path, line, Some(col))),
        ]);
    }

    let prompty = rel.ends_with(".prompty");
    let prompty_manifest: String;
    let mut dialect = Dialect::Native;
    let mut file_warnings = Vec::new();
    let (yaml, yaml_first_line, body) = match form {
        FileForm::Manifest => (text, 1, None),
        FileForm::Body if prompty => {
            // Prompty allows a file without front matter: all body.
            let (fm_text, body, first) = split_front_matter(text).unwrap_or(("", text, 1));
            let fm =
                crate::prompty::read_front_matter(fm_text).map_err(|e| yaml_error(path, e, 2))?;
            let mapped =
                crate::prompty::map_front_matter(&fm, stem_version.as_deref()).map_err(|msg| {
                    vec![
                        Error::new(ErrorKind::Syntax, msg).with_location(Location::at(
                            path,
                            1,
                            Some(1),
                        )),
                    ]
                })?;
            dialect = mapped.dialect;
            file_warnings = mapped
                .warnings
                .into_iter()
                .map(|w| (Location::at(path, 1, Some(1)), w))
                .collect();
            // JSON is YAML: the mapped manifest goes through the same parser.
            prompty_manifest = mapped.manifest.to_string();
            (
                prompty_manifest.as_str(),
                1,
                Some(Body {
                    text: body.to_owned(),
                    first_line: first,
                }),
            )
        }
        FileForm::Body => {
            let (yaml, body, first) = split_front_matter(text).ok_or_else(|| {
                vec![
                    Error::new(
                        ErrorKind::Syntax,
                        "a .prompt.jinja file starts with YAML front matter between `---` lines",
                    )
                    .with_location(Location::at(path, 1, Some(1))),
                ]
            })?;
            (
                yaml,
                2,
                Some(Body {
                    text: body.to_owned(),
                    first_line: first,
                }),
            )
        }
    };

    let options = serde_saphyr::options! { with_snippet: false };
    let manifest: Manifest = serde_saphyr::from_str_with_options(yaml, options)
        .map_err(|e| yaml_error(path, e, yaml_first_line))?;
    let mut source = SourceFile {
        path: path.to_owned(),
        name,
        version: Version::new(0, 0, 0),
        form,
        manifest,
        body,
        span_line_offset: u64::from(yaml_first_line - 1),
        dialect,
        warnings: file_warnings,
    };

    let mut errors = Vec::new();
    let version_text = source.manifest.version.value.trim().to_owned();
    match Version::parse(&version_text) {
        Ok(v) => source.version = v,
        Err(e) => errors.push(
            Error::new(
                ErrorKind::Syntax,
                format!("version `{version_text}` is not a semver version (MAJOR.MINOR.PATCH)"),
            )
            .with_location(source.at_span(&source.manifest.version))
            .with_source(e),
        ),
    }
    if let (Some(stem), true) = (&stem_version, errors.is_empty())
        && Version::parse(stem).ok().as_ref() != Some(&source.version)
    {
        errors.push(
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "file name says version `{stem}` but the `version:` field says `{}`",
                    source.version
                ),
            )
            .with_location(source.at_span(&source.manifest.version)),
        );
    }
    if let Some(labels) = &source.manifest.labels {
        for label in &labels.value {
            if !crate::reference::is_label(label) {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!(
                            "label `{label}` is not an identifier (a letter, then letters, digits, `_`, `-`, `.`)"
                        ),
                    )
                    .with_location(source.at_span(labels)),
                );
            }
        }
    }
    if form == FileForm::Body {
        for (field, present) in [
            ("messages", source.manifest.messages.is_some()),
            ("blocks", source.manifest.blocks.is_some()),
        ] {
            if present {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!(
                            "`{field}:` belongs in a .prompt.yaml manifest; a .prompt.jinja file writes its messages in the body"
                        ),
                    )
                    .with_location(Location::at(path, 1, Some(1))),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(source)
    } else {
        Err(errors)
    }
}

/// Splits `---\nYAML\n---\nBODY`. Returns the YAML, the body and the 1-based
/// line the body starts on.
pub(crate) fn split_front_matter(text: &str) -> Option<(&str, &str, u32)> {
    let mut lines = text.split_inclusive('\n');
    let first = lines.next()?;
    if first.trim_end() != "---" {
        return None;
    }
    let yaml_start = first.len();
    let mut offset = yaml_start;
    let mut line_no = 1u32;
    for line in lines {
        line_no += 1;
        if line.trim_end() == "---" {
            let yaml = &text[yaml_start..offset];
            let body = &text[offset + line.len()..];
            return Some((yaml, body, line_no + 1));
        }
        offset += line.len();
    }
    None
}

/// A YAML error as a load error at its line of the file, given the line
/// the YAML starts on.
fn yaml_error(path: &Path, e: serde_saphyr::Error, first_line: u32) -> Vec<Error> {
    let location = match e.location() {
        Some(l) if l.line() > 0 => Location::at(
            path,
            (l.line() as u32).saturating_add(first_line - 1),
            Some(l.column() as u32),
        ),
        _ => Location::file(path),
    };
    vec![
        Error::new(ErrorKind::Syntax, yaml_message(&e))
            .with_location(location)
            .with_source(e),
    ]
}

/// The message of a YAML error without serde-saphyr's own location suffix
/// (we print `path:line:col:` in front) or its advice about parser options.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let mut msg = e.without_snippet().to_string();
    if let Some(pos) = msg.rfind(" at line ")
        && msg[pos..].contains(", column ")
    {
        msg.truncate(pos);
    }
    if let Some(pos) = msg.find(", set DuplicateKeyPolicy") {
        msg.truncate(pos);
    }
    msg
}

/// 1-based line and column of byte `offset` in `text`.
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

/// A declared input of a template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Parameter {
    /// The name.
    pub name: String,
    /// Its JSON Schema (for a `messages` parameter, the array schema it
    /// stands for).
    pub schema: Value,
    /// Whether callers must pass it (it has no default).
    pub required: bool,
    /// The default, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Whether this is a chat-history (`type: messages`) parameter.
    pub messages: bool,
}

/// A loaded template: one version of one name, with its parent's settings
/// merged in.
#[derive(Debug)]
pub struct Template {
    pub(crate) name: String,
    pub(crate) version: Version,
    pub(crate) path: PathBuf,
    pub(crate) description: Option<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) extends: Option<String>,
    pub(crate) parameters: std::sync::Arc<[Parameter]>,
    pub(crate) input_schema: std::sync::Arc<Value>,
    pub(crate) model: Option<std::sync::Arc<ModelConfig>>,
    pub(crate) context: Option<ContextConfig>,
}

/// A template serialises as one version in the catalog: `version`,
/// `labels`, `description`, `path`, `extends`, `parameters`,
/// `input_schema`, `model` and `context` (absent ones as `null`).
impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(9))?;
        map.serialize_entry("version", &self.version.to_string())?;
        map.serialize_entry("labels", &self.labels)?;
        map.serialize_entry("description", &self.description)?;
        map.serialize_entry("path", &self.path)?;
        map.serialize_entry("extends", &self.extends)?;
        map.serialize_entry("parameters", &*self.parameters)?;
        map.serialize_entry("input_schema", &*self.input_schema)?;
        map.serialize_entry("model", &self.model)?;
        map.serialize_entry("context", &self.context)?;
        map.end()
    }
}

impl Template {
    /// The name (`support/triage`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// `NAME@VERSION`, the exact id of this template.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Its labels.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The exact id (`NAME@VERSION`) of the parent it extends.
    pub fn extends(&self) -> Option<&str> {
        self.extends.as_deref()
    }

    /// Its parameters, the parent's first (a child's override keeps the
    /// parent's position).
    pub fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    /// The JSON Schema its inputs must satisfy.
    pub fn input_schema(&self) -> &Value {
        &self.input_schema
    }

    /// The `model:` block, merged with the parent's.
    pub fn model(&self) -> Option<&ModelConfig> {
        self.model.as_deref()
    }

    /// The `context:` block, merged with the parent's.
    pub fn context(&self) -> Option<&ContextConfig> {
        self.context.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names_and_versions() {
        assert_eq!(
            classify("support/triage.prompt.yaml"),
            Some(("support/triage".into(), None, FileForm::Manifest))
        );
        assert_eq!(
            classify("support/triage@1.0.0.prompt.jinja"),
            Some((
                "support/triage".into(),
                Some("1.0.0".into()),
                FileForm::Body
            ))
        );
        assert_eq!(
            classify("a.prompt.yml"),
            Some(("a".into(), None, FileForm::Manifest))
        );
        assert_eq!(classify("notes.md"), None);
        assert_eq!(classify("providers.yaml"), None);
    }

    #[test]
    fn front_matter_split() {
        let (yaml, body, first) =
            split_front_matter("---\nversion: 1.0.0\n---\nuser:\nhi\n").unwrap();
        assert_eq!(yaml, "version: 1.0.0\n");
        assert_eq!(body, "user:\nhi\n");
        assert_eq!(first, 4);
        assert!(split_front_matter("version: 1\n").is_none());
        assert!(split_front_matter("---\nversion: 1\n").is_none());
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé\u{fdd0}", 6), (2, 3));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes under either suffix give a file or errors, never a
        /// panic, and every error says where.
        #[test]
        fn parsing_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            prefix in prop_oneof![
                Just(b"".to_vec()),
                Just(b"---\nversion: 1.0.0\n---\n".to_vec()),
                Just(b"version: 1.0.0\nmessages:\n  - ".to_vec()),
            ],
            jinja in any::<bool>(),
        ) {
            let mut data = prefix;
            data.extend(bytes);
            let rel = if jinja { "t.prompt.jinja" } else { "t.prompt.yaml" };
            if let Err(errors) = parse_file(Path::new(rel), rel, data) {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(e.location().is_some());
                }
            }
        }
    }
}
