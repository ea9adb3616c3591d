//! Rendering: inputs in, role-tagged messages out.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::body::{self, Piece};
use crate::cache_breakpoint::{CacheBreakpoint, CacheTtl};
use crate::content::Part;
use crate::dialect::{Dialect, LeadingText};
use crate::error::{Error, ErrorKind};
use crate::input::InputMap;
use crate::jinja::jinja_error;
use crate::message::{Message, Role};
use crate::registry::Registry;
use crate::template::{ContextConfig, ModelConfig};
use crate::tokens::{self, TokenCounter, TokenReport};
use crate::truncate::{self, Item, Strategy, TruncationReport};

/// Options of [`Registry::render_with`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RenderOptions {
    model: Option<String>,
    counter: Option<Arc<dyn TokenCounter>>,
    strategy: Option<Strategy>,
    skip_tokens: bool,
}

impl std::fmt::Debug for RenderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderOptions")
            .field("model", &self.model)
            .field(
                "counter",
                &self.counter.as_ref().map(|c| c.name().to_owned()),
            )
            .field("strategy", &self.strategy)
            .field("count_tokens", &!self.skip_tokens)
            .finish()
    }
}

impl RenderOptions {
    /// Default options: the template's model, its tokenizer, and its
    /// `context.truncation` (else drop-oldest).
    pub fn new() -> RenderOptions {
        RenderOptions::default()
    }

    /// Renders for another model than the template's: `name` or
    /// `provider:name`. Picks the tokenizer and the context window, and is
    /// the model the result names ([`Rendered::model`]), so sending it goes
    /// there.
    pub fn model(mut self, model: impl Into<String>) -> RenderOptions {
        self.model = Some(model.into());
        self
    }

    /// Counts with this tokenizer instead of the model's.
    pub fn counter(mut self, counter: Arc<dyn TokenCounter>) -> RenderOptions {
        self.counter = Some(counter);
        self
    }

    /// Whether to count tokens (on by default). Off, the render's
    /// [`tokens`](Rendered::tokens) report is empty and nothing is
    /// truncated: for callers that count elsewhere, or not at all.
    pub fn count_tokens(mut self, yes: bool) -> RenderOptions {
        self.skip_tokens = !yes;
        self
    }

    /// How history is dropped when the prompt is over budget (over the
    /// template's `context.truncation`).
    pub fn strategy(mut self, strategy: Strategy) -> RenderOptions {
        self.strategy = Some(strategy);
        self
    }
}

/// Where a rendered message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Written by the template.
    Template,
    /// Spliced from a `messages` parameter (conversation history).
    History {
        /// The parameter's name.
        parameter: Arc<str>,
    },
}

/// The result of a render: the messages, and the settings a caller needs to
/// send them.
///
/// Serializes as
/// `{"template": "NAME@VERSION", "hash": "HEX", "messages": [{"role": ..., "content": ...}], "model": {...}, "context": {...}, "output_schema": {...}, "tools": [{"name", "description", "parameters"}], "tool_choice": ..., "output_retries": N, "tokens": {...}, "truncation": {...}, "dropped_empty": [{"role", "index"}], "cache_breakpoints": [{"messages", "ttl", "conversation", "tokens"}]}`
/// (`model`, `context`, `output_schema`, `tools`, `tool_choice`,
/// `output_retries` and `cache_breakpoints` only when the template has
/// them, `truncation` and `dropped_empty` only when something was
/// dropped; a message's `content` is a string, or an array of parts when
/// it has media: see [`crate::Content`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Rendered {
    /// `NAME@VERSION` of the template that rendered.
    pub template: String,
    /// That template's content hash ([`Template::hash`](crate::Template::hash)).
    pub hash: crate::hash::ContentHash,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The template's `model:` block (shared with the template), with the
    /// provider and name of [`RenderOptions::model`] when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<Arc<ModelConfig>>,
    /// The template's `context:` block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextConfig>,
    /// The answer's JSON Schema (the template's `output:`), shared with the
    /// template; absent when the answer is text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Arc<serde_json::Value>>,
    /// The tools the model may call (the template's `tools:`), shared with
    /// the template.
    #[serde(skip_serializing_if = "<[crate::tool::Tool]>::is_empty")]
    pub tools: Arc<[crate::tool::Tool]>,
    /// The template's `tool_choice:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<crate::tool::ToolChoice>,
    /// The template's `output_retries:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_retries: Option<u32>,
    /// Token counts of the messages (after truncation).
    pub tokens: TokenReport,
    /// What truncation dropped; present only when it dropped something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation: Option<TruncationReport>,
    /// Messages the template opened with a role line but whose text
    /// rendered empty: dropped (providers reject empty messages), and
    /// noted here; present only when there were some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped_empty: Vec<DroppedMessage>,
    /// The template's prompt-cache breakpoints, in order; present only when
    /// it marks some (see [`CacheBreakpoint`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_breakpoints: Vec<CacheBreakpoint>,
    /// The messages spliced from history, as runs in order; every other
    /// message is the template's.
    #[serde(skip)]
    history: Vec<HistoryRun>,
    /// The model the counts and budget were computed for.
    #[serde(skip)]
    rendered_for: RenderedFor,
    /// How history was fitted, and is fitted again for another model.
    #[serde(skip)]
    strategy: Strategy,
}

