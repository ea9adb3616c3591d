//! The Redis backend of shared dispatch state (feature `redis`): rate
//! limits, `concurrent` leases, the response cache and circuit breakers,
//! each one atomic server-side script or one command, so that replicas
//! never race between a read and a write.
//!
//! Every key is `{prefix}:{what}:{provider}[:{model}]` and expires; times
//! come from Redis's own clock (`TIME`), so replicas' clocks need not
//! agree. The connection is made on first use, within the caller's tokio
//! runtime, and remade after a failure; each command gives up after
//! [`OP_TIMEOUT`], and for [`RETRY_AFTER_OUTAGE`] after a failure commands
//! fail at once, so an unreachable Redis costs one call at most that and
//! the others nothing (the outage policy decides what they do).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::breaker::{CircuitBreaker, Failure, Gate};
use super::state::{StateConfig, redacted};

/// The longest a single Redis command may take before it counts as an
/// outage.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// After a failed command, how long commands fail at once without trying
/// (so that a Redis that does not answer costs each call nothing, not
/// [`OP_TIMEOUT`] per command); then the next command tries again.
pub(crate) const RETRY_AFTER_OUTAGE: Duration = Duration::from_secs(1);

/// The scripts, loaded once per connection (EVALSHA, then EVAL when the
/// server does not know the script yet).
struct Scripts {
    acquire: Script,
    lease_renew: Script,
    breaker_check: Script,
    breaker_failure: Script,
}

/// Why a Redis step failed: the command's error or its timeout.
#[derive(Debug)]
pub(crate) struct Outage(pub String);

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The keys of one provider's limits.
pub(crate) struct LimitKeys {
    pub leases: String,
    pub requests: String,
    pub tokens: String,
}

/// What [`RedisStore::acquire`] came to.
pub(crate) enum Acquired {
    /// Everything was taken; the lease's id when `concurrent` is set.
    Taken(Option<String>),
    /// Every `concurrent` slot is held.
    SlotsHeld,
    /// A quota is short for this long.
    Wait(Duration),
}

/// One Redis server as the state of one client.
pub(crate) struct RedisStore {
    client: redis::Client,
    /// Made on first use; dropped after a failure, so that the next try
    /// connects afresh (redis-rs's manager reconnects after a broken
    /// connection, but not after a refused AUTH).
    connection: Mutex<Option<ConnectionManager>>,
    pub(crate) config: StateConfig,
    /// The URL without its password, for messages.
    pub(crate) url: String,
    scripts: Scripts,
    /// This process's live leases: id -> lease set.
    leases: Mutex<HashMap<String, String>>,
    renewing: OnceLock<()>,
    /// Unique per process and lease.
    tag: String,
    counter: AtomicU64,
    /// Until when commands fail at once, after an outage.
    down: Mutex<Option<(tokio::time::Instant, String)>>,
    /// Slots being given back in the background (calls given up midway).
    releasing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl RedisStore {
    /// A store for `config` (whose `redis` URL is set). Nothing connects
    /// yet.
    pub(crate) fn new(config: StateConfig) -> Result<RedisStore, String> {
        let url = config.redis.clone().unwrap_or_default();
        let shown = redacted(&url);
        let client = redis::Client::open(url.as_str())
            .map_err(|e| format!("state.redis `{shown}` is not a Redis URL: {e}"))?;
        Ok(RedisStore {
            client,
            connection: Mutex::new(None),
            config,
            url: shown,
            scripts: Scripts {
                acquire: Script::new(include_str!("acquire.lua")),
                lease_renew: Script::new(include_str!("lease_renew.lua")),
                breaker_check: Script::new(include_str!("breaker_check.lua")),
                breaker_failure: Script::new(include_str!("breaker_failure.lua")),
            },
            leases: Mutex::new(HashMap::new()),
            renewing: OnceLock::new(),
            tag: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            counter: AtomicU64::new(0),
            down: Mutex::new(None),
            releasing: Mutex::new(Vec::new()),
        })
    }

    fn connection(&self) -> Result<ConnectionManager, Outage> {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| self.outage(&e))?;
        *slot = Some(made.clone());
        Ok(made)
    }

