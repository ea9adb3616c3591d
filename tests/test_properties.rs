//! Property tests: reference parsing, version resolution against semver's
//! own rules, and the truncation invariants (tool exchanges, both dropping
//! strategies, minimality, counts checked with tiktoken-rs).

use std::fs;

use promptbook::{ErrorKind, Origin, Reference, Registry, Role, Selector};
use proptest::prelude::*;
use semver::{Version, VersionReq};
use serde_json::json;

fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9_][a-z0-9_.-]{0,6}".prop_filter("no `..`", |s| !s.contains(".."))
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| s.join("/"))
}

fn version() -> impl Strategy<Value = Version> {
    (
        0u64..3,
        0u64..3,
        0u64..3,
        prop::option::weighted(0.25, "(alpha|beta|rc)\\.[0-2]"),
    )
        .prop_map(|(major, minor, patch, pre)| {
            let mut v = Version::new(major, minor, patch);
            if let Some(pre) = pre {
                v.pre = semver::Prerelease::new(&pre).unwrap();
            }
            v
        })
}

fn requirement() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(""),
            Just("^"),
            Just("~"),
            Just("="),
            Just(">="),
            Just("<"),
            Just(">")
        ],
        version(),
    )
        .prop_map(|(op, v)| format!("{op}{v}"))
        .boxed()
        .prop_union(Just("*".to_owned()).boxed())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_string_parses_or_errors_without_panicking(s in "\\PC{0,40}") {
        let _ = Reference::parse(&s);
    }

    #[test]
    fn names_that_could_escape_the_root_are_rejected(
        base in name(),
        bad in prop_oneof![Just("../x"), Just("/abs"), Just("a\\b"), Just("a\0b"), Just("x/../y"), Just(".hidden"), Just("a//b")],
    ) {
        let escaped = if bad.starts_with('/') { bad.to_owned() } else { format!("{base}/{bad}") };
        let e = Reference::parse(&escaped).unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::Reference);
        let with_req = format!("{escaped}@^1");
        prop_assert!(Reference::parse(&with_req).is_err());
    }

    #[test]
    fn valid_references_round_trip(n in name(), req in requirement()) {
        let r = Reference::parse(&format!("{n}@{req}")).unwrap();
        prop_assert_eq!(r.name(), n.as_str());
        // A full version with no operator pins that version.
        let oracle = if Version::parse(&req).is_ok() { format!("={req}") } else { req.clone() };
        let expected = VersionReq::parse(&oracle).unwrap();
        prop_assert_eq!(r.selector(), &Selector::Req(expected));
        let latest = Reference::parse(&n).unwrap();
        prop_assert_eq!(latest.selector(), &Selector::Latest);
    }
}

proptest! {
    // Each case writes a template root: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `NAME@REQ` picks the highest version semver says matches (with
    /// Cargo's pre-release rule), `NAME@1.2.3` exactly that version; `NAME`
    /// the highest release.
    #[test]
    fn resolution_agrees_with_semver(
        versions in prop::collection::btree_set(version(), 1..6),
        req in requirement(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for v in &versions {
            fs::write(
                dir.path().join(format!("t@{v}.prompt.yaml")),
                format!("version: {v}\nmessages:\n  - role: user\n    content: '{v}'\n"),
            )
            .unwrap();
        }
        let registry = Registry::load(dir.path()).unwrap();
        // A full version with no operator names exactly that version (as
        // npm pins); anything else is semver's requirement.
        let oracle = if Version::parse(&req).is_ok() { format!("={req}") } else { req.clone() };
        let parsed = VersionReq::parse(&oracle).unwrap();
        let expected = versions.iter().filter(|v| parsed.matches(v)).max();
        match (registry.get(&format!("t@{req}")), expected) {
            (Ok(t), Some(v)) => prop_assert_eq!(t.version(), v),
            (Err(e), None) => prop_assert_eq!(e.kind(), ErrorKind::Reference),
            (got, want) => prop_assert!(false, "t@{}: got {:?}, want {:?}", req, got.map(|t| t.version().clone()), want),
        }
        let latest = versions.iter().filter(|v| v.pre.is_empty()).max();
        match (registry.get("t"), latest) {
            (Ok(t), Some(v)) => prop_assert_eq!(t.version(), v),
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "t: got {:?}, want {:?}", got.map(|t| t.version().clone()), want),
        }
    }
}

/// One unit of a generated conversation.
#[derive(Debug, Clone)]
enum Turn {
    User(usize),
    Assistant(usize),
    /// An assistant turn calling `n` tools at once, then their `n` results.
    Tools(usize, usize),
}

fn conversation() -> impl Strategy<Value = Vec<Turn>> {
    prop::collection::vec(
        prop_oneof![
            3 => (1usize..40).prop_map(Turn::User),
            3 => (1usize..40).prop_map(Turn::Assistant),
            2 => (1usize..4, 1usize..30).prop_map(|(n, w)| Turn::Tools(n, w)),
        ],
        0..30,
    )
}

fn history_json(turns: &[Turn]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        match turn {
            Turn::User(w) => {
                out.push(json!({"role": "user", "content": format!("{i} {}", "ask ".repeat(*w))}))
            }
            Turn::Assistant(w) => out.push(
                json!({"role": "assistant", "content": format!("{i} {}", "say ".repeat(*w))}),
            ),
            Turn::Tools(n, w) => {
                let calls: Vec<_> = (0..*n)
                    .map(|k| json!({"id": format!("call_{i}_{k}"), "type": "function", "function": {"name": "lookup", "arguments": format!("{{\"k\":{k}}}")}}))
                    .collect();
                out.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
                for k in 0..*n {
                    out.push(json!({"role": "tool", "tool_call_id": format!("call_{i}_{k}"), "content": format!("{i} {}", "result ".repeat(*w))}));
                }
            }
        }
    }
    out
}

