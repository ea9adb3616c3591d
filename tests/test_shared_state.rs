//! Shared dispatch state on a real `redis-server` (feature `redis`):
//! one global bound for eight separate processes, leases a killed process
//! gives back, each outage policy with Redis killed mid-run, circuit
//! breakers shared between processes, and the response cache shared
//! between clients. Providers are fakes on loopback speaking OpenAI's
//! wire.
#![cfg(feature = "redis")]

mod fake;
mod redis;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake::{FakeProvider, Reply, fixture};
use promptbook::Registry;
use promptbook::dispatch::{ClientBuilder, ErrorKind, OutagePolicy, StateConfig};
use redis::RedisServer;
use serde_json::Value;

const KEY_ENV: &str = "PROMPTBOOK_TEST_KEY";

/// The limits the replicas share: 6,000 requests a minute spent over 1 s
/// windows (a burst of 100, then one every 10 ms), 16 in flight.
const RPM: u32 = 6_000;
const BURST: usize = 100;
const INTERVAL: Duration = Duration::from_millis(10);
const CONCURRENT: usize = 16;
const PROCESSES: usize = 8;
const CALLERS: usize = 50;

fn answer() -> String {
    fixture("openai-chat.json")
}

/// A template root with one template sent to provider `fake` (and
/// `backup` as its fallback when given), and a `providers.yaml` with
/// `extra` lines for `fake`.
fn root(fake: &FakeProvider, backup: Option<&FakeProvider>, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fallbacks = if backup.is_some() {
        "\n  fallbacks: ['backup:m']"
    } else {
        ""
    };
    std::fs::write(
        dir.path().join("ask.prompt.yaml"),
        format!(
            "version: 1.0.0\nparameters:\n  q: {{type: string, default: hi}}\nmodel:\n  provider: fake\n  name: m\n  parameters: {{temperature: 0}}{fallbacks}\nmessages:\n  - role: user\n    content: '{{{{ q }}}}'\n"
        ),
    )
    .unwrap();
    let mut providers = format!(
        "fake:\n  kind: openai\n  base_url: {}/v1\n  api_key_env: {KEY_ENV}\n{extra}",
        fake.url
    );
    if let Some(b) = backup {
        providers.push_str(&format!(
            "backup:\n  kind: openai\n  base_url: {}/v1\n  api_key_env: {KEY_ENV}\n",
            b.url
        ));
    }
    std::fs::write(dir.path().join("providers.yaml"), providers).unwrap();
    dir
}

/// `promptbook send ask --dir DIR ARGS`, another process sharing the state
/// in Redis at `url`.
fn send_cli(dir: &Path, url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptbook"));
    cmd.args(["send", "ask", "--dir"])
        .arg(dir)
        .args(args)
        .env("PROMPTBOOK_REDIS_URL", url);
    cmd
}

fn render(dir: &Path, q: &str) -> promptbook::Rendered {
    let registry = Registry::load(dir).unwrap();
    let mut vars = serde_json::Map::new();
    vars.insert("q".into(), Value::String(q.into()));
    registry.render("ask", &Value::Object(vars)).unwrap()
}

/// A child process of [`the_global_bound_holds_across_processes`]: sends
/// `PB_CALLERS` concurrent calls through the client `PB_DIR` configures,
/// starting at the UNIX time `PB_START_MS`, and prints `ok N failed M`.
#[test]
#[ignore = "a child process of the shared-state tests, not a test on its own"]
fn replica_child() {
    let dir = std::env::var("PB_DIR").expect("run by the shared-state tests only");
    let callers: usize = std::env::var("PB_CALLERS").unwrap().parse().unwrap();
    let start_ms: u128 = std::env::var("PB_START_MS").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = ClientBuilder::new()
        .template_root(&dir)
        .unwrap()
        .build()
        .unwrap();
    let rendered = render(Path::new(&dir), "hello");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms) as u64));
    let (ok, failed) = runtime.block_on(async {
        let calls: Vec<_> = (0..callers)
            .map(|_| {
                let client = client.clone();
                let rendered = rendered.clone();
                tokio::spawn(async move { client.send(&rendered).await })
            })
            .collect();
        let mut ok = 0;
        let mut failed = 0;
        for c in calls {
            match c.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => {
                    eprintln!("{e}");
                    failed += 1;
                }
            }
        }
        (ok, failed)
    });
    println!("ok {ok} failed {failed}");
}

