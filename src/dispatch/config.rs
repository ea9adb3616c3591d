//! Providers, retries, timeouts and limits.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use super::breaker::CircuitBreaker;
use super::error::DispatchError;
use super::state::StateConfig;

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI's chat completions (`POST {base}/chat/completions`): OpenAI
    /// and every compatible server (DashScope, vLLM, Ollama, Azure, ...).
    Openai,
    /// Anthropic's messages API (`POST {base}/v1/messages`).
    Anthropic,
}

/// Client-side limits for one provider: requests wait rather than fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Requests started per minute.
    pub requests_per_minute: Option<u32>,
    /// Prompt tokens sent per minute (the rendered prompt's counted
    /// tokens).
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once (a stream counts until it ends).
    pub concurrent: Option<u32>,
    /// How much of a per-minute quota may be spent at once, as the time it
    /// covers (`providers.yaml`: `window: 10s`; default one minute): a
    /// quota of `n` per minute lets `n × window / 1 min` (at least one)
    /// through at once, then one more every `1 min / n`. Azure OpenAI, for
    /// one, enforces its per-minute quotas over 1 or 10 second windows.
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub window: Option<Duration>,
}

impl Limits {
    /// No limits.
    pub fn new() -> Limits {
        Limits::default()
    }

    /// At most `n` requests started per minute.
    pub fn requests_per_minute(mut self, n: u32) -> Limits {
        self.requests_per_minute = Some(n);
        self
    }

    /// At most `n` prompt tokens sent per minute.
    pub fn tokens_per_minute(mut self, n: u32) -> Limits {
        self.tokens_per_minute = Some(n);
        self
    }

    /// At most `n` requests in flight.
    pub fn concurrent(mut self, n: u32) -> Limits {
        self.concurrent = Some(n);
        self
    }

    /// Spends at most `window`'s share of a per-minute quota at once (see
    /// [`Limits::window`]).
    pub fn window(mut self, window: Duration) -> Limits {
        self.window = Some(window);
        self
    }

    /// Settings the clock can hold: `window` within (0, 1 day].
    pub(crate) fn check(&self) -> Result<(), String> {
        match self.window {
            Some(w) => super::duration::check("limits.window", w),
            None => Ok(()),
        }
    }

    /// How many of a quota of `per_minute` may go at once: `per_minute ×
    /// window / 1 min`, at least 1 and at most `per_minute`.
    pub(crate) fn burst(&self, per_minute: u32) -> u32 {
        let window = self.window.unwrap_or(Duration::from_secs(60));
        let share = u128::from(per_minute) * window.as_millis() / 60_000;
        u32::try_from(share)
            .unwrap_or(u32::MAX)
            .clamp(1, per_minute.max(1))
    }

    #[cfg(feature = "redis")]
    /// These limits shared by `replicas` processes: each quota divided
    /// (rounded down, at least 1), for the `local` outage policy.
    pub(crate) fn divided(&self, replicas: u32) -> Limits {
        let part = |n: Option<u32>| n.map(|n| (n / replicas.max(1)).max(1));
        Limits {
            requests_per_minute: part(self.requests_per_minute),
            tokens_per_minute: part(self.tokens_per_minute),
            concurrent: part(self.concurrent),
            window: self.window,
        }
    }
}

/// Where and how to reach one provider. Holds the *name* of the variable
/// with the key, never the key: keys are read from the environment at
/// call time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// The wire format.
    pub kind: ProviderKind,
    /// The API base: `https://api.openai.com/v1` (the chat completions path
    /// is appended), `https://api.anthropic.com` (`/v1/messages` is
    /// appended).
    pub base_url: String,
    /// The environment variable holding the key. `None`: send no key (a
    /// local Ollama or vLLM).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Send the key in this header, as is, instead of the kind's usual one
    /// (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic):
    /// `api-key` for Azure OpenAI.
    #[serde(default)]
    pub auth_header: Option<String>,
    /// Extra query parameters on every request (Azure's `api-version`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra headers on every request. Not for secrets: they are shown by
    /// `Debug`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Client-side rate limits.
    #[serde(default)]
    pub limits: Limits,
    /// How the server takes a template's output schema (`output:`); the
    /// kind's own structured outputs by default.
    #[serde(default)]
    pub structured_output: StructuredOutput,
    /// When to stop sending to one of this provider's models for a while
    /// (`circuit_breaker: {failures, window, cooldown}`); `None`: the
    /// client's (see
    /// [`ClientBuilder::circuit_breaker`](super::ClientBuilder::circuit_breaker)).
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Prices per model (the model name asked for), per million tokens:
    /// when the answering model has them, [`Response::cost`](super::Response::cost)
    /// says what the answer cost.
    #[serde(default)]
    pub prices: BTreeMap<String, super::price::Prices>,
}