/// A message the template opened but that rendered empty, and was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DroppedMessage {
    /// Its role.
    pub role: Role,
    /// Where it would have been among the messages (0-based).
    pub index: usize,
}

/// `len` messages from `start` on, spliced from one history parameter.
#[derive(Debug, Clone, PartialEq)]
struct HistoryRun {
    start: usize,
    len: usize,
    origin: Origin,
}

/// Which model a render counted and fitted for.
#[derive(Debug, Clone, PartialEq)]
enum RenderedFor {
    /// The template's own `model.name` (or none).
    Template,
    /// Another, named in [`RenderOptions::model`] or by
    /// [`Rendered::for_model`].
    Named(Arc<str>),
}

/// The origin of every message outside the history runs.
static TEMPLATE: Origin = Origin::Template;

impl Rendered {
    /// Where message `i` came from (template text or a history parameter).
    pub fn origin(&self, i: usize) -> Option<&Origin> {
        if i >= self.messages.len() {
            return None;
        }
        let k = self.history.partition_point(|r| r.start + r.len <= i);
        match self.history.get(k) {
            Some(run) if run.start <= i => Some(&run.origin),
            _ => Some(&TEMPLATE),
        }
    }

    /// The messages with their origins.
    pub fn messages_with_origin(&self) -> impl Iterator<Item = (&Message, &Origin)> {
        (0..)
            .zip(&self.messages)
            .map(|(i, m)| (m, self.origin(i).unwrap_or(&TEMPLATE)))
    }

    /// The model name the counts and budget were computed for.
    pub(crate) fn rendered_for(&self) -> Option<&str> {
        match &self.rendered_for {
            RenderedFor::Template => self.model.as_ref().and_then(|m| m.name.as_deref()),
            RenderedFor::Named(name) => Some(name),
        }
    }
}

impl Registry {
    /// Renders a template.
    ///
    /// `reference` is `NAME`, `NAME@REQ` or `NAME@LABEL`. `inputs` is anything
    /// that serializes to a JSON object (a struct, a map, `serde_json::json!`).
    /// Defaults are applied, then the inputs are checked against the
    /// template's input schema; nothing renders unless they pass.
    ///
    /// # Errors
    /// - [`ErrorKind::Reference`] when the reference does not resolve;
    /// - [`ErrorKind::InvalidInput`] naming the parameter path and the rule
    ///   when the inputs do not satisfy the schema (see
    ///   [`Error::parameter`] and [`Error::rule`]);
    /// - [`ErrorKind::Template`] with file and line when Jinja fails.
    pub fn render(&self, reference: &str, inputs: &impl Serialize) -> Result<Rendered, Error> {
        self.render_with(reference, inputs, &RenderOptions::default())
    }

    /// Resolves the template, turns `inputs` into template values (one
    /// pass: see [`crate::input`]), applies defaults and validates (unless
    /// a lenient Prompty file).
    fn prepare_inputs(&self, reference: &str, inputs: &impl Serialize) -> Result<Prepared, Error> {
        let entry = self.entry(reference)?;
        let id = entry.id.clone();
        let mut inputs =
            crate::input::from_serialize(inputs, self.limits(), &id, entry.declared.len())?;
        for (name, default) in &entry.defaults {
            if !inputs.contains_key(name.as_str().unwrap_or_default()) {
                Arc::make_mut(&mut inputs).insert(name.clone(), default.clone());
            }
        }
        // Media is checked first, for its precise messages (and even where
        // a Prompty file validates nothing else: a provider would refuse
        // it), and bound for placing once the schema has passed.
        let max_media = self.limits().max_media_bytes;
        let bound = if entry.media.is_empty() {
            None
        } else {
            crate::media_input::bind(&inputs, &entry.media, max_media, &id)?
        };
        for p in entry.template.parameters.iter().filter(|p| p.messages) {
            if let Some(list) = inputs.get(&p.name) {
                check_history_parts(list, &p.name, max_media, &id)?;
            }
        }
        // Prompty files render what they are given, unless strict.
        if entry.dialect.validates_inputs {
            entry.schema.validate_inputs(&inputs, &id)?;
        }
        let mut media = Vec::new();
        if let Some((bound, table)) = bound {
            inputs = bound;
            media = table;
        }
        Ok(Prepared {
            entry,
            id,
            inputs,
            media,
        })
    }

