//! Property tests: reference parsing, version resolution against semver's
//! own rules, and the truncation invariants.

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

fn history() -> impl Strategy<Value = Vec<(Role, usize)>> {
    prop::collection::vec(
        (
            prop_oneof![Just(Role::User), Just(Role::Assistant)],
            1usize..60,
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Fitting never breaks the conversation: the result fits, template
    /// messages stay, the oldest history goes first, and what is left of the
    /// history starts with a user turn.
    #[test]
    fn truncation_invariants(turns in history(), budget in 20usize..1500) {
        let registry = Registry::load("templates").unwrap();
        let history: Vec<_> = turns
            .iter()
            .enumerate()
            .map(|(i, (role, words))| json!({"role": role, "content": format!("{i} {}", "word ".repeat(*words))}))
            .collect();
        let rendered = registry
            .render("chat/assistant", &json!({"question": "Now?", "history": history}))
            .unwrap();
        let mut fitted = rendered.clone();
        match fitted.fit(budget, promptbook::Strategy::DropOldest) {
            Ok(_) => {
                prop_assert!(fitted.tokens.total <= budget, "{} > {budget}", fitted.tokens.total);
                let template = |r: &promptbook::Rendered| -> Vec<String> {
                    r.messages_with_origin()
                        .filter(|(_, o)| **o == Origin::Template)
                        .map(|(m, _)| m.content.clone())
                        .collect()
                };
                prop_assert_eq!(template(&fitted), template(&rendered));
                let kept: Vec<&str> = fitted
                    .messages_with_origin()
                    .filter(|(_, o)| matches!(o, Origin::History { .. }))
                    .map(|(m, _)| m.content.as_str())
                    .collect();
                let all: Vec<&str> = rendered
                    .messages_with_origin()
                    .filter(|(_, o)| matches!(o, Origin::History { .. }))
                    .map(|(m, _)| m.content.as_str())
                    .collect();
                prop_assert!(all.ends_with(&kept), "not a suffix: dropped from the middle or the end");
                // After a cut, the history restarts on a user turn (a history
                // that fits whole is left as the caller gave it).
                if kept.len() < all.len()
                    && let Some(first) = fitted.messages_with_origin().find(|(_, o)| matches!(o, Origin::History { .. }))
                {
                    prop_assert_eq!(first.0.role, Role::User);
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Budget);
                prop_assert_eq!(&fitted.messages, &rendered.messages, "a failed fit changed the messages");
            }
        }
    }
}