/// A message's tokens by OpenAI's published formula, counted with
/// tiktoken-rs (independent of promptbook's tokenizer).
fn tiktoken_tokens(bpe: &tiktoken_rs::CoreBPE, m: &promptbook::Message) -> usize {
    let count = |s: &str| bpe.encode_ordinary(s).len();
    let mut n = 3 + count(m.role.as_str()) + count(&m.text());
    if let Some(name) = &m.name {
        n += count(name) + 1;
    }
    if let Some(id) = &m.tool_call_id {
        n += count(id);
    }
    if let Some(calls) = &m.tool_calls {
        n += count(&serde_json::to_string(calls).unwrap());
    }
    n
}

fn strategy() -> impl Strategy<Value = promptbook::Strategy> {
    prop_oneof![
        Just(promptbook::Strategy::DropOldest),
        (0usize..6).prop_map(promptbook::Strategy::KeepFirst),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    /// Fitting a history with tool calls (parallel ones too), under either
    /// dropping strategy: the kept prompt fits by tiktoken's count; template
    /// messages stay; a `KeepFirst(n)` prefix stays (widened so no tool
    /// exchange is split); the rest is a suffix that starts on a user turn
    /// when anything was cut; every tool result keeps its call and every
    /// call its results; and the fit is minimal: no cut that drops fewer
    /// messages at a valid place would have fitted. A fit that fails does
    /// so only when dropping everything droppable does not fit either.
    #[test]
    fn truncation_keeps_tool_exchanges_whole_and_drops_no_more_than_it_must(
        turns in conversation(),
        budget in 20usize..2500,
        strategy in strategy(),
    ) {
        static BPE: std::sync::LazyLock<tiktoken_rs::CoreBPE> =
            std::sync::LazyLock::new(|| tiktoken_rs::o200k_base().unwrap());
        static REGISTRY: std::sync::LazyLock<Registry> =
            std::sync::LazyLock::new(|| Registry::load("templates").unwrap());
        let bpe = &*BPE;
        let rendered = REGISTRY
            .render("chat/assistant", &json!({"question": "Now?", "history": history_json(&turns)}))
            .unwrap();
        let all: Vec<(promptbook::Message, bool)> = rendered
            .messages_with_origin()
            .map(|(m, o)| (m.clone(), matches!(o, Origin::History { .. })))
            .collect();
        let cost: Vec<usize> = all.iter().map(|(m, _)| tiktoken_tokens(bpe, m)).collect();
        prop_assert_eq!(&rendered.tokens.messages, &cost, "counts differ from tiktoken's");
        let total_of = |keep: &dyn Fn(usize) -> bool| -> usize {
            (0..all.len()).filter(|&i| keep(i)).map(|i| cost[i]).sum::<usize>() + 3
        };
        let history: Vec<usize> = (0..all.len()).filter(|&i| all[i].1).collect();
        // The protected prefix, widened past a split tool exchange.
        let protected = match strategy {
            promptbook::Strategy::KeepFirst(n) => {
                let mut n = n.min(history.len());
                while n > 0
                    && n < history.len()
                    && (all[history[n]].0.role == Role::Tool
                        || all[history[n - 1]].0.tool_calls.is_some())
                {
                    n += 1;
                }
                n
            }
            _ => 0,
        };
        let tail = &history[protected..];
        let cut_is_valid = |p: usize| p == tail.len() || all[tail[p]].0.role == Role::User;
        let fits_after = |p: usize| total_of(&|i| !tail[..p].contains(&i)) <= budget;

        let mut fitted = rendered.clone();
        match fitted.fit(budget, strategy) {
            Ok(_) => {
                let kept: Vec<&promptbook::Message> = fitted.messages.iter().collect();
                let independent: usize = kept.iter().map(|m| tiktoken_tokens(bpe, m)).sum::<usize>() + 3;
                prop_assert_eq!(fitted.tokens.total, independent);
                prop_assert!(independent <= budget, "{} > {}", independent, budget);
                // What was dropped is exactly tail[..p] for some p.
                let dropped = all.len() - kept.len();
                prop_assert!(dropped <= tail.len());
                let expected: Vec<&promptbook::Message> = (0..all.len())
                    .filter(|i| !tail[..dropped].contains(i))
                    .map(|i| &all[i].0)
                    .collect();
                prop_assert_eq!(&kept, &expected, "not the protected prefix plus a suffix");
                if dropped > 0 {
                    prop_assert!(cut_is_valid(dropped), "the kept history restarts on a non-user turn");
                    // Minimal: no valid smaller cut fits.
                    for p in 0..dropped {
                        prop_assert!(!(cut_is_valid(p) && fits_after(p)), "dropping {} would have fitted, dropped {}", p, dropped);
                    }
                }
                // Tool exchanges are whole.
                for (i, m) in kept.iter().enumerate() {
                    if m.role == Role::Tool {
                        let id = m.tool_call_id.as_deref().unwrap();
                        let called = kept[..i].iter().any(|c| c.tool_calls.as_ref().is_some_and(|cs| cs.iter().any(|c| c["id"] == id)));
                        prop_assert!(called, "tool result {} kept without its call", id);
                    }
                    if let Some(calls) = &m.tool_calls {
                        for c in calls {
                            let answered = kept.iter().any(|r| r.tool_call_id.as_deref() == c["id"].as_str());
                            prop_assert!(answered, "call {} kept without its result", c["id"]);
                        }
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Budget);
                prop_assert_eq!(&fitted.messages, &rendered.messages, "a failed fit changed the messages");
                prop_assert!(total_of(&|i| !tail.contains(&i)) > budget, "dropping all droppable would have fitted");
            }
        }
    }
}