    /// Checks `inputs` against the template's input schema (defaults
    /// applied first) without rendering: what [`render`](Registry::render)
    /// checks before it renders. Prompty templates not in strict mode accept
    /// anything.
    ///
    /// # Errors
    /// As [`render`](Registry::render) for unknown templates and invalid
    /// inputs.
    pub fn validate(&self, reference: &str, inputs: &impl Serialize) -> Result<(), Error> {
        self.prepare_inputs(reference, inputs).map(|_| ())
    }

    /// Renders with options: another model, another tokenizer, another
    /// truncation strategy.
    ///
    /// Every render counts its tokens (see [`TokenReport`]). When the
    /// template's `context:` (or the model's known window) gives a budget of
    /// `max_tokens - reserve_output` and the prompt exceeds it, history
    /// messages are dropped as [`Strategy`] says.
    ///
    /// # Errors
    /// As [`render`](Registry::render), and [`ErrorKind::Budget`] when the
    /// prompt cannot fit even with all droppable history dropped; the
    /// message gives the tokens needed and the budget.
    pub fn render_with(
        &self,
        reference: &str,
        inputs: &impl Serialize,
        options: &RenderOptions,
    ) -> Result<Rendered, Error> {
        if let Some(model) = &options.model
            && (model.trim().is_empty() || model.trim() != model)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the model name {model:?} is blank or has spaces around it; name a model such \
                     as `gpt-4o` (or leave it out to use the template's)"
                ),
            ));
        }
        let Prepared {
            entry,
            id,
            mut inputs,
            media,
        } = self.prepare_inputs(reference, inputs)?;
        let t = &entry.template;
        let limits = *self.limits();
        // What Jinja sees (and history is spliced from): every declared
        // parameter present, none when optional and absent. Strings were
        // made unable to carry a role marker as they were serialized.
        let declare_absent = entry.dialect.absent_input == crate::dialect::AbsentInput::None;
        for name in entry.declared.iter().filter(|_| declare_absent) {
            if !inputs.contains_key(name.as_str().unwrap_or_default()) {
                Arc::make_mut(&mut inputs).insert(name.clone(), minijinja::Value::from(()));
            }
        }
        let ctx = InputMap::shared_value(inputs.clone());
        let template = self
            .env_for(entry.dialect)
            .get_template(&entry.jinja_name)
            .map_err(|e| jinja_error(&e, self.index()))?;
        let output = template
            .render(&ctx)
            .map_err(|e| jinja_error(&e, self.index()))?;

        if output.len() > limits.max_output_bytes {
            return Err(Error::new(
                ErrorKind::Limit,
                format!(
                    "{id} rendered {} bytes, over RenderLimits::max_output_bytes ({})",
                    output.len(),
                    limits.max_output_bytes
                ),
            )
            .with_location(crate::error::Location::file(&t.path)));
        }
        let Assembled {
            messages,
            history,
            dropped,
            breakpoints,
        } = assemble(
            &id,
            &output,
            &inputs,
            &media,
            entry.implicit_user,
            entry.dialect,
            entry
                .messages_hint
                .load(std::sync::atomic::Ordering::Relaxed),
            limits.max_media_bytes,
        )
        .map_err(|e| match e {
            Fault::Template(msg) => Error::new(ErrorKind::Template, msg)
                .with_location(crate::error::Location::file(&t.path)),
            Fault::Input(e) => e,
        })?;
        entry
            .messages_hint
            .store(messages.len(), std::sync::atomic::Ordering::Relaxed);

        // A model named at render time is the model the result is for:
        // `send` goes there.
        let model = match &options.model {
            Some(name)
                if Some(name.as_str()) != t.model.as_ref().and_then(|m| m.name.as_deref()) =>
            {
                Some(Arc::new(overridden_model(t.model.as_deref(), name)))
            }
            _ => t.model.clone(),
        };
        let mut rendered = Rendered {
            template: id,
            hash: t.hash,
            messages,
            dropped_empty: dropped,
            cache_breakpoints: breakpoints,
            model,
            context: t.context.clone(),
            output_schema: t.output_schema.clone(),
            tools: t.tools.clone(),
            tool_choice: t.tool_choice.clone(),
            output_retries: t.output_retries,
            tokens: TokenReport::empty(),
            truncation: None,
            history,
            strategy: options
                .strategy
                .or_else(|| t.context.as_ref().and_then(ContextConfig::strategy))
                .unwrap_or_default(),
            rendered_for: match &options.model {
                Some(name)
                    if Some(name.as_str()) != t.model.as_ref().and_then(|m| m.name.as_deref()) =>
                {
                    RenderedFor::Named(Arc::from(name.as_str()))
                }
                _ => RenderedFor::Template,
            },
        };
        if options.skip_tokens {
            return Ok(rendered);
        }
        let model_name = rendered.rendered_for();
        let counter = options
            .counter
            .clone()
            .unwrap_or_else(|| tokens::counter_for_model(model_name));
        let budget = budget(t.model.as_deref(), t.context.as_ref(), model_name);
        rendered.tokens = tokens::count_messages(counter.as_ref(), &rendered.messages);
        rendered.count_breakpoints();
        if let Some(budget) = budget {
            rendered.fit_budget(budget, rendered.strategy)?;
        }
        Ok(rendered)
    }
}

