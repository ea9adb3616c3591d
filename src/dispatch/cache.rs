//! The response cache: answers to deterministic calls (`temperature: 0`),
//! kept in memory for a TTL, keyed by everything that decides the answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::response::Response;

/// Answers to deterministic calls, kept for a TTL. Bounded: when full,
/// expired entries go, then everything.
pub(crate) struct Cache {
    pub ttl: Duration,
    entries: Mutex<HashMap<u128, (Instant, Response)>>,
}

const CACHE_ENTRIES: usize = 4096;

impl Cache {
    /// An empty cache whose entries live `ttl`.
    pub(crate) fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh answer stored under `key`.
    pub(crate) fn get(&self, key: u128) -> Option<Response> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, response) = entries.get(&key)?;
        (at.elapsed() < self.ttl).then(|| response.clone())
    }

    /// Stores an answer.
    pub(crate) fn put(&self, key: u128, response: &Response) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), response.clone()));
    }
}

/// The key of a call: the provider's name and base URL, and the request
/// body (model, messages and parameters: the body says it all).
pub(crate) fn key(provider: &str, base_url: &str, body: &Value) -> u128 {
    let mut bytes = provider.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend(base_url.as_bytes());
    bytes.push(0);
    bytes.extend(body.to_string().as_bytes());
    xxhash_rust::xxh3::xxh3_128(&bytes)
}