fn child(dir: &Path, callers: usize, start_ms: u128, redis: Option<&str>) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "replica_child",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("PB_DIR", dir)
    .env("PB_CALLERS", callers.to_string())
    .env("PB_START_MS", start_ms.to_string())
    .env_remove("PROMPTBOOK_REDIS_URL")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(url) = redis {
        cmd.env("PROMPTBOOK_REDIS_URL", url);
    }
    cmd
}

/// Runs `PROCESSES` children together; each must answer every call.
fn run_replicas(dir: &Path, redis: Option<&str>) {
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 1_500;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| child(dir, CALLERS, start_ms, redis).spawn().unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for mut c in children {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let out = c.wait_with_output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    status.success() && stdout.contains(&format!("ok {CALLERS} failed 0")),
                    "a replica failed: {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("a replica did not finish within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The most arrivals in any interval, over what GCRA allows in it: a
/// burst, plus one per interval of the span, plus `delay` for the time
/// between the limiter's grant and the arrival (which can bunch
/// arrivals). Positive: the bound was broken.
fn worst_excess(arrivals: &[Duration], delay: Duration) -> i64 {
    let mut worst = i64::MIN;
    for i in 0..arrivals.len() {
        for j in i..arrivals.len() {
            let span = arrivals[j] - arrivals[i] + delay;
            let allowed = BURST as i64 + (span.as_micros() / INTERVAL.as_micros()) as i64;
            worst = worst.max((j - i + 1) as i64 - allowed);
        }
    }
    worst
}

/// The most arrivals within any `window`.
fn most_within(arrivals: &[Duration], window: Duration) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..arrivals.len() {
        while arrivals[end] - arrivals[start] >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// Eight processes of 50 callers each send 400 calls at once, each held
/// 100 ms by the provider. Through Redis, the provider never sees more
/// than 16 in flight nor more than the GCRA quota in any interval; with
/// each process keeping its own limits, the same run goes over.
#[test]
fn the_global_bound_holds_across_processes() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start_then(
        vec![],
        Some(Reply::Hang(Duration::from_millis(100), answer())),
    );
    let dir = root(
        &fake,
        None,
        &format!(
            "  limits: {{requests_per_minute: {RPM}, window: 1s, concurrent: {CONCURRENT}}}\n"
        ),
    );

    run_replicas(dir.path(), Some(&redis.url()));
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), PROCESSES * CALLERS);
    let in_flight = fake.max_in_flight();
    let excess = worst_excess(&arrivals, Duration::from_millis(250));
    let per_second = most_within(&arrivals, Duration::from_secs(1));
    eprintln!(
        "redis: max in flight {in_flight} (limit {CONCURRENT}); most arrivals in 1 s \
         {per_second} (quota allows {}); worst GCRA excess {excess}",
        BURST + 100
    );
    assert!(
        in_flight <= CONCURRENT,
        "{in_flight} in flight at once over {CONCURRENT}"
    );
    assert!(excess <= 0, "the rate bound broke by {excess} requests");
    assert!(
        per_second <= BURST + 100 + 25,
        "{per_second} requests within one second"
    );
    // Every key the run made expires: nothing grows without bound.
    for key in redis.keys() {
        let ttl = redis.command(&["PTTL", &key]).unwrap();
        assert!(
            ttl.trim_start_matches(':').parse::<i64>().unwrap() > 0,
            "{key} never expires ({ttl})"
        );
        assert!(key.starts_with("promptbook:"), "{key} is not namespaced");
    }

    // The contrast: each process alone keeps the limits.
    fake.reset();
    run_replicas(dir.path(), None);
    let alone = fake.max_in_flight();
    eprintln!(
        "in-process: max in flight {alone} (limit {CONCURRENT}); most arrivals in 1 s {}",
        most_within(&fake.arrivals(), Duration::from_secs(1))
    );
    assert!(
        alone > CONCURRENT,
        "eight processes with their own limits should overshoot {CONCURRENT} in flight; saw {alone}"
    );
}