/// The template's `model:` block with another model named: `provider:name`
/// sets both, a bare `name` the name (its provider is then inferred when
/// sending). Parameters and fallbacks stay the template's.
fn overridden_model(template: Option<&ModelConfig>, spec: &str) -> ModelConfig {
    let mut model = template.cloned().unwrap_or_default();
    match spec.split_once(':') {
        Some((provider, name)) if !provider.is_empty() && !provider.contains(['.', '/']) => {
            model.provider = Some(provider.to_owned());
            model.name = Some(name.to_owned());
        }
        _ => {
            model.provider = None;
            model.name = Some(spec.to_owned());
        }
    }
    model
}

/// The prompt's budget: `max_tokens` (from `context:`, else the model's
/// known window) minus `reserve_output` (from `context:`, else the model's
/// `max_tokens` / `max_completion_tokens` parameter, else 0).
#[derive(Debug, Clone, Copy)]
struct Budget {
    max_tokens: u64,
    reserve_output: u64,
}

fn budget(
    model: Option<&ModelConfig>,
    context: Option<&ContextConfig>,
    model_name: Option<&str>,
) -> Option<Budget> {
    let max_tokens = context
        .and_then(|c| c.max_tokens)
        .or_else(|| model_name.and_then(|n| tokens::model_info(n).context_window))?;
    let reserve_output = context
        .and_then(|c| c.reserve_output)
        .or_else(|| {
            let params = &model?.parameters;
            params
                .get("max_tokens")
                .or_else(|| params.get("max_completion_tokens"))
                .and_then(Value::as_u64)
        })
        .unwrap_or(0);
    Some(Budget {
        max_tokens,
        reserve_output,
    })
}

impl Rendered {
    /// This prompt as it must go to `model_name`: the same when it was
    /// rendered for that model; otherwise recounted with that model's
    /// tokenizer and fitted to its budget by the render's strategy.
    #[cfg_attr(not(feature = "dispatch"), allow(dead_code))]
    pub(crate) fn for_model(
        &self,
        model_name: &str,
    ) -> Result<std::borrow::Cow<'_, Rendered>, Error> {
        let bare = |m: &str| m.rsplit_once(':').map_or(m, |(_, n)| n).to_owned();
        if self.rendered_for().map(bare) == Some(bare(model_name)) {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let mut r = self.clone();
        r.recount(tokens::counter_for_model(Some(model_name)).as_ref());
        if let Some(b) = budget(
            self.model.as_deref(),
            self.context.as_ref(),
            Some(model_name),
        ) {
            r.fit_budget(b, self.strategy)?;
        }
        r.rendered_for = RenderedFor::Named(Arc::from(model_name));
        Ok(std::borrow::Cow::Owned(r))
    }

    fn fit_budget(&mut self, budget: Budget, strategy: Strategy) -> Result<(), Error> {
        let limit = usize::try_from(budget.max_tokens.saturating_sub(budget.reserve_output))
            .unwrap_or(usize::MAX);
        let detail = format!(
            " (max_tokens {} - reserve_output {})",
            budget.max_tokens, budget.reserve_output
        );
        self.fit_inner(limit, strategy, &detail).map(|_| ())
    }

    /// Recounts every message with `counter` (cached counts are reused).
    pub fn recount(&mut self, counter: &dyn TokenCounter) {
        self.tokens = tokens::count_messages(counter, &self.messages);
        self.count_breakpoints();
    }

    /// Each breakpoint's prefix tokens, from the message counts.
    fn count_breakpoints(&mut self) {
        for b in &mut self.cache_breakpoints {
            b.tokens = self.tokens.messages.iter().take(b.messages).sum();
        }
    }

    /// Drops history messages until the prompt fits `budget` tokens, as
    /// `strategy` says, using the counts in [`tokens`](Rendered::tokens).
    /// Rendering already does this with the template's budget; call it to
    /// fit another budget. Returns what was dropped, if anything.
    ///
    /// # Errors
    /// [`ErrorKind::Budget`] with the tokens needed and the budget when the
    /// prompt cannot fit; the messages are then left as they were.
    pub fn fit(
        &mut self,
        budget: usize,
        strategy: Strategy,
    ) -> Result<Option<TruncationReport>, Error> {
        self.fit_inner(budget, strategy, "")
    }