    /// A name no other lease or failure of any process has.
    fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.tag)
    }

    fn outage(&self, e: &RedisError) -> Outage {
        Outage(format!("Redis at {} failed: {e}", self.url))
    }

    /// Runs `command` unless Redis failed within [`RETRY_AFTER_OUTAGE`];
    /// remembers a failure.
    async fn guarded<T, F>(&self, command: F) -> Result<T, Outage>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        {
            let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((until, why)) = down.as_ref()
                && tokio::time::Instant::now() < *until
            {
                return Err(Outage(format!("{why} (not retried for up to 1 s)")));
            }
        }
        let result = match tokio::time::timeout(OP_TIMEOUT, command).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.outage(&e)),
            Err(_) => Err(Outage(format!(
                "Redis at {} did not answer within {} ms",
                self.url,
                OP_TIMEOUT.as_millis()
            ))),
        };
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => *down = None,
            Err(e) => {
                *down = Some((
                    tokio::time::Instant::now() + RETRY_AFTER_OUTAGE,
                    e.0.clone(),
                ));
                *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        result
    }

    /// Runs `script` with `keys` and `args`, within [`OP_TIMEOUT`].
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<T, Outage> {
        let mut connection = self.connection()?;
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a);
        }
        self.guarded(invocation.invoke_async(&mut connection)).await
    }

    /// Runs one command within [`OP_TIMEOUT`].
    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, Outage> {
        let mut connection = self.connection()?;
        self.guarded(cmd.query_async(&mut connection)).await
    }

    /// `{prefix}:{parts...}`.
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut key = self.config.prefix.clone();
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// Takes what one request needs of `limits`, all or nothing (see
    /// acquire.lua): a lease on one of `concurrent` slots, a cell of the
    /// requests quota, `cells` of the tokens quota.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        keys: &LimitKeys,
        limits: &super::config::Limits,
        cells: u32,
    ) -> Result<Acquired, Outage> {
        let id = self.unique();
        let quota = |per_minute: Option<u32>| match per_minute.filter(|n| *n > 0) {
            Some(n) => (
                (Duration::from_secs(60) / n).as_micros().max(1).to_string(),
                limits.burst(n).to_string(),
            ),
            None => ("0".to_owned(), "0".to_owned()),
        };
        let (requests_interval, requests_burst) = quota(limits.requests_per_minute);
        let (tokens_interval, tokens_burst) = quota(limits.tokens_per_minute);
        let concurrent = limits.concurrent.unwrap_or(0);
        let (what, wait): (i64, i64) = self
            .run(
                &self.scripts.acquire,
                &[&keys.leases, &keys.requests, &keys.tokens],
                &[
                    concurrent.to_string(),
                    self.config.lease_ttl.as_millis().to_string(),
                    id.clone(),
                    requests_interval,
                    requests_burst,
                    tokens_interval,
                    tokens_burst,
                    cells.to_string(),
                ],
            )
            .await?;
        Ok(match what {
            0 if concurrent > 0 => {
                self.leases
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), keys.leases.clone());
                self.start_renewing();
                Acquired::Taken(Some(id))
            }
            0 => Acquired::Taken(None),
            1 => Acquired::SlotsHeld,
            _ => Acquired::Wait(Duration::from_micros(wait.max(1).unsigned_abs())),
        })
    }

    /// Gives a lease back now. When Redis cannot be reached, the lease
    /// expires by itself.
    pub(crate) async fn release(&self, id: &str) {
        let set = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let Some(set) = set else { return };
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&set).arg(id);
        if let Err(e) = self.command::<i64>(cmd).await {
            tracing::debug!(error = %e, "a lease was not given back; it expires by itself");
        }
    }

    /// Gives a lease back in the background, for a request given up
    /// midway (a drop cannot wait); a process that ends before the task
    /// runs leaves the lease to expire.
    pub(crate) fn release_later(self: &Arc<Self>, id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.clone();
        let task = runtime.spawn(async move { store.release(&id).await });
        let mut releasing = self.releasing.lock().unwrap_or_else(|e| e.into_inner());
        releasing.retain(|t| !t.is_finished());
        releasing.push(task);
    }

    /// Waits (at most `within`) for the slots being given back in the
    /// background.
    pub(crate) async fn settle(&self, within: Duration) {
        let tasks = std::mem::take(&mut *self.releasing.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::time::timeout(within, futures_util::future::join_all(tasks)).await;
    }

    /// Renews this process's leases every third of their TTL, for as long
    /// as the store lives.
    fn start_renewing(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.renewing.get_or_init(|| {
            let weak: Weak<RedisStore> = Arc::downgrade(self);
            let every = self.config.lease_ttl / 3;
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(store) = weak.upgrade() else { return };
                    store.renew().await;
                }
            });
        });
    }

    async fn renew(&self) {
        let held: Vec<(String, String)> = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, set)| (id.clone(), set.clone()))
            .collect();
        // A bounded script per batch.
        for batch in held.chunks(256) {
            let keys: Vec<&str> = batch.iter().map(|(_, set)| set.as_str()).collect();
            let mut args = vec![self.config.lease_ttl.as_millis().to_string()];
            args.extend(batch.iter().map(|(id, _)| id.clone()));
            match self
                .run::<Vec<String>>(&self.scripts.lease_renew, &keys, &args)
                .await
            {
                Ok(lost) if lost.is_empty() => {}
                Ok(lost) => {
                    let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                    for id in &lost {
                        leases.remove(id);
                    }
                    drop(leases);
                    tracing::warn!(
                        target: "promptbook.state",
                        lost = lost.len(),
                        "leases of `concurrent` were gone before this process renewed them: \
                         a pause longer than state.lease_ttl, a Redis restart, or keys \
                         evicted (run Redis with maxmemory-policy noeviction); those calls \
                         run outside the shared bound"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "leases not renewed");
                    return;
                }
            }
        }
    }

    /// A cached answer's bytes.
    pub(crate) async fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>, Outage> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.command(cmd).await
    }

    /// Stores an answer's bytes for `ttl`.
    pub(crate) async fn cache_put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), Outage> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.command(cmd).await
    }

    /// The gate of one model's circuit.
    pub(crate) async fn breaker_check(
        &self,
        circuit: &str,
        settings: &CircuitBreaker,
    ) -> Result<Gate, Outage> {
        let (state, ms): (i64, i64) = self
            .run(
                &self.scripts.breaker_check,
                &[circuit],
                &[settings.cooldown.as_millis().max(1).to_string()],
            )
            .await?;
        let wait = Duration::from_millis(ms.max(1).unsigned_abs());
        Ok(match state {
            0 => Gate::Closed,
            1 => Gate::Probe,
            3 => Gate::Waiting(wait),
            _ => Gate::Open(wait),
        })
    }

    /// Counts a failure of one model; whether its circuit is now open.
    pub(crate) async fn breaker_failure(
        &self,
        circuit: &str,
        settings: &CircuitBreaker,
        failure: Failure,
    ) -> Result<bool, Outage> {
        let (what, wait) = match failure {
            Failure::Down => ("down", Duration::ZERO),
            Failure::RateLimited(wait) => ("rate_limited", wait),
        };
        let failures = format!("{circuit}:failures");
        let member = self.unique();
        let open: i64 = self
            .run(
                &self.scripts.breaker_failure,
                &[circuit, &failures],
                &[
                    what.to_owned(),
                    settings.failures.to_string(),
                    settings.window.as_millis().max(1).to_string(),
                    settings.cooldown.as_millis().max(1).to_string(),
                    wait.as_millis().max(1).to_string(),
                    member,
                ],
            )
            .await?;
        Ok(open == 1)
    }

    /// A probe answered: the circuit closes.
    pub(crate) async fn breaker_success(&self, circuit: &str) -> Result<(), Outage> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(circuit).arg(format!("{circuit}:failures"));
        self.command::<i64>(cmd).await.map(drop)
    }
}