/// How a provider takes a template's output schema, for servers that lack
/// the kind's structured-output field (`providers.yaml`
/// `structured_output:`). Whatever the mode, the answer is validated
/// against the schema on our side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StructuredOutput {
    /// The kind's own field: OpenAI's `response_format: json_schema` (in
    /// strict mode), Anthropic's `output_config.format`.
    #[default]
    JsonSchema,
    /// OpenAI's JSON mode (`response_format: {"type": "json_object"}`), with
    /// the schema given to the model as an instruction in the system
    /// message.
    JsonObject,
    /// A tool the model must call, whose parameters are the schema; its
    /// arguments are the answer.
    Tool,
    /// Nothing on the wire: the schema is an instruction in the system
    /// message.
    None,
}

impl ProviderConfig {
    /// A provider of `kind` at `base_url`, keyed by the variable
    /// `api_key_env` (or no key).
    pub fn new(
        kind: ProviderKind,
        base_url: impl Into<String>,
        api_key_env: Option<&str>,
    ) -> ProviderConfig {
        ProviderConfig {
            kind,
            base_url: base_url.into(),
            api_key_env: api_key_env.map(str::to_owned),
            auth_header: None,
            query: BTreeMap::new(),
            headers: BTreeMap::new(),
            limits: Limits::default(),
            structured_output: StructuredOutput::default(),
            circuit_breaker: None,
            prices: BTreeMap::new(),
        }
    }

    /// The same provider taking output schemas as `mode` says.
    pub fn with_structured_output(mut self, mode: StructuredOutput) -> ProviderConfig {
        self.structured_output = mode;
        self
    }

    /// The same provider with `prices` for `model` (per million tokens).
    pub fn with_prices(
        mut self,
        model: impl Into<String>,
        prices: super::price::Prices,
    ) -> ProviderConfig {
        self.prices.insert(model.into(), prices);
        self
    }

    /// The same provider with client-side limits.
    pub fn with_limits(mut self, limits: Limits) -> ProviderConfig {
        self.limits = limits;
        self
    }

    /// OpenAI: `OPENAI_BASE_URL` (default `https://api.openai.com/v1`),
    /// key from `OPENAI_API_KEY`.
    pub fn openai_from_env() -> ProviderConfig {
        ProviderConfig::new(
            ProviderKind::Openai,
            env_or("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            Some("OPENAI_API_KEY"),
        )
    }

    /// Anthropic: `ANTHROPIC_BASE_URL` (default `https://api.anthropic.com`),
    /// key from `ANTHROPIC_API_KEY`.
    pub fn anthropic_from_env() -> ProviderConfig {
        ProviderConfig::new(
            ProviderKind::Anthropic,
            env_or("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            Some("ANTHROPIC_API_KEY"),
        )
    }
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// How long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Opening a connection (default 10 s).
    pub connect: Duration,
    /// A whole request; for a stream, until the response headers arrive
    /// (default 600 s, as the official SDKs).
    pub request: Duration,
    /// Between two events of a stream (default 60 s).
    pub idle: Duration,
    /// A whole stream, from the request to its last event (default
    /// 600 s): a stream that keeps sending keep-alives or trickles forever
    /// still ends.
    pub stream: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(600),
            idle: Duration::from_secs(60),
            stream: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// Sets the connect, request and idle timeouts; the whole-stream
    /// bound keeps its default.
    pub fn new(connect: Duration, request: Duration, idle: Duration) -> Timeouts {
        Timeouts {
            connect,
            request,
            idle,
            ..Timeouts::default()
        }
    }

    /// Sets the bound on a whole stream.
    pub fn stream(mut self, total: Duration) -> Timeouts {
        self.stream = total;
        self
    }
}

/// How much of a provider's answer is read, so that a broken or hostile
/// endpoint cannot make a call hold unbounded memory. Going over a bound
/// is an [`ErrorKind::Stream`](super::ErrorKind::Stream) error
/// (not retried: the same endpoint would send the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SizeLimits {
    /// A whole answer, in bytes: the body of a non-streamed answer, or the
    /// text and tool-call arguments a stream delivers. Default 64 MiB.
    pub response_bytes: usize,
    /// One event of a stream (its lines together), in bytes. Default
    /// 16 MiB.
    pub event_bytes: usize,
    /// What is read of an error answer's body, in bytes; the rest is not
    /// read. Default 64 KiB. What an error shows of it is cut further, to
    /// 500 characters.
    pub error_bytes: usize,
}

impl Default for SizeLimits {
    fn default() -> SizeLimits {
        SizeLimits {
            response_bytes: 64 << 20,
            event_bytes: 16 << 20,
            error_bytes: 64 << 10,
        }
    }
}

impl SizeLimits {
    /// The defaults.
    pub fn new() -> SizeLimits {
        SizeLimits::default()
    }

