//! promptbook keeps LLM prompts as versioned template files in your
//! repository, checks what callers pass in against each template's JSON
//! Schema, and renders role-tagged chat messages that no input value can
//! restructure.
//!
//! # Quick start
//!
//! ```
//! use promptbook::{Registry, Role};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), promptbook::Error> {
//! let registry = Registry::load("templates")?;
//! let rendered = registry.render(
//!     "support/triage@^2",
//!     &json!({"ticket": "I was charged twice for my subscription this month."}),
//! )?;
//! assert_eq!(rendered.template, "support/triage@2.1.0");
//! assert_eq!(rendered.messages[0].role, Role::System);
//! assert_eq!(rendered.messages.last().unwrap().role, Role::User);
//! # Ok(())
//! # }
//! ```
//!
//! # Templates
//!
//! A template root is walked recursively. `NAME.prompt.yaml` files are YAML
//! manifests whose `messages:` list holds `{role, content}` entries (content
//! is Jinja) and `{history: PARAM}` splices; `NAME.prompt.jinja` files hold
//! YAML front matter between `---` lines and a Jinja body in which a line
//! holding only `system:`, `user:`, `assistant:`, `tool:` or `developer:` starts a
//! message.
//! Names come from the path (`support/triage`); a file name may carry
//! `@VERSION` so several versions live side by side. `docs/templates.md` documents
//! every field; `schemas/template.schema.json` (see
//! [`template_file_schema`]) describes them for editors.
//!
//! # References
//!
//! [`Registry::render`] and [`Registry::get`] take `NAME` (the highest
//! release), `NAME@REQ` (the highest version matching a semver requirement,
//! such as `^1.2`, `~1.2.3`, `=2.0.0-beta.1` or `>=1, <3`) or `NAME@LABEL`
//! (the version labelled so). See [`Reference`].
//!
//! # Inputs
//!
//! Each template's parameters form a JSON Schema ([`Template::input_schema`]).
//! Inputs are validated before anything renders, and a failure names the
//! parameter path and the rule broken ([`Error::parameter`],
//! [`Error::rule`]). [`Registry::check_input_type`] compares a Rust input
//! type deriving `schemars::JsonSchema` with a template's schema, so tests
//! catch drift between code and prompt files.
//!
//! # Role boundaries
//!
//! Role lines are found in the template source before Jinja compiles it, so
//! they work inside loops and conditionals, and no input value can create,
//! end or re-role a message: values are data, never template text. History
//! parameters are spliced as whole messages, never evaluated as Jinja.
//!
//! # Cargo features
//!
//! - `cli` (default): the `promptbook` binary (clap). The library itself
//!   needs none of it: `default-features = false` builds the rendering core
//!   alone.
//! - `watch`: `WatchedRegistry`, a registry that
//!   reloads itself when its files change (notify).
//! - `dispatch` (default): [`Client`], which sends rendered prompts to
//!   OpenAI, Anthropic and OpenAI-compatible servers (reqwest with rustls,
//!   tokio), and `promptbook send`.
//! - `server` (default; implies `watch`): the dev server behind
//!   `promptbook serve`, as [`server::serve`] or [`server::router_with`]
//!   (axum and hyper on tokio).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod bounded;
mod cache_breakpoint;
mod check;
mod content;
pub mod contract;
mod convert;
mod dialect;
mod diff;
#[cfg(feature = "dispatch")]
pub mod dispatch;
mod error;
mod file;
mod hash;
mod history_parts;
mod input;
mod jinja;
mod keywords;
mod lex;
mod limits;
mod load;
mod lock;
mod media;
mod media_input;
mod media_tokens;
mod memo;
mod message;
mod namespace;
mod par;
mod reference;
mod registry;
mod render;
mod role_loop;
mod schema;
#[cfg(feature = "server")]
pub mod server;
mod strict;
pub mod suite;
#[cfg(feature = "otel")]
pub mod telemetry;
mod template;
pub mod tokens;
mod tool;
mod truncate;
#[cfg(feature = "watch")]
mod watch;

pub use cache_breakpoint::{CacheBreakpoint, CacheTtl, MAX_BREAKPOINTS};
pub use content::{Content, Data, Detail, Media, Part, Source};
pub use convert::{Converted, convert_prompty};
pub use diff::{MessageChange, MessageDiff, ModelChange, RenderDiff, Side, diff, model_changes};
pub use error::{Diagnostic, Error, ErrorKind, Location, Severity};
pub use hash::ContentHash;
pub use limits::RenderLimits;
pub use load::lint::lint;
pub use load::{Failures, LoadOptions};
pub use lock::{Change, LOCKFILE, Lockfile};
pub use media::sniff_media_type;
pub use message::{Message, Role};
pub use reference::{Reference, Selector};
pub use registry::Registry;
pub use render::{DroppedMessage, Origin, RenderOptions, Rendered};
pub use schema::SchemaMismatch;
pub use template::{
    Connection, ContextConfig, ModelConfig, Parameter, Template, Truncation, template_file_schema,
};
pub use tool::{Tool, ToolChoice, is_tool_name};
pub use truncate::{Strategy, TruncationReport};
#[cfg(feature = "watch")]
pub use watch::{ReloadEvent, WatchedRegistry};

/// The Rust examples of the README and the docs pages run as doc tests.
#[cfg(doctest)]
mod doc_pages {
    #[doc = include_str!("../README.md")]
    struct Readme;
    #[doc = include_str!("../docs/templates.md")]
    struct Templates;
    #[doc = include_str!("../docs/rendering.md")]
    struct Rendering;
    #[doc = include_str!("../docs/tokens.md")]
    struct Tokens;
    #[cfg(feature = "watch")]
    #[doc = include_str!("../docs/library.md")]
    struct Library;
    #[cfg(feature = "dispatch")]
    #[doc = include_str!("../docs/dispatch.md")]
    struct Dispatch;
    #[doc = include_str!("../docs/prompty.md")]
    struct Prompty;
    #[doc = include_str!("../docs/media.md")]
    struct Media;
    #[cfg(feature = "dispatch")]
    #[doc = include_str!("../docs/prompt-caching.md")]
    struct PromptCaching;
    #[doc = include_str!("../docs/architecture.md")]
    struct Architecture;
}

#[allow(dead_code)]
fn _assert_impls() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_clone<T: Clone>() {}
    assert_send_sync::<Registry>();
    assert_send_sync::<Error>();
    assert_send_sync::<Rendered>();
    assert_clone::<Registry>();
    #[cfg(feature = "watch")]
    assert_send_sync::<WatchedRegistry>();
}
