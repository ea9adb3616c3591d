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

/// Whether a file writes its messages in YAML or in a Jinja body.
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
    /// The answer's JSON Schema (its `title` and `description` name and
    /// describe it), inline or `{$ref: PATH}` (a JSON or YAML file relative
    /// to this file, inside the root). Without it the answer is text.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub output: Option<Spanned<Value>>,
    /// The tools the model may call: each `{name, description, parameters}`
    /// (`parameters` a JSON Schema of the arguments, inline or
    /// `{$ref: PATH}`), or `{$ref: PATH}` for a file holding one tool. A
    /// child's tools are added to its parent's; one with a parent's tool's
    /// name replaces it.
    #[serde(default)]
    #[schemars(with = "Option<Vec<ToolDoc>>")]
    pub tools: Option<Spanned<Value>>,
    /// Whether and which tool the model must call: `auto` (the provider's
    /// default), `none`, `required` (some tool), or a declared tool's name.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tool_choice: Option<Spanned<Value>>,
    /// How many times to re-ask when the answer breaks the output schema
    /// (the validation error appended as a user turn). Off (0) by default.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub output_retries: Option<Spanned<Value>>,
}

/// One entry of `tools:` (schema only).
#[derive(JsonSchema)]
#[allow(dead_code)]
pub(crate) struct ToolDoc {
    /// The name the model calls it by: 1 to 64 of `a-z`, `A-Z`, `0-9`,
    /// `_`, `-`.
    name: Option<String>,
    /// What it does and when to call it: the model reads this.
    description: Option<String>,
    /// A JSON Schema (`type: object`) of its arguments, or `{$ref: PATH}`.
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    parameters: Option<Value>,
    /// `{$ref: PATH}`: a JSON or YAML file holding the tool.
    #[serde(rename = "$ref")]
    reference: Option<String>,
}

/// One entry of `messages:`; which fields are set decides what it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageEntry {
    pub role: Option<Spanned<String>>,
    pub content: Option<Spanned<String>>,
    pub history: Option<Spanned<String>>,
    pub name: Option<String>,
    /// A cache breakpoint here: `5m` or `1h`.
    pub cache_breakpoint: Option<Spanned<String>>,
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
    /// Marks a prompt-cache breakpoint here, between messages.
    CacheBreakpoint {
        /// How long the entry lives: `5m` or `1h`.
        cache_breakpoint: CacheTtlDoc,
    },
}

/// A cache breakpoint's TTL (schema only).
#[derive(JsonSchema)]
#[allow(dead_code)]
pub(crate) enum CacheTtlDoc {
    /// Five minutes.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// One hour.
    #[serde(rename = "1h")]
    OneHour,
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
    /// Whether its value changes rarely (a tenant's name), so that it may
    /// come before a static cache breakpoint.
    stable: Option<bool>,
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
    /// Where to reach the model and with which key, when the template says
    /// itself (a Prompty file's `model.connection`). Sending the template's
    /// own model uses it instead of a configured provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
}

/// A template's own connection to its model: an endpoint and the
/// environment variable holding the key, never the key itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Connection {
    /// The endpoint: a URL, or `${env:VAR}` (read when sending, never at
    /// load or render time). For `provider: azure`, the resource endpoint
    /// (`https://NAME.openai.azure.com`); the deployment is the model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The environment variable that holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Azure OpenAI's `api-version` (default `2024-10-21`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
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
    /// How history is dropped when the prompt is over budget:
    /// `drop_oldest` (the default) or `cache_aware` (in steps of
    /// `slack_percent` of the budget, so a conversation cache breakpoint
    /// keeps hitting; see [`Strategy::CacheAware`](crate::Strategy)). A
    /// strategy given to the render wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<Truncation>,
    /// The step of `cache_aware`, in percent of the budget: 1 to 90,
    /// default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub slack_percent: Option<u8>,
}

/// `context.truncation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Truncation {
    /// Drop the oldest history first.
    DropOldest,
    /// Drop the oldest history in fixed steps.
    CacheAware,
}

impl ContextConfig {
    /// The truncation strategy the block asks for, if any.
    pub fn strategy(&self) -> Option<crate::Strategy> {
        Some(match self.truncation? {
            Truncation::DropOldest => crate::Strategy::DropOldest,
            Truncation::CacheAware => crate::Strategy::CacheAware {
                slack_percent: self.slack_percent.unwrap_or(20).clamp(1, 90),
            },
        })
    }
}

/// The JSON Schema of template files, as checked in at
/// `schemas/template.schema.json` and printed by `promptbook schema`.
pub fn template_file_schema() -> Value {
    let schema = schemars::schema_for!(Manifest);
    serde_json::to_value(schema).unwrap_or(Value::Null)
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
#[derive(Debug, Clone)]
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
    /// The answer's JSON Schema (`output:`), merged with the parent's.
    pub(crate) output_schema: Option<std::sync::Arc<Value>>,
    /// The tools the model may call, the parent's first.
    pub(crate) tools: std::sync::Arc<[crate::tool::Tool]>,
    pub(crate) tool_choice: Option<crate::tool::ToolChoice>,
    pub(crate) output_retries: Option<u32>,
    /// Set once the whole root is loaded (`crate::load::stamp`).
    pub(crate) hash: crate::hash::ContentHash,
}

/// A template serialises as one version in the catalog: `version`,
/// `hash`, `labels`, `description`, `path`, `extends`, `parameters`,
/// `input_schema`, `model` and `context` (absent ones as `null`), then,
/// when declared, `output_schema`, `tools`, `tool_choice` and
/// `output_retries`.
impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("version", &self.version.to_string())?;
        map.serialize_entry("hash", &self.hash)?;
        map.serialize_entry("labels", &self.labels)?;
        map.serialize_entry("description", &self.description)?;
        map.serialize_entry("path", &self.path)?;
        map.serialize_entry("extends", &self.extends)?;
        map.serialize_entry("parameters", &*self.parameters)?;
        map.serialize_entry("input_schema", &*self.input_schema)?;
        map.serialize_entry("model", &self.model)?;
        map.serialize_entry("context", &self.context)?;
        if let Some(schema) = &self.output_schema {
            map.serialize_entry("output_schema", &**schema)?;
        }
        if !self.tools.is_empty() {
            map.serialize_entry("tools", &*self.tools)?;
        }
        if let Some(choice) = &self.tool_choice {
            map.serialize_entry("tool_choice", choice)?;
        }
        if let Some(n) = self.output_retries {
            map.serialize_entry("output_retries", &n)?;
        }
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

    /// Its content hash: SHA-256 over its file (labels left out), the
    /// files it reads and everything it extends or includes, transitively.
    /// What `promptbook.lock` records; see `docs/review.md`.
    pub fn hash(&self) -> crate::hash::ContentHash {
        self.hash
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

    /// The answer's JSON Schema (`output:`), the parent's when this one
    /// declares none; `None` when the answer is text.
    pub fn output_schema(&self) -> Option<&Value> {
        self.output_schema.as_deref()
    }

    /// The tools the model may call (`tools:`): the parent's, with this
    /// template's added or replacing them by name.
    pub fn tools(&self) -> &[crate::tool::Tool] {
        &self.tools
    }

    /// `tool_choice:`, when set (here or in the parent).
    pub fn tool_choice(&self) -> Option<&crate::tool::ToolChoice> {
        self.tool_choice.as_ref()
    }

    /// `output_retries:`, when set (here or in the parent).
    pub fn output_retries(&self) -> Option<u32> {
        self.output_retries
    }
}