    /// Sets the largest whole answer.
    pub fn response_bytes(mut self, n: usize) -> SizeLimits {
        self.response_bytes = n;
        self
    }

    /// Sets the largest stream event.
    pub fn event_bytes(mut self, n: usize) -> SizeLimits {
        self.event_bytes = n;
        self
    }

    /// Sets how much of an error body is read.
    pub fn error_bytes(mut self, n: usize) -> SizeLimits {
        self.error_bytes = n;
        self
    }
}

/// `scheme://host:port` of a URL (the whole text when it does not parse).
pub(crate) fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => url.to_owned(),
    }
}

/// One entry of `providers.yaml`: everything optional for the built-in
/// names (`openai`, `anthropic`), which it then adjusts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    kind: Option<ProviderKind>,
    base_url: Option<String>,
    api_key_env: Option<String>,
    auth_header: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    limits: Limits,
    structured_output: Option<StructuredOutput>,
    circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    prices: BTreeMap<String, super::price::Prices>,
}

/// The entries of `providers.yaml`: provider names, and the reserved key
/// `state` (where dispatch state is shared; see [`StateConfig`]).
struct ProvidersFile {
    providers: Vec<(String, ProviderEntry)>,
    state: Option<StateConfig>,
}

impl<'de> Deserialize<'de> for ProvidersFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ProvidersFile, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ProvidersFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of provider names to their settings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ProvidersFile, A::Error> {
                let mut file = ProvidersFile {
                    providers: Vec::new(),
                    state: None,
                };
                while let Some(name) = map.next_key::<String>()? {
                    if name == STATE_KEY {
                        file.state = Some(map.next_value()?);
                    } else if file.providers.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "provider `{name}` is declared twice"
                        )));
                    } else {
                        file.providers.push((name, map.next_value()?));
                    }
                }
                Ok(file)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The top-level key of `providers.yaml` that is not a provider: where
/// dispatch state is shared (`state: {redis: URL}`).
pub const STATE_KEY: &str = "state";

/// What `providers.yaml` configures.
pub(crate) struct Providers {
    pub providers: BTreeMap<String, ProviderConfig>,
    pub state: Option<StateConfig>,
}