/// A process killed (SIGKILL) while it holds every `concurrent` slot: its
/// leases expire within the TTL and another process's call goes.
#[test]
fn a_killed_process_gives_its_slots_back_within_the_lease_ttl() {
    let redis = RedisServer::start();
    let hanging = FakeProvider::start_then(
        vec![],
        Some(Reply::Hang(Duration::from_secs(600), answer())),
    );
    let ttl = Duration::from_secs(1);
    let extra = "  limits: {concurrent: 2}\nstate:\n  lease_ttl: 1s\n";
    let dir = root(&hanging, None, extra);
    let mut holder = child(dir.path(), 2, 0, Some(&redis.url())).spawn().unwrap();
    support::eventually("the child to hold both slots", || {
        (hanging.count() == 2).then_some(())
    });
    // Both slots are held: wait past several renewals to show they are
    // kept while the process lives.
    let quick = FakeProvider::start_then(vec![], Some(Reply::json(&answer())));
    let dir2 = root(&quick, None, extra);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = ClientBuilder::new()
        .template_root(dir2.path())
        .unwrap()
        .state(StateConfig::redis(redis.url()).lease_ttl(ttl))
        .build()
        .unwrap();
    let rendered = render(dir2.path(), "x");
    // Another provider name would have its own slots: use the same name.
    let blocked =
        runtime.block_on(async { tokio::time::timeout(ttl * 3, client.send(&rendered)).await });
    assert!(
        blocked.is_err(),
        "a live process's leases are renewed: no slot for 3 TTLs"
    );

    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed = Instant::now();
    let sent = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), client.send(&rendered)).await
    });
    let waited = killed.elapsed();
    assert!(sent.expect("a slot came back").is_ok());
    assert!(
        waited <= ttl + Duration::from_millis(700),
        "the slots came back {waited:?} after the kill (TTL {ttl:?})"
    );
}

fn client_with(dir: &Path, state: StateConfig) -> promptbook::dispatch::Client {
    ClientBuilder::new()
        .template_root(dir)
        .unwrap()
        .state(state)
        .build()
        .unwrap()
}

