//! Process-wide memos of pure, costly load steps, keyed by a 128-bit hash of
//! their whole input: parsing a file, compiling a JSON Schema, checking a
//! Jinja source. Reloading a root where one file changed then redoes the
//! work for that file only. Each memo is bounded and simply forgets
//! everything when full.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use xxhash_rust::xxh3::Xxh3;

pub(crate) struct Memo<V> {
    map: LazyLock<Mutex<HashMap<u128, V, foldhash::fast::RandomState>>>,
    limit: usize,
}

impl<V: Clone> Memo<V> {
    pub(crate) const fn new(limit: usize) -> Memo<V> {
        Memo {
            map: LazyLock::new(|| Mutex::new(HashMap::default())),
            limit,
        }
    }

    pub(crate) fn get(&self, key: u128) -> Option<V> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    pub(crate) fn put(&self, key: u128, value: V) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.limit {
            map.clear();
        }
        map.insert(key, value);
    }
}

/// A hash of several byte strings, each length-prefixed.
pub(crate) fn key(parts: &[&[u8]]) -> u128 {
    let mut h = Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.digest128()
}

/// A hash of a JSON value's structure and content, without serialising it.
pub(crate) fn value_key(value: &serde_json::Value) -> u128 {
    fn feed(h: &mut Xxh3, v: &serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::Null => h.update(b"n"),
            Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                h.update(b"#");
                // Numbers are short: their text is exact and cheap enough.
                let text = n.to_string();
                h.update(&(text.len() as u64).to_le_bytes());
                h.update(text.as_bytes());
            }
            Value::String(s) => {
                h.update(b"s");
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            Value::Array(items) => {
                h.update(b"[");
                h.update(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| feed(h, i));
            }
            Value::Object(map) => {
                h.update(b"{");
                h.update(&(map.len() as u64).to_le_bytes());
                for (k, v) in map {
                    h.update(&(k.len() as u64).to_le_bytes());
                    h.update(k.as_bytes());
                    feed(h, v);
                }
            }
        }
    }
    let mut h = Xxh3::new();
    feed(&mut h, value);
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_keys_tell_values_apart() {
        let a = json!({"type": "string", "enum": ["a", "b"]});
        assert_eq!(value_key(&a), value_key(&a.clone()));
        for other in [
            json!({"type": "string", "enum": ["ab"]}),
            json!({"type": "string", "enum": ["a", "b", ""]}),
            json!({"type": "strin", "genum": ["a", "b"]}),
            json!(["type", "string"]),
            json!({"type": "string", "enum": ["a", "b"], "x": null}),
        ] {
            assert_ne!(value_key(&a), value_key(&other), "{other}");
        }
        assert_ne!(value_key(&json!(1)), value_key(&json!("1")));
        assert_ne!(value_key(&json!(1)), value_key(&json!(1.5)));
    }
}
