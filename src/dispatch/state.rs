//! Where a [`Client`](super::Client)'s calls keep what they share: the
//! rate limits, the leases of `concurrent`, the response cache and the
//! circuit breakers. In this process by default; in Redis (feature
//! `redis`) when several processes must share one set of limits.
//!
//! Configured by `providers.yaml`'s reserved top-level key `state`, or by
//! [`ClientBuilder::state`](super::ClientBuilder::state); the environment
//! variable `PROMPTBOOK_REDIS_URL` wins over both for the URL:
//!
//! ```yaml
//! state:
//!   redis: redis://:password@redis.internal:6379/0   # rediss:// for TLS
//!   prefix: checkout-service     # key prefix (default `promptbook`)
//!   on_outage: local             # fail_closed | fail_open | local (default)
//!   replicas: 4                  # for `local`: each process enforces limit / 4
//!   lease_ttl: 30s               # a crashed process's `concurrent` slots return within this
//!   outage_wait: 5s              # fail_closed: how long a call waits for Redis
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The environment variable whose Redis URL wins over the configuration's.
pub const REDIS_URL_ENV: &str = "PROMPTBOOK_REDIS_URL";

/// Where dispatch state lives and what to do when it cannot be reached.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StateConfig {
    /// The Redis URL (`redis://[:password@]host:port/db`, `rediss://` for
    /// TLS, `redis+unix:///path`); `None`: this process only.
    #[serde(default)]
    pub redis: Option<String>,
    /// Every key starts with `{prefix}:`. Default `promptbook`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// What calls do while Redis cannot be reached. Default
    /// [`OutagePolicy::Local`].
    #[serde(default)]
    pub on_outage: OutagePolicy,
    /// How many processes share the limits, for [`OutagePolicy::Local`]:
    /// each enforces `limit / replicas` (at least 1) while Redis is away.
    /// Default 1.
    #[serde(default = "one")]
    pub replicas: u32,
    /// How long a `concurrent` slot outlives its process: a process renews
    /// its leases every third of this; one killed gives its slots back
    /// within it. Default 30 s; at least 100 ms.
    #[serde(
        default = "default_lease_ttl",
        deserialize_with = "super::duration::required"
    )]
    pub lease_ttl: Duration,
    /// How long a call waits for Redis to come back under
    /// [`OutagePolicy::FailClosed`] before it fails. Default 5 s.
    #[serde(
        default = "default_outage_wait",
        deserialize_with = "super::duration::required"
    )]
    pub outage_wait: Duration,
}

/// What calls do while the shared state (Redis) cannot be reached. Redis
/// being away never crashes the process and never loses an answer already
/// on its way; each policy is announced by a `promptbook.state` warning
/// event (at most one every 10 s) and recovers by itself when Redis
/// answers again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutagePolicy {
    /// Calls wait up to `outage_wait` for Redis, then fail with
    /// [`ErrorKind::SharedState`](super::ErrorKind::SharedState): no call
    /// goes out unlimited. For quotas that must never be exceeded.
    FailClosed,
    /// Calls go out unlimited (no rate limit, no `concurrent`), with a
    /// warning. For limits that are only politeness.
    FailOpen,
    /// Each process enforces its share, `limit / replicas`, in memory: the
    /// total stays near the limit and calls keep flowing. The default: an
    /// LLM feature stays up while Redis is down, and the provider's own
    /// 429s (retried) catch what the shares let through.
    #[default]
    Local,
}

fn default_prefix() -> String {
    "promptbook".to_owned()
}
fn one() -> u32 {
    1
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_outage_wait() -> Duration {
    Duration::from_secs(5)
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            redis: None,
            prefix: default_prefix(),
            on_outage: OutagePolicy::default(),
            replicas: 1,
            lease_ttl: default_lease_ttl(),
            outage_wait: default_outage_wait(),
        }
    }
}

impl StateConfig {
    /// In this process only.
    pub fn local() -> StateConfig {
        StateConfig::default()
    }

    /// In Redis at `url`, other settings default.
    pub fn redis(url: impl Into<String>) -> StateConfig {
        StateConfig {
            redis: Some(url.into()),
            ..StateConfig::default()
        }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> StateConfig {
        self.prefix = prefix.into();
        self
    }

    /// Sets what calls do while Redis is away.
    pub fn on_outage(mut self, policy: OutagePolicy) -> StateConfig {
        self.on_outage = policy;
        self
    }

    /// Sets how many processes share the limits (for
    /// [`OutagePolicy::Local`]).
    pub fn replicas(mut self, n: u32) -> StateConfig {
        self.replicas = n.max(1);
        self
    }

    /// Sets how long a `concurrent` slot outlives its process.
    pub fn lease_ttl(mut self, ttl: Duration) -> StateConfig {
        self.lease_ttl = ttl;
        self
    }

    /// Sets how long a call waits for Redis under
    /// [`OutagePolicy::FailClosed`].
    pub fn outage_wait(mut self, wait: Duration) -> StateConfig {
        self.outage_wait = wait;
        self
    }

    /// The settings with `PROMPTBOOK_REDIS_URL`, when set and not blank,
    /// as the URL.
    pub(crate) fn with_env(mut self) -> StateConfig {
        if let Ok(url) = std::env::var(REDIS_URL_ENV)
            && !url.trim().is_empty()
        {
            self.redis = Some(url.trim().to_owned());
        }
        self
    }

    /// Problems a deployment would only meet later.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err(format!(
                "state.prefix `{}` must be non-empty and have no spaces",
                self.prefix
            ));
        }
        if self.replicas == 0 {
            return Err("state.replicas must be at least 1".into());
        }
        if self.lease_ttl < Duration::from_millis(100) {
            return Err("state.lease_ttl must be at least 100ms".into());
        }
        super::duration::check("state.lease_ttl", self.lease_ttl)?;
        super::duration::check("state.outage_wait", self.outage_wait)?;
        Ok(())
    }
}