/// Redis killed mid-run: `fail_closed` calls fail with `shared_state`
/// after `outage_wait` and send nothing; `fail_open` calls go out
/// unlimited; `local` calls keep this process's share; an answer on its
/// way when Redis dies is delivered; and calls use Redis again once it is
/// back.
#[test]
fn each_outage_policy_behaves_as_documented() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = FakeProvider::start_then(
        vec![],
        Some(Reply::Hang(Duration::from_millis(300), answer())),
    );
    // 600 a minute over 1 s windows: 10 at once, then one every 100 ms.
    let dir = root(
        &fake,
        None,
        "  limits: {requests_per_minute: 600, window: 1s, concurrent: 4}\n",
    );
    let rendered = render(dir.path(), "x");
    let mut redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let closed = client_with(
        dir.path(),
        StateConfig::redis(&url)
            .on_outage(OutagePolicy::FailClosed)
            .outage_wait(Duration::from_millis(400)),
    );
    let open = client_with(
        dir.path(),
        StateConfig::redis(&url).on_outage(OutagePolicy::FailOpen),
    );
    // Each of 5 replicas keeps 120 a minute: 2 at once, then one every
    // 500 ms.
    let local = client_with(
        dir.path(),
        StateConfig::redis(&url)
            .on_outage(OutagePolicy::Local)
            .replicas(5),
    );
    runtime.block_on(async {
        for c in [&closed, &open, &local] {
            c.send(&rendered).await.expect("Redis is up");
        }
        // An answer on its way when Redis dies still arrives.
        let in_flight = {
            let c = closed.clone();
            let r = rendered.clone();
            tokio::spawn(async move { c.send(&r).await })
        };
        support_wait(|| fake.count() == 4).await;
        redis.kill();
        assert!(in_flight.await.unwrap().is_ok(), "the answer in flight");

        let before = fake.count();
        let started = Instant::now();
        let e = closed.send(&rendered).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SharedState, "{e}");
        assert!(e.to_string().contains("fail_closed"), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(fake.count(), before, "fail_closed sends nothing");

        // fail_open: 8 calls go, 4 at a time (this process's own
        // `concurrent` permits), without waiting for a rate: two rounds of
        // 300 ms.
        let unlimited = at_once(&open, &rendered, 8).await;

        // local: the share of 5 replicas (2 at once, then one per 500 ms,
        // one in flight): 4 calls take at least 1 s.
        let shared = at_once(&local, &rendered, 4).await;
        assert!(
            shared >= Duration::from_millis(950),
            "local keeps this process's share: {shared:?}"
        );
        assert!(
            unlimited < Duration::from_millis(900),
            "fail_open waits for no rate: {unlimited:?}"
        );
    });

    // Redis comes back where it was: the limits live there again.
    let _redis = RedisServer::start_on(port);
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = closed
                .send(&rendered)
                .await
                .inspect_err(|e| eprintln!("{e}"))
                .is_ok();
            // fail_closed answers only through Redis.
            if sent {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the limits never went back to Redis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A "Redis" that accepts connections and never answers (a blackholed
/// host): the first call pays one command's timeout, the next ones go
/// straight to the outage policy, and none hangs.
#[test]
fn a_redis_that_never_answers_costs_one_timeout_not_one_per_call() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let url = format!("redis://{silent_addr}/0");
    let held = std::thread::spawn(move || {
        // Accept and keep every connection, answering nothing.
        let mut kept = Vec::new();
        for c in silent.incoming().take(64) {
            kept.push(c);
        }
    });
    let fake = FakeProvider::start_then(vec![], Some(Reply::json(&answer())));
    let dir = root(
        &fake,
        None,
        "  limits: {requests_per_minute: 600, concurrent: 4}\n",
    );
    let rendered = render(dir.path(), "x");
    let client = client_with(
        dir.path(),
        StateConfig::redis(url).on_outage(OutagePolicy::FailOpen),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let closed = client_with(
        dir.path(),
        StateConfig::redis(format!("redis://{silent_addr}/0"))
            .on_outage(OutagePolicy::FailClosed)
            .outage_wait(Duration::from_millis(300)),
    );
    runtime.block_on(async {
        // fail_closed gives up within outage_wait of the call's start,
        // plus at most one command's timeout.
        let started = Instant::now();
        assert!(closed.send(&rendered).await.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "fail_closed took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        for _ in 0..10 {
            client.send(&rendered).await.expect("fail_open sends");
        }
        assert!(
            started.elapsed() < Duration::from_millis(2_500),
            "10 calls took {:?}",
            started.elapsed()
        );
    });
    assert_eq!(fake.count(), 10);
    drop(held);
}

/// Sends `rendered` `n` times at once through `client`; each must answer.
/// How long they all took.
async fn at_once(
    client: &promptbook::dispatch::Client,
    rendered: &promptbook::Rendered,
    n: usize,
) -> Duration {
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let (c, r) = (client.clone(), rendered.clone());
            tokio::spawn(async move { c.send(&r).await })
        })
        .collect();
    for c in calls {
        if let Err(e) = c.await.unwrap() {
            panic!("a call failed: {e}");
        }
    }
    started.elapsed()
}

