//! What an answer cost, from the prices a deployment writes in
//! `providers.yaml` (nothing is built in: prices change):
//!
//! ```yaml
//! openai:
//!   prices:              # per million tokens, in the currency you write them in
//!     gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.60}
//! anthropic:
//!   prices:
//!     claude-sonnet-4-5: {input: 3, cached_input: 0.30, cache_write: 3.75, output: 15}
//! ```
//!
//! The two wires count prompt tokens differently. OpenAI's `prompt_tokens`
//! include the cached ones (`prompt_tokens_details.cached_tokens`), which
//! are charged at `cached_input`. Anthropic's `input_tokens` leave out cache
//! reads (`cache_read_input_tokens`, at `cached_input`) and cache writes
//! (`cache_creation_input_tokens`, at `cache_write`). Reasoning tokens are
//! output tokens on both. A rate left out is charged at `input`.

use serde::Deserialize;

use super::config::ProviderKind;
use super::response::Usage;

/// One model's prices, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Prices {
    /// Prompt tokens not read from the cache.
    pub input: f64,
    /// Reply tokens (reasoning included).
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache; `input` when
    /// left out.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the prompt cache (Anthropic); `input`
    /// when left out.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

// Prices are finite (`check` refuses NaN when a client is built), so
// equality is an equivalence, as `ProviderConfig: Eq` needs.
impl Eq for Prices {}

impl Prices {
    /// `input` and `output` per million tokens, the cache at `input`.
    pub fn new(input: f64, output: f64) -> Prices {
        Prices {
            input,
            output,
            cached_input: None,
            cache_write: None,
        }
    }

    /// Sets the price of cached prompt tokens.
    pub fn cached_input(mut self, price: f64) -> Prices {
        self.cached_input = Some(price);
        self
    }

    /// Sets the price of prompt tokens written to the cache.
    pub fn cache_write(mut self, price: f64) -> Prices {
        self.cache_write = Some(price);
        self
    }

    /// Prices a deployment can mean: finite and not negative.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!(
                    "prices: `{name}` must be a number of at least 0 ({v})"
                ));
            }
        }
        Ok(())
    }

    /// What `usage` cost on a `kind` wire.
    pub(crate) fn cost(&self, kind: ProviderKind, usage: &Usage) -> f64 {
        let read = usage.cache_read_input_tokens.unwrap_or(0) as f64;
        let written = usage.cache_creation_input_tokens.unwrap_or(0) as f64;
        let input = usage.input_tokens as f64;
        let uncached = match kind {
            // Cached tokens are part of `prompt_tokens`.
            ProviderKind::Openai => (input - read).max(0.0),
            ProviderKind::Anthropic => input,
        };
        let written = match kind {
            ProviderKind::Openai => 0.0,
            ProviderKind::Anthropic => written,
        };
        (uncached * self.input
            + read * self.cached_input.unwrap_or(self.input)
            + written * self.cache_write.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, read: Option<u64>, written: Option<u64>) -> Usage {
        let mut u = Usage::new(input, output);
        u.cache_read_input_tokens = read;
        u.cache_creation_input_tokens = written;
        u
    }

    #[test]
    fn each_wire_counts_cached_tokens_its_own_way() {
        let p = Prices::new(2.0, 8.0).cached_input(0.5).cache_write(2.5);
        // OpenAI: 1,000 prompt tokens of which 400 cached.
        let openai = p.cost(ProviderKind::Openai, &usage(1_000, 100, Some(400), None));
        assert!((openai - (600.0 * 2.0 + 400.0 * 0.5 + 100.0 * 8.0) / 1e6).abs() < 1e-12);
        // Anthropic: 1,000 uncached, 400 read and 300 written besides.
        let anthropic = p.cost(
            ProviderKind::Anthropic,
            &usage(1_000, 100, Some(400), Some(300)),
        );
        let expected = (1_000.0 * 2.0 + 400.0 * 0.5 + 300.0 * 2.5 + 100.0 * 8.0) / 1e6;
        assert!((anthropic - expected).abs() < 1e-12);
        // Rates left out are the input rate.
        let plain = Prices::new(1.0, 1.0);
        let c = plain.cost(ProviderKind::Anthropic, &usage(10, 0, Some(10), Some(10)));
        assert!((c - 30.0 / 1e6).abs() < 1e-15);
    }

    #[test]
    fn prices_that_mean_nothing_are_refused() {
        assert!(Prices::new(-1.0, 1.0).check().is_err());
        assert!(Prices::new(1.0, f64::NAN).check().is_err());
        assert!(
            Prices::new(1.0, 1.0)
                .cached_input(f64::INFINITY)
                .check()
                .is_err()
        );
        assert!(Prices::new(0.0, 0.0).check().is_ok());
    }
}