    fn fit_inner(
        &mut self,
        budget: usize,
        strategy: Strategy,
        detail: &str,
    ) -> Result<Option<TruncationReport>, Error> {
        let items: Vec<Item> = self
            .messages_with_origin()
            .zip(&self.tokens.messages)
            .map(|((m, o), &n)| Item {
                tokens: n,
                history: matches!(o, Origin::History { .. }),
                role: m.role,
                calls_tools: m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()),
            })
            .collect();
        // The reply priming as this render's counter counted it.
        let priming = self
            .tokens
            .total
            .saturating_sub(self.tokens.messages.iter().sum::<usize>());
        let (keep, dropped) = truncate::fit(&items, priming, budget, strategy).map_err(|e| {
            let all = if e.droppable > 0 {
                format!(
                    ", even with all {} droppable history messages dropped",
                    e.droppable
                )
            } else {
                String::new()
            };
            Error::new(
                ErrorKind::Budget,
                format!(
                    "{} needs {} tokens but its budget is {budget}{detail}{all}",
                    self.template, e.needed
                ),
            )
        })?;
        if dropped == 0 {
            return Ok(None);
        }
        retain_kept(&mut self.messages, &keep);
        retain_runs(&mut self.history, &keep);
        // Where each message index moves: the kept messages before it (one
        // pass, so a long history with media is not quadratic).
        let mut kept_before = Vec::with_capacity(keep.len() + 1);
        kept_before.push(0);
        for &k in &keep {
            let last = kept_before.last().copied().unwrap_or(0);
            kept_before.push(last + usize::from(k));
        }
        let moved = |i: usize| kept_before[i.min(keep.len())];
        for b in &mut self.cache_breakpoints {
            b.messages = moved(b.messages);
        }
        retain_kept(&mut self.tokens.messages, &keep);
        self.tokens.media.retain_mut(|m| {
            let kept = keep.get(m.message).copied().unwrap_or(true);
            m.message = moved(m.message);
            kept
        });
        self.tokens.total = self.tokens.messages.iter().sum::<usize>() + priming;
        self.count_breakpoints();
        let report = TruncationReport { budget, dropped };
        self.truncation = Some(report);
        Ok(Some(report))
    }
}

/// Keeps the items whose flag in `keep` is set (same order, same length).
fn retain_kept<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter().copied();
    items.retain(|_| flags.next().unwrap_or(true));
}

/// Moves the history runs to where their kept messages are once the
/// messages `keep` does not flag are gone; runs left empty are dropped.
fn retain_runs(runs: &mut Vec<HistoryRun>, keep: &[bool]) {
    let kept = |from: usize, to: usize| {
        keep.get(from..to)
            .map_or(0, |flags| flags.iter().filter(|&&k| k).count())
    };
    let (mut at, mut before) = (0, 0);
    runs.retain_mut(|run| {
        before += kept(at, run.start);
        let len = kept(run.start, run.start + run.len);
        at = run.start + run.len;
        run.start = before;
        run.len = len;
        before += len;
        len > 0
    });
}

/// A render's inputs, checked: the template, its id, the inputs as
/// templates see them (media bound), and the table of media parts.
struct Prepared {
    entry: Arc<crate::registry::Entry>,
    id: String,
    inputs: Arc<InputMap>,
    media: Vec<crate::content::Part>,
}

/// Why assembling failed: the template's fault, or an input's.
enum Fault {
    Template(String),
    Input(Error),
}

impl From<String> for Fault {
    fn from(s: String) -> Fault {
        Fault::Template(s)
    }
}

impl From<&str> for Fault {
    fn from(s: &str) -> Fault {
        Fault::Template(s.to_owned())
    }
}

/// The input error for content parts of history parameter `param` that
/// are not valid.
fn history_part_error(
    e: &crate::history_parts::Invalid,
    param: &str,
    index: usize,
    template: &str,
) -> Error {
    let pointer = format!("/{param}/{index}/content{}", e.pointer);
    Error::new(
        ErrorKind::InvalidInput,
        format!(
            "invalid input for {template}: {pointer}: {} (rule `{}`)",
            e.message, e.rule
        ),
    )
    .with_parameter(pointer, e.rule)
}

/// Checks the content parts of a history parameter's messages (those
/// whose content is an array) before anything renders.
fn check_history_parts(
    list: &minijinja::Value,
    param: &str,
    max_media: usize,
    template: &str,
) -> Result<(), Error> {
    let Some(items) = list.downcast_object_ref::<Vec<minijinja::Value>>() else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let Some(content) = item
            .downcast_object_ref::<InputMap>()
            .and_then(|m| m.get("content"))
        else {
            continue;
        };
        if content
            .downcast_object_ref::<Vec<minijinja::Value>>()
            .is_none()
        {
            continue;
        }
        let json = serde_json::to_value(content).unwrap_or(Value::Null);
        crate::history_parts::content_limited(&json, "", max_media)
            .map_err(|e| history_part_error(&e, param, i, template))?;
    }
    Ok(())
}