/// Waits (at most 10 s) for `f`.
async fn support_wait(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The primary fails twice, then recovers. Its breaker (2 failures, 1 s
/// cooldown) opens after the second failure; the next call goes straight
/// to the fallback, saying so; another process (the CLI, sharing Redis)
/// skips the primary too; after the cooldown one probe goes to the
/// primary, and its success closes the circuit.
#[test]
fn a_breaker_opens_lets_the_fallback_answer_at_once_and_a_probe_closes_it() {
    let redis = RedisServer::start();
    let primary = FakeProvider::start_then(
        vec![Reply::error(503, "down"), Reply::error(503, "down")],
        Some(Reply::json(&answer())),
    );
    let backup = FakeProvider::start_then(vec![], Some(Reply::json(&answer())));
    let dir = root(
        &primary,
        Some(&backup),
        "  circuit_breaker: {failures: 2, window: 30s, cooldown: 1s}\n",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = ClientBuilder::new()
        .template_root(dir.path())
        .unwrap()
        .retry(promptbook::dispatch::RetryPolicy::retries(0))
        .state(StateConfig::redis(redis.url()))
        .build()
        .unwrap();
    let rendered = render(dir.path(), "x");
    runtime.block_on(async {
        for _ in 0..2 {
            let r = client.send(&rendered).await.unwrap();
            assert!(r.fallback && r.open_circuits.is_empty(), "{r:?}");
        }
        assert_eq!(primary.count(), 2);
        let started = Instant::now();
        let r = client.send(&rendered).await.unwrap();
        assert!(r.fallback);
        assert_eq!(r.open_circuits, ["fake:m"]);
        assert_eq!(primary.count(), 2, "an open circuit sends nothing");
        assert!(started.elapsed() < Duration::from_millis(500));
    });

    // Another process shares the open circuit.
    let out = send_cli(dir.path(), &redis.url(), &["--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["open_circuits"], serde_json::json!(["fake:m"]), "{v}");
    assert_eq!(v["provider"], "backup");
    assert_eq!(primary.count(), 2);

    runtime.block_on(async {
        // After the cooldown, one probe reaches the primary and closes it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client.send(&rendered).await.unwrap();
            if !r.fallback {
                break;
            }
            assert!(Instant::now() < deadline, "no probe within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(primary.count(), 3, "one probe");
        let r = client.send(&rendered).await.unwrap();
        assert!(!r.fallback && r.open_circuits.is_empty(), "closed: {r:?}");
    });
}

/// `promptbook send`, a process that exits right after its call, gives
/// its `concurrent` slot back before it exits: with one slot and the
/// default 30 s lease, three sends in a row each go at once.
#[test]
fn a_send_process_gives_its_slot_back_before_it_exits() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start_then(vec![], Some(Reply::json(&answer())));
    let dir = root(&fake, None, "  limits: {concurrent: 1}\n");
    for _ in 0..3 {
        let started = Instant::now();
        let out = send_cli(dir.path(), &redis.url(), &[]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a send waited {:?} for a slot",
            started.elapsed()
        );
        assert_eq!(
            redis
                .command(&["ZCARD", "promptbook:leases:fake"])
                .as_deref(),
            Some(":0"),
            "no slot left held"
        );
    }
    assert_eq!(fake.count(), 3);
}

/// A process that started while Redis refused its password uses Redis
/// once the password is right: the connection is made afresh.
#[test]
fn a_refused_password_is_tried_again() {
    let redis = RedisServer::start();
    let password_set = |old: Option<&str>, new: &str| {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = String::new();
        if let Some(old) = old {
            out.push_str(&format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{old}\r\n", old.len()));
        }
        out.push_str(&format!(
            "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n${}\r\n{new}\r\n",
            new.len()
        ));
        s.write_all(out.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        for _ in 0..(1 + usize::from(old.is_some())) {
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("+OK"), "{line}");
        }
    };
    password_set(None, "old-pw");
    let fake = FakeProvider::start_then(vec![], Some(Reply::json(&answer())));
    let dir = root(&fake, None, "  limits: {concurrent: 2}\n");
    let rendered = render(dir.path(), "x");
    let url = format!("redis://:new-pw@127.0.0.1:{}/0", redis.port);
    let client = client_with(
        dir.path(),
        StateConfig::redis(url)
            .on_outage(OutagePolicy::FailClosed)
            .outage_wait(Duration::from_millis(200)),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let e = client.send(&rendered).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SharedState, "{e}");
        assert!(!e.to_string().contains("new-pw"), "{e}");
        password_set(Some("old-pw"), "new-pw");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.send(&rendered).await.is_err() {
            assert!(Instant::now() < deadline, "Redis was never tried again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// `promptbook send` stopped midway (SIGTERM, as a container is stopped)
/// gives its slot back before it exits.
#[cfg(unix)]
#[test]
fn a_send_stopped_midway_gives_its_slot_back() {
    let redis = RedisServer::start();
    let fake =
        FakeProvider::start_then(vec![], Some(Reply::Hang(Duration::from_secs(60), answer())));
    let dir = root(&fake, None, "  limits: {concurrent: 1}\n");
    let mut child = send_cli(dir.path(), &redis.url(), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::eventually("the call to reach the provider", || {
        (fake.count() == 1).then_some(())
    });
    assert_eq!(
        redis
            .command(&["ZCARD", "promptbook:leases:fake"])
            .as_deref(),
        Some(":1")
    );
    support::terminate(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        redis
            .command(&["ZCARD", "promptbook:leases:fake"])
            .as_deref(),
        Some(":0"),
        "the slot was given back before the process exited"
    );
}

/// A 429 with a wait, got by one replica, opens the model for that wait:
/// another replica's call with no fallback waits it out and answers,
/// rather than failing at once.
#[test]
fn another_replica_waits_out_a_rate_limit_it_has_no_fallback_for() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start_then(
        vec![Reply::Status(
            429,
            vec![("retry-after-ms", "800".into())],
            r#"{"error": {"message": "slow down", "type": "rate_limit"}}"#.into(),
        )],
        Some(Reply::json(&answer())),
    );
    let dir = root(&fake, None, "");
    let rendered = render(dir.path(), "x");
    let (a, b) = (
        client_with(dir.path(), StateConfig::redis(redis.url())),
        client_with(dir.path(), StateConfig::redis(redis.url())),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let first = {
            let (a, r) = (a.clone(), rendered.clone());
            tokio::spawn(async move { a.send(&r).await })
        };
        support_wait(|| fake.count() == 1).await;
        let started = Instant::now();
        let other = b.send(&rendered).await;
        assert!(other.is_ok(), "{other:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "the other replica waited for the 429's wait: {:?}",
            started.elapsed()
        );
        assert!(first.await.unwrap().is_ok());
    });
}

/// Every token of a prompt larger than the burst is charged: the call
/// after it waits for the excess (100 tokens a second, a burst of 100).
#[test]
fn a_prompt_larger_than_the_burst_is_charged_in_full() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start_then(vec![], Some(Reply::json(&answer())));
    let dir = root(
        &fake,
        None,
        "  limits: {tokens_per_minute: 6000, window: 1s}\n",
    );
    let long = render(dir.path(), &"word ".repeat(300));
    let tokens = long.tokens.total;
    assert!(tokens > 250, "{tokens}");
    let short = render(dir.path(), "x");
    let client = client_with(dir.path(), StateConfig::redis(redis.url()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        client.send(&long).await.unwrap();
        let started = Instant::now();
        client.send(&short).await.unwrap();
        // The long prompt left a debt of about (tokens - 100) / 100 s.
        let owed = Duration::from_millis(((tokens - 100) * 10) as u64);
        assert!(
            started.elapsed() >= owed.mul_f64(0.8),
            "waited {:?}, owed {owed:?}",
            started.elapsed()
        );
    });
}

/// An answer one client paid for serves another client (nothing shared
/// in memory) through Redis, marked `cached`.
#[test]
fn the_response_cache_is_shared_through_redis() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start_then(vec![], Some(Reply::json(&answer())));
    let dir = root(&fake, None, "");
    let rendered = render(dir.path(), "same question");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let make = || {
        ClientBuilder::new()
            .template_root(dir.path())
            .unwrap()
            .cache(Duration::from_secs(60))
            .state(StateConfig::redis(redis.url()).prefix("cachetest"))
            .build()
            .unwrap()
    };
    let (a, b) = (make(), make());
    runtime.block_on(async {
        let first = a.send(&rendered).await.unwrap();
        assert!(!first.cached);
        let second = b.send(&rendered).await.unwrap();
        assert!(second.cached, "{second:?}");
        assert_eq!(second.text, first.text);
        assert_eq!(fake.count(), 1);
        let other = render(dir.path(), "another question");
        assert!(!b.send(&other).await.unwrap().cached);
        assert_eq!(fake.count(), 2);
    });
    assert!(redis.keys().iter().all(|k| k.starts_with("cachetest:")));
}