/// A Redis URL with its secrets replaced by `***`, for messages: the
/// password, a user name given without one (`redis://token@host`), and
/// every query value (redis-rs reads `redis+unix:///path?pass=…&user=…`).
pub(crate) fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if !u.username().is_empty() && u.password().is_none() {
                let _ = u.set_username("***");
            }
            if u.query().is_some() {
                let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
                u.query_pairs_mut()
                    .clear()
                    .extend_pairs(keys.iter().map(|k| (k.as_str(), "***")));
            }
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(a URL that does not parse)".to_owned(),
    }
}

impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field("redis", &self.redis.as_deref().map(redacted))
            .field("prefix", &self.prefix)
            .field("on_outage", &self.on_outage)
            .field("replicas", &self.replicas)
            .field("lease_ttl", &self.lease_ttl)
            .field("outage_wait", &self.outage_wait)
            .finish()
    }
}

/// The state a client's calls share, as built from a [`StateConfig`].
pub(crate) struct Shared {
    pub(crate) config: StateConfig,
    /// The Redis store, when the state lives there.
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<std::sync::Arc<super::redis::RedisStore>>,
    /// When the last outage warning went out.
    #[cfg(feature = "redis")]
    warned: std::sync::Mutex<Option<std::time::Instant>>,
}

/// At most one outage warning per this long.
#[cfg(feature = "redis")]
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Shared {
    /// The state `config` describes (after `PROMPTBOOK_REDIS_URL`).
    ///
    /// # Errors
    /// A message when the settings are wrong, the URL does not parse, or
    /// a Redis URL is given to a build without the `redis` feature.
    pub(crate) fn new(config: StateConfig) -> Result<Shared, String> {
        config.check()?;
        #[cfg(feature = "redis")]
        let redis = match &config.redis {
            Some(_) => Some(std::sync::Arc::new(super::redis::RedisStore::new(
                config.clone(),
            )?)),
            None => None,
        };
        #[cfg(not(feature = "redis"))]
        if let Some(url) = &config.redis {
            return Err(format!(
                "shared state in Redis ({}, from {}) needs promptbook built with the `redis` \
                 feature",
                redacted(url),
                if std::env::var(REDIS_URL_ENV).is_ok_and(|v| !v.trim().is_empty()) {
                    REDIS_URL_ENV
                } else {
                    "the configuration"
                }
            ));
        }
        Ok(Shared {
            config,
            #[cfg(feature = "redis")]
            redis,
            #[cfg(feature = "redis")]
            warned: std::sync::Mutex::new(None),
        })
    }

    #[cfg(feature = "redis")]
    /// Says, at most once every 10 s, that Redis could not be reached and
    /// what calls do meanwhile (a `promptbook.state` warning event).
    pub(crate) fn warn_outage(&self, error: &dyn std::fmt::Display) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        *warned = Some(std::time::Instant::now());
        let doing = match self.config.on_outage {
            OutagePolicy::FailClosed => "calls wait for it, then fail (on_outage: fail_closed)",
            OutagePolicy::FailOpen => "calls go out unlimited (on_outage: fail_open)",
            OutagePolicy::Local => {
                "each process enforces limit / state.replicas (on_outage: local)"
            }
        };
        tracing::warn!(target: "promptbook.state", error = %error, "shared state unreachable: {doing}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        let c = StateConfig::redis("redis://:hunter2@10.0.0.1:6379/0");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.1:6379"), "{shown}");
        assert!(!redacted("rediss://admin:hunter2@h/1").contains("hunter2"));
        assert!(!redacted("redis://tok3n@h").contains("tok3n"));
        assert!(!redacted("not a url hunter2").contains("hunter2"));
        let unix = redacted("redis+unix:///run/r.sock?pass=hunter2&user=admin");
        assert!(
            !unix.contains("hunter2") && !unix.contains("admin"),
            "{unix}"
        );
        assert!(unix.contains("/run/r.sock"), "{unix}");
        assert!(!redacted("redis://h/0#hunter2").contains("hunter2"));
    }

    #[test]
    fn settings_read_from_yaml_with_defaults_for_the_rest() {
        let c: StateConfig = serde_saphyr::from_str(
            "redis: redis://127.0.0.1:1/0\non_outage: fail_closed\nlease_ttl: 2s\n",
        )
        .unwrap();
        assert_eq!(c.redis.as_deref(), Some("redis://127.0.0.1:1/0"));
        assert_eq!(c.on_outage, OutagePolicy::FailClosed);
        assert_eq!(c.lease_ttl, Duration::from_secs(2));
        assert_eq!(c.prefix, "promptbook");
        assert_eq!(c.replicas, 1);
        assert_eq!(c.outage_wait, Duration::from_secs(5));
        let e = serde_saphyr::from_str::<StateConfig>("on_outage: crash\n").unwrap_err();
        assert!(e.to_string().contains("crash"), "{e}");
    }
}