/// A history parameter's messages read straight from the input values:
/// what deserializing [`Message`] gives, for the shapes the history schema
/// allows; `Ok(None)` for anything else (for serde to read or reject).
/// Content arrays are normalised to our parts ([`crate::history_parts`]).
fn history_messages(
    list: &minijinja::Value,
    max_media: usize,
) -> Result<Option<Vec<Message>>, (usize, crate::history_parts::Invalid)> {
    let Some(items) = list.downcast_object_ref::<Vec<minijinja::Value>>() else {
        return Ok(None);
    };
    let text = |v: &minijinja::Value| -> Option<Option<String>> {
        if v.is_none() {
            Some(None)
        } else {
            v.as_str().map(|s| Some(s.to_owned()))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(map) = item.downcast_object_ref::<InputMap>() else {
            return Ok(None);
        };
        let Some(role) = map
            .get("role")
            .and_then(|r| r.as_str())
            .and_then(|r| r.parse::<Role>().ok())
        else {
            return Ok(None);
        };
        let mut m = Message::new(role, String::new());
        let mut content = false;
        for (key, v) in map.iter() {
            let ok = match key {
                "role" => true,
                "content" if v.downcast_object_ref::<Vec<minijinja::Value>>().is_some() => {
                    let json = serde_json::to_value(v).unwrap_or(Value::Null);
                    m.content = crate::history_parts::content_limited(&json, "", max_media)
                        .map_err(|e| (i, e))?;
                    content = true;
                    true
                }
                "content" => match text(v) {
                    Some(t) => {
                        m.content = t.unwrap_or_default().into();
                        content = true;
                        true
                    }
                    None => false,
                },
                "name" => text(v).map(|t| m.name = t).is_some(),
                "tool_call_id" => text(v).map(|t| m.tool_call_id = t).is_some(),
                "tool_calls" if v.is_none() => {
                    m.tool_calls = None;
                    true
                }
                "tool_calls" => match serde_json::to_value(v) {
                    Ok(Value::Array(calls)) => {
                        m.tool_calls = Some(calls);
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return Ok(None);
            }
        }
        if !content {
            return Ok(None);
        }
        out.push(m);
    }
    Ok(Some(out))
}

/// Cuts rendered output into messages, splices history and places media.
///
/// Media goes where its marker is. In promptbook's own templates it must
/// be in a user message (the only role both OpenAI and Anthropic take
/// media in), and the message becomes parts: the text before it (trimmed),
/// the media, the text after. Prompty files follow Prompty's runtime
/// (2.1.0, `_expand_thread_markers`): the text before stays a message of
/// its role, the media joins the message before it when that is a user
/// message and is a user message of its own otherwise, and the text after
/// starts a new message of the first role, all text stripped.
#[allow(clippy::too_many_arguments)]
fn assemble(
    template: &str,
    output: &str,
    inputs: &InputMap,
    media: &[Part],
    implicit_user: bool,
    dialect: Dialect,
    capacity: usize,
    max_media: usize,
) -> Result<Assembled, Fault> {
    /// A message being written: role, name, finished parts, the text being
    /// written, and whether a role line opened it (Prompty keeps such a
    /// message even when empty). The text borrows from the output until a
    /// second piece joins it.
    struct Open<'a> {
        role: Role,
        name: Option<&'a str>,
        parts: Vec<Part>,
        text: Cow<'a, str>,
        explicit: bool,
        /// Text after media in a Prompty file: stripped whole.
        stripped: bool,
        /// A cache breakpoint ended it (its TTL, and whether it is a
        /// conversation breakpoint): only blank text may follow.
        closed_by: Option<(Option<CacheTtl>, bool)>,
    }
    impl<'a> Open<'a> {
        fn new(role: Role, name: Option<&'a str>, text: &'a str, explicit: bool) -> Open<'a> {
            Open {
                role,
                name,
                parts: Vec::new(),
                text: Cow::Borrowed(text),
                explicit,
                stripped: false,
                closed_by: None,
            }
        }

        fn push(&mut self, piece: &'a str) {
            if self.text.is_empty() {
                self.text = Cow::Borrowed(piece);
            } else {
                self.text.to_mut().push_str(piece);
            }
        }
    }
    let native = dialect.grammar == crate::body::Grammar::Native;
    let mut messages = Vec::with_capacity(capacity);
    let mut history_runs = Vec::new();
    let mut current: Option<Open<'_>> =
        implicit_user.then(|| Open::new(Role::User, None, "", false));
    // The role text continues with after a splice that no role line follows.
    let mut resume: Option<Role> = None;

    let mut dropped = Vec::new();
    let mut breakpoints: Vec<CacheBreakpoint> = Vec::new();
    // Whether a history splice came before this point of the output.
    let mut spliced = false;
    let mut flush = |current: &mut Option<Open<'_>>,
                     messages: &mut Vec<Message>,
                     breakpoints: &mut Vec<CacheBreakpoint>| {
        let Some(open) = current.take() else { return };
        let closed_by = open.closed_by;
        let text = if open.stripped {
            Some(open.text.trim()).filter(|t| !t.is_empty())
        } else if open.parts.is_empty() {
            dialect.message_text.finish(&open.text, open.explicit)
        } else {
            Some(open.text.trim()).filter(|t| !t.is_empty())
        };
        let content = if open.parts.is_empty() {
            text.map(|t| crate::content::Content::Text(t.to_owned()))
        } else {
            let mut parts = open.parts;
            parts.extend(text.map(|t| Part::Text(t.to_owned())));
            Some(crate::content::Content::from_parts(parts))
        };
        match content {
            Some(content) => {
                let mut m = Message::new(open.role, content);
                m.name = open.name.map(str::to_owned);
                messages.push(m);
            }
            None if open.explicit => dropped.push(DroppedMessage {
                role: open.role,
                index: messages.len(),
            }),
            None => {}
        }
        if let Some((ttl, conversation)) = closed_by {
            breakpoints.push(CacheBreakpoint {
                messages: messages.len(),
                ttl,
                conversation,
                tokens: 0,
            });
        }
    };

    for piece in body::pieces(output) {
        match piece? {
            Piece::Role(role, name) => {
                flush(&mut current, &mut messages, &mut breakpoints);
                current = Some(Open::new(role, name, "", true));
                resume = None;
            }
            Piece::Text(text) => match &mut current {
                Some(open) if open.closed_by.is_some() && !text.trim().is_empty() => {
                    return Err(after_breakpoint(open.role).into());
                }
                Some(open) => open.push(text),
                None => match resume {
                    Some(role) => current = Some(Open::new(role, None, text, false)),
                    None if text.trim().is_empty() => {}
                    None => match dialect.leading_text {
                        LeadingText::Message(role) => {
                            current = Some(Open::new(role, None, text, false));
                        }
                        LeadingText::Error => {
                            return Err(
                                "the template wrote text before its first role line (an include or macro may be the cause)"
                                    .into(),
                            );
                        }
                    },
                },
            },
            Piece::Breakpoint(ttl, in_source) => match &mut current {
                Some(open) if open.closed_by.is_some() => {
                    return Err(
                        "two cache breakpoints in a row mark the same place; keep one".into(),
                    );
                }
                Some(open) if !open.text.trim().is_empty() || !open.parts.is_empty() => {
                    open.closed_by = Some((ttl, in_source || spliced));
                }
                _ => breakpoints.push(CacheBreakpoint {
                    messages: messages.len(),
                    ttl,
                    conversation: in_source || spliced,
                    tokens: 0,
                }),
            },
            Piece::Media(index) => {
                let Some(part) = media.get(index) else {
                    return Err(crate::body::FORGED.into());
                };
                if let Some(open) = &current
                    && open.closed_by.is_some()
                {
                    return Err(after_breakpoint(open.role).into());
                }
                let role =
                    current
                        .as_ref()
                        .map(|o| o.role)
                        .or(resume)
                        .or(match dialect.leading_text {
                            LeadingText::Message(role) => Some(role),
                            LeadingText::Error => None,
                        });
                let Some(role) = role else {
                    return Err(format!(
                        "the template placed {} before its first role line; put it in a user \
                         message",
                        a_kind(part)
                    )
                    .into());
                };
                if native {
                    if role != Role::User {
                        return Err(format!(
                            "the template placed {} in a {role} message; media goes in user \
                             messages (the only role OpenAI and Anthropic take it in)",
                            a_kind(part)
                        )
                        .into());
                    }
                    let open = current.get_or_insert_with(|| Open::new(role, None, "", false));
                    let before = std::mem::take(&mut open.text);
                    let before = before.trim();
                    if !before.is_empty() {
                        open.parts.push(Part::Text(before.to_owned()));
                    }
                    open.parts.push(part.clone());
                } else {
                    // Prompty's runtime: see the function's docs.
                    let name = current.as_ref().and_then(|o| o.name);
                    if let Some(open) = current.as_mut() {
                        open.stripped = true;
                        if open.text.trim().is_empty() {
                            open.explicit = false;
                        }
                    }
                    flush(&mut current, &mut messages, &mut breakpoints);
                    match messages.last_mut() {
                        Some(last) if last.role == Role::User => {
                            let mut parts = last.content.parts().into_owned();
                            parts.push(part.clone());
                            last.content = crate::content::Content::Parts(parts);
                        }
                        _ => messages.push(Message::new(
                            Role::User,
                            crate::content::Content::Parts(vec![part.clone()]),
                        )),
                    }
                    let mut after = Open::new(role, name, "", false);
                    after.stripped = true;
                    current = Some(after);
                }
            }
            Piece::Splice(param) => {
                spliced = true;
                let role = current.as_ref().map(|o| o.role).or(resume);
                flush(&mut current, &mut messages, &mut breakpoints);
                resume = role;
                // Its strings were made marker-free as the inputs were
                // serialized, and the schema has checked its shape.
                let history: Vec<Message> = match inputs.get(param) {
                    None => Vec::new(),
                    Some(list) if list.is_none() || list.is_undefined() => Vec::new(),
                    Some(list) => match history_messages(list, max_media) {
                        Ok(Some(history)) => history,
                        Err((i, e)) => {
                            return Err(Fault::Input(history_part_error(&e, param, i, template)));
                        }
                        // Anything unusual: serde decides, and explains.
                        Ok(None) => <Vec<Message> as serde::Deserialize>::deserialize(list.clone())
                            .map_err(|e| format!("history parameter `{param}`: {e}"))?,
                    },
                };
                if !history.is_empty() {
                    history_runs.push(HistoryRun {
                        start: messages.len(),
                        len: history.len(),
                        origin: Origin::History {
                            parameter: Arc::from(param),
                        },
                    });
                    messages.extend(history);
                }
            }
        }
    }
    flush(&mut current, &mut messages, &mut breakpoints);
    breakpoints.dedup_by(|b, a| b.messages == a.messages && b.ttl == a.ttl);
    crate::cache_breakpoint::check(&breakpoints)?;
    Ok(Assembled {
        messages,
        history: history_runs,
        dropped,
        breakpoints,
    })
}

fn after_breakpoint(role: Role) -> String {
    let a = if role == Role::Assistant { "an" } else { "a" };
    format!(
        "the template wrote more of {a} {role} message after a cache breakpoint; a breakpoint goes \
         between messages (right before a role line, a history splice or the end)"
    )
}

/// "an image", "a file", "audio", for messages.
fn a_kind(part: &Part) -> &'static str {
    match part.kind() {
        "image" => "an image",
        "file" => "a file",
        _ => "audio",
    }
}