/// Reads `providers.yaml`: a map of provider name to
/// `{kind, base_url, api_key_env, auth_header, query, headers, limits,
/// structured_output, circuit_breaker}`, and the reserved key `state`.
pub(crate) fn read_providers_file(
    path: &Path,
    builtin: &BTreeMap<String, ProviderConfig>,
) -> Result<Providers, DispatchError> {
    let text = crate::file::read_text(path, crate::file::MAX_FILE_BYTES)
        .map_err(|e| DispatchError::config(format!("cannot read {}: {e}", path.display())))?;
    let file: ProvidersFile = serde_saphyr::from_str(&text).map_err(|e| {
        let mut message = format!("{}: {}", path.display(), e.without_snippet());
        if message.contains("unknown field") && text_uses_state_as_a_provider(&text) {
            message.push_str(
                "; `state` is reserved for shared dispatch state (`state: {redis: URL}`), \
                 not a provider name: name the provider otherwise",
            );
        }
        DispatchError::config(message)
    })?;
    let mut out = BTreeMap::new();
    for (name, entry) in file.providers {
        if name.is_empty() || name.contains(':') {
            return Err(DispatchError::config(format!(
                "{}: provider name `{name}` must be non-empty and have no `:`",
                path.display()
            )));
        }
        let base = builtin.get(&name);
        let kind = entry.kind.or(base.map(|b| b.kind)).ok_or_else(|| {
            DispatchError::config(format!(
                "{}: provider `{name}` needs `kind: openai` or `kind: anthropic`",
                path.display()
            ))
        })?;
        // For a built-in provider, a base URL the operator set in the
        // environment wins over the file.
        let env_set = match name.as_str() {
            "openai" => std::env::var("OPENAI_BASE_URL").is_ok_and(|v| !v.trim().is_empty()),
            "anthropic" => std::env::var("ANTHROPIC_BASE_URL").is_ok_and(|v| !v.trim().is_empty()),
            _ => false,
        };
        let file_url = entry.base_url.filter(|_| !env_set);
        let base_url = file_url
            .or_else(|| base.filter(|b| b.kind == kind).map(|b| b.base_url.clone()))
            .ok_or_else(|| {
                DispatchError::config(format!(
                    "{}: provider `{name}` needs a `base_url`",
                    path.display()
                ))
            })?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(DispatchError::config(format!(
                "{}: provider `{name}`: base_url `{base_url}` must start with http:// or https://",
                path.display()
            )));
        }
        let prices = entry
            .prices
            .iter()
            .map(|(model, p)| p.check().map_err(|e| format!("model `{model}`: {e}")))
            .collect::<Result<Vec<()>, String>>()
            .map(drop);
        for problem in [
            entry.limits.check(),
            entry.circuit_breaker.map_or(Ok(()), |b| b.check()),
            prices,
        ] {
            problem.map_err(|e| {
                DispatchError::config(format!("{}: provider `{name}`: {e}", path.display()))
            })?;
        }
        let api_key_env = entry
            .api_key_env
            .or_else(|| base.and_then(|b| b.api_key_env.clone()));
        // The built-in keys go only where their provider does.
        if let Some(var) = &api_key_env
            && let Some(own) = builtin
                .values()
                .find(|b| b.api_key_env.as_deref() == Some(var))
            && origin(&own.base_url) != origin(&base_url)
        {
            return Err(DispatchError::config(format!(
                "{}: provider `{name}` would send {var} to {}; that key goes only to its own \
                 provider's base URL ({}, or the one its *_BASE_URL variable names): name \
                 another variable in `api_key_env` for another server",
                path.display(),
                origin(&base_url),
                origin(&own.base_url)
            )));
        }
        out.insert(
            name.clone(),
            ProviderConfig {
                kind,
                base_url,
                api_key_env,
                auth_header: entry.auth_header,
                query: entry.query,
                headers: entry.headers,
                limits: entry.limits,
                structured_output: entry
                    .structured_output
                    .or(base.map(|b| b.structured_output))
                    .unwrap_or_default(),
                circuit_breaker: entry.circuit_breaker,
                prices: match entry.prices {
                    p if p.is_empty() => base.map(|b| b.prices.clone()).unwrap_or_default(),
                    p => p,
                },
            },
        );
    }
    Ok(Providers {
        providers: out,
        state: file.state,
    })
}

