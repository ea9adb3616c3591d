//! Token counts against OpenAI's own tiktoken.
//!
//! `tests/data/tokens/corpus.json` was produced by OpenAI's Python `tiktoken`
//! (`encode_ordinary`, so special-token look-alikes are plain text) and the
//! cookbook's `num_tokens_from_messages`; see `tests/data/tokens/generate.py`
//! for exactly how. The property tests compare with `tiktoken-rs` on
//! generated strings.

use promptbook::Message;
use promptbook::tokens::{Encoding, count_messages};
use proptest::prelude::*;
use serde_json::Value;

fn corpus() -> Value {
    serde_json::from_str(&std::fs::read_to_string("tests/data/tokens/corpus.json").unwrap())
        .unwrap()
}

const ENCODINGS: [(Encoding, &str); 2] = [
    (Encoding::Cl100kBase, "cl100k_base"),
    (Encoding::O200kBase, "o200k_base"),
];

#[test]
fn texts_count_exactly_as_tiktoken() {
    let corpus = corpus();
    let texts = corpus["texts"].as_array().unwrap();
    assert!(texts.len() > 20);
    for t in texts {
        let text = t["text"].as_str().unwrap();
        for (encoding, key) in ENCODINGS {
            assert_eq!(
                encoding.count(text) as u64,
                t[key].as_u64().unwrap(),
                "{key} on {}",
                t["name"]
            );
        }
    }
}

#[test]
fn chats_count_as_the_published_formula() {
    let corpus = corpus();
    for chat in corpus["chats"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(chat["messages"].clone()).unwrap();
        for (encoding, key) in ENCODINGS {
            assert_eq!(
                count_messages(&encoding, &messages).total as u64,
                chat[key].as_u64().unwrap(),
                "{key} on chat {}",
                chat["name"]
            );
        }
    }
}

#[test]
fn count_till_limit_stops_early_and_agrees() {
    let text = "hello world ".repeat(1000);
    let n = Encoding::O200kBase.count(&text);
    assert_eq!(Encoding::O200kBase.count_till_limit(&text, n), Some(n));
    assert_eq!(Encoding::O200kBase.count_till_limit(&text, n - 1), None);
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z]{1,12}",
        "[0-9]{1,8}",
        "[ \t\n\r]{1,4}",
        "[.,;:!?'\"(){}<>|/\\\\-]{1,3}",
        "[\u{4e00}-\u{4e50}]{1,6}",
        "[\u{3040}-\u{30ff}]{1,4}",
        "[\u{0400}-\u{04ff}]{1,6}",
        "[\u{1f300}-\u{1f64f}]{1,3}",
        Just("<|endoftext|>".to_owned()),
        Just("<|im_start|>".to_owned()),
        Just("'s".to_owned()),
        Just("'LL".to_owned()),
        Just("\u{200d}".to_owned()),
        Just("\u{301}".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn counts_equal_tiktoken_rs(parts in prop::collection::vec(fragment(), 0..24)) {
        let text: String = parts.concat();
        let cl = tiktoken_rs::cl100k_base_singleton();
        let o = tiktoken_rs::o200k_base_singleton();
        prop_assert_eq!(Encoding::Cl100kBase.count(&text), cl.encode_ordinary(&text).len());
        prop_assert_eq!(Encoding::O200kBase.count(&text), o.encode_ordinary(&text).len());
    }

    // Long texts take the memoised path: repeat the parts past 2 KiB.
    #[test]
    fn long_counts_equal_tiktoken_rs(parts in prop::collection::vec(fragment(), 1..24), reps in 1usize..40) {
        let unit: String = parts.concat();
        let text = unit.repeat(reps.max(2048 / unit.len().max(1) + 1));
        let cl = tiktoken_rs::cl100k_base_singleton();
        let o = tiktoken_rs::o200k_base_singleton();
        prop_assert_eq!(Encoding::Cl100kBase.count(&text), cl.encode_ordinary(&text).len());
        prop_assert_eq!(Encoding::O200kBase.count(&text), o.encode_ordinary(&text).len());
    }
}