/// What cutting an output produced.
struct Assembled {
    messages: Vec<Message>,
    history: Vec<HistoryRun>,
    dropped: Vec<DroppedMessage>,
    breakpoints: Vec<CacheBreakpoint>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn history_read_directly_is_what_serde_reads() {
        let list = serde_json::json!([
            {"role": "user", "content": "hi", "name": "ann"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"content": "first", "role": "developer", "name": null},
        ]);
        let inputs = serde_json::json!({ "h": list });
        let map =
            crate::input::from_serialize(&inputs, &crate::limits::RenderLimits::default(), "t", 0)
                .unwrap_or_else(|e| panic!("{e}"));
        let value = map.get("h").unwrap();
        let direct = super::history_messages(value, 1 << 20)
            .ok()
            .flatten()
            .expect("a plain history");
        let via_serde: Vec<crate::message::Message> = serde_json::from_value(list).unwrap();
        assert_eq!(direct, via_serde);
        // Unusual shapes are left to serde.
        for odd in [
            serde_json::json!([{"role": "user"}]),
            serde_json::json!([{"role": "king", "content": "x"}]),
            serde_json::json!([{"role": "user", "content": "x", "extra": 1}]),
            serde_json::json!([{"role": "user", "content": 5}]),
        ] {
            let inputs = serde_json::json!({ "h": odd });
            let map = crate::input::from_serialize(
                &inputs,
                &crate::limits::RenderLimits::default(),
                "t",
                0,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                matches!(
                    super::history_messages(map.get("h").unwrap(), 1 << 20),
                    Ok(None)
                ),
                "{odd}"
            );
        }
    }

    #[test]
    fn history_runs_follow_their_kept_messages() {
        use super::{HistoryRun, Origin, retain_runs};
        let run = |start, len, p: &str| HistoryRun {
            start,
            len,
            origin: Origin::History {
                parameter: p.into(),
            },
        };
        // Messages: t h h t h h h t (runs `a` at 1..3 and `b` at 4..7).
        let mut runs = vec![run(1, 2, "a"), run(4, 3, "b")];
        let keep = [true, false, false, true, false, true, true, true];
        retain_runs(&mut runs, &keep);
        assert_eq!(runs, [run(2, 2, "b")]);
        let mut runs = vec![run(1, 2, "a"), run(4, 3, "b")];
        retain_runs(&mut runs, &[true; 8]);
        assert_eq!(runs, [run(1, 2, "a"), run(4, 3, "b")]);
    }
}