/// Whether a `state:` entry of `providers.yaml` looks like a provider's
/// settings (it names `kind` or `base_url`).
fn text_uses_state_as_a_provider(text: &str) -> bool {
    let value: Result<BTreeMap<String, serde_json::Value>, _> = serde_saphyr::from_str(text);
    value
        .ok()
        .and_then(|m| m.get(STATE_KEY).cloned())
        .is_some_and(|v| v.get("kind").is_some() || v.get("base_url").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built-in providers fixed in the test (not read from this process's
    /// environment, which a developer may have set).
    fn builtin() -> BTreeMap<String, ProviderConfig> {
        BTreeMap::from([
            (
                "openai".to_owned(),
                ProviderConfig::new(
                    ProviderKind::Openai,
                    "https://api.openai.com/v1",
                    Some("OPENAI_API_KEY"),
                ),
            ),
            (
                "anthropic".to_owned(),
                ProviderConfig::new(
                    ProviderKind::Anthropic,
                    "https://api.anthropic.com",
                    Some("ANTHROPIC_API_KEY"),
                ),
            ),
        ])
    }

    fn read(yaml: &str) -> Result<BTreeMap<String, ProviderConfig>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("providers.yaml");
        std::fs::write(&path, yaml).unwrap();
        read_providers_file(&path, &builtin())
            .map(|p| p.providers)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_compatible_endpoint_is_read_whole() {
        let read = read(
            "local:
  kind: openai
  base_url: http://127.0.0.1:8080/v1
  api_key_env: LOCAL_KEY
  auth_header: api-key
  query: {api-version: '2024-10-21'}
  headers: {x-team: prompts}
  limits: {requests_per_minute: 60, concurrent: 2}
  structured_output: tool
  prices: {m: {input: 1.5, output: 2, cached_input: 0.5}}
",
        )
        .unwrap();
        let local = &read["local"];
        assert_eq!(local.kind, ProviderKind::Openai);
        assert_eq!(local.structured_output, StructuredOutput::Tool);
        assert_eq!(local.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(local.api_key_env.as_deref(), Some("LOCAL_KEY"));
        assert_eq!(local.auth_header.as_deref(), Some("api-key"));
        assert_eq!(local.query["api-version"], "2024-10-21");
        assert_eq!(local.headers["x-team"], "prompts");
        assert_eq!(local.limits.requests_per_minute, Some(60));
        assert_eq!(local.limits.concurrent, Some(2));
        assert_eq!(
            local.prices["m"],
            super::super::price::Prices::new(1.5, 2.0).cached_input(0.5)
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_provider_and_the_fix() {
        for (yaml, says) in [
            (
                "a:b: {kind: openai, base_url: 'http://x'}\n",
                "must be non-empty and have no `:`",
            ),
            (
                "local: {base_url: 'http://x'}\n",
                "needs `kind: openai` or `kind: anthropic`",
            ),
            ("local: {kind: openai}\n", "needs a `base_url`"),
            (
                "local: {kind: openai, base_url: 'ftp://x'}\n",
                "must start with http:// or https://",
            ),
            (
                "local: {kind: openai, base_url: 'http://x', api_kee_env: K}\n",
                "api_kee_env",
            ),
            ("local: {kind: gemini, base_url: 'http://x'}\n", "gemini"),
            (
                "local: {kind: openai, base_url: 'http://x', prices: {m: {input: -1, output: 1}}}\n",
                "model `m`: prices: `input` must be a number of at least 0",
            ),
            (
                "local: {kind: openai, base_url: 'http://x', prices: {m: {input: 1}}}\n",
                "output",
            ),
        ] {
            let e = read(yaml).expect_err(yaml);
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }

    /// A built-in provider's key never goes to another server: a file
    /// naming `OPENAI_API_KEY` for another host is refused, while the same
    /// host (another path) is fine.
    #[test]
    fn a_builtin_key_goes_only_to_its_own_origin() {
        let e = read("proxy: {kind: openai, base_url: 'https://evil.example/v1', api_key_env: OPENAI_API_KEY}\n")
            .unwrap_err();
        assert!(
            e.contains("would send OPENAI_API_KEY to https://evil.example"),
            "{e}"
        );
        let e = read("claude: {kind: anthropic, base_url: 'http://api.anthropic.com', api_key_env: ANTHROPIC_API_KEY}\n")
            .unwrap_err();
        assert!(
            e.contains("goes only to its own"),
            "another scheme is another origin: {e}"
        );
        let ok = read("mirror: {kind: openai, base_url: 'https://api.openai.com/v2', api_key_env: OPENAI_API_KEY}\n")
            .unwrap();
        assert_eq!(ok["mirror"].base_url, "https://api.openai.com/v2");
        assert_eq!(
            origin("https://API.openai.com:443/v1/x?y"),
            "https://api.openai.com"
        );
    }
}
