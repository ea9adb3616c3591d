//! The response cache: answers to deterministic calls (`temperature: 0`),
//! kept for a TTL, keyed by everything that decides the answer. In memory,
//! or in Redis (feature `redis`, `state: {redis: URL}`) so that an answer
//! one replica paid for serves them all; while Redis cannot be reached,
//! this process's memory serves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::response::Response;

/// Answers to deterministic calls, kept for a TTL. Bounded: in memory,
/// when full, expired entries go, then everything; in Redis, each entry
/// expires with its TTL.
pub(crate) struct Cache {
    pub ttl: Duration,
    entries: Mutex<HashMap<u128, (Instant, Response)>>,
    #[cfg(feature = "redis")]
    shared: Option<std::sync::Arc<super::state::Shared>>,
}

const CACHE_ENTRIES: usize = 4096;

impl Cache {
    /// An empty cache whose entries live `ttl`.
    pub(crate) fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// A cache kept where `state` says.
    pub(crate) fn shared(ttl: Duration, state: &std::sync::Arc<super::state::Shared>) -> Cache {
        #[cfg(not(feature = "redis"))]
        let _ = state;
        Cache {
            #[cfg(feature = "redis")]
            shared: state.redis.as_ref().map(|_| state.clone()),
            ..Cache::new(ttl)
        }
    }

    /// A fresh answer stored under `key`, by this or (shared) any process.
    pub(crate) async fn get(&self, key: u128) -> Option<Response> {
        #[cfg(feature = "redis")]
        if let Some(state) = &self.shared
            && let Some(store) = &state.redis
        {
            match store
                .cache_get(&store.key(&["cache", &format!("{key:032x}")]))
                .await
            {
                // An entry that does not read (written by another version)
                // is a miss.
                Ok(bytes) => return bytes.and_then(|b| serde_json::from_slice(&b).ok()),
                Err(e) => state.warn_outage(&e),
            }
        }
        self.get_local(key)
    }

    /// Stores an answer.
    pub(crate) async fn put(&self, key: u128, response: &Response) {
        #[cfg(feature = "redis")]
        if let Some(state) = &self.shared
            && let Some(store) = &state.redis
            && let Ok(bytes) = serde_json::to_vec(response)
        {
            let at = store.key(&["cache", &format!("{key:032x}")]);
            match store.cache_put(&at, &bytes, self.ttl).await {
                Ok(()) => return,
                Err(e) => state.warn_outage(&e),
            }
        }
        self.put_local(key, response);
    }

    fn get_local(&self, key: u128) -> Option<Response> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, response) = entries.get(&key)?;
        (at.elapsed() < self.ttl).then(|| response.clone())
    }

    fn put_local(&self, key: u128, response: &Response) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::response::Response;
    use serde_json::json;

    fn answer(text: &str) -> Response {
        Response {
            text: text.to_owned(),
            ..Response::default()
        }
    }

    #[test]
    fn the_key_covers_provider_endpoint_and_every_part_of_the_body() {
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "a"}], "temperature": 0});
        let base = key("openai", "https://api.openai.com/v1", &body);
        assert_eq!(
            base,
            key("openai", "https://api.openai.com/v1", &body.clone())
        );
        let mut other_content = body.clone();
        other_content["messages"][0]["content"] = json!("b");
        let mut other_param = body.clone();
        other_param["max_tokens"] = json!(5);
        let mut other_model = body.clone();
        other_model["model"] = json!("n");
        for (what, k) in [
            ("provider", key("local", "https://api.openai.com/v1", &body)),
            ("endpoint", key("openai", "http://127.0.0.1:8080/v1", &body)),
            (
                "content",
                key("openai", "https://api.openai.com/v1", &other_content),
            ),
            (
                "parameter",
                key("openai", "https://api.openai.com/v1", &other_param),
            ),
            (
                "model",
                key("openai", "https://api.openai.com/v1", &other_model),
            ),
            // The separators keep name and URL apart.
            (
                "boundary",
                key("openaih", "ttps://api.openai.com/v1", &body),
            ),
        ] {
            assert_ne!(base, k, "a different {what} is a different key");
        }
    }

    #[tokio::test]
    async fn an_answer_is_served_until_its_ttl_passes() {
        let cache = Cache::new(Duration::from_secs(60));
        assert!(cache.get(1).await.is_none());
        cache.put(1, &answer("one")).await;
        assert_eq!(cache.get(1).await.map(|r| r.text), Some("one".to_owned()));
        assert!(cache.get(2).await.is_none());
        let expired = Cache::new(Duration::ZERO);
        expired.put(1, &answer("one")).await;
        assert!(expired.get(1).await.is_none(), "a zero TTL keeps nothing");
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let cache = Cache::new(Duration::from_secs(60));
        for k in 0..(CACHE_ENTRIES as u128 + 10) {
            cache.put(k, &answer("x")).await;
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CACHE_ENTRIES, "{len} entries");
        // The newest answer is always kept.
        assert!(cache.get(CACHE_ENTRIES as u128 + 9).await.is_some());
    }
}
