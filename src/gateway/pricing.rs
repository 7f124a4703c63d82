//! The price table: USD per million tokens by provider and model, shipped in
//! `charts/payi-operator/files/prices.yaml` (compiled in as the default) and
//! replaceable by a file the gateway re-reads while it runs.
//!
//! Lookup (pure): a model matches a table name equal to it or followed by `-`
//! (dated and suffixed variants), the longest such name winning; the metric label
//! is the table's name, so the label set is bounded by the table.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;

use super::usage::Usage;

const DEFAULT_TABLE: &str = include_str!("../../charts/payi-operator/files/prices.yaml");

/// One model's prices, USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    /// Input read from the prompt cache; priced as input when absent.
    #[serde(default, alias = "cacheRead")]
    pub cached_input: Option<f64>,
    /// Input written to the cache; priced as input when absent.
    #[serde(default)]
    pub cache_write: Option<f64>,
    pub output: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    #[serde(default)]
    pub providers: BTreeMap<String, BTreeMap<String, Price>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("the price table is not valid YAML for the gateway: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("price of {provider}/{model}: {why}")]
    Invalid { provider: String, model: String, why: &'static str },
    #[error("reading the price table {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

impl PriceTable {
    pub fn parse(text: &str) -> Result<Self, PricingError> {
        let table: PriceTable = serde_yaml::from_str(text)?;
        for (provider, models) in &table.providers {
            for (model, price) in models {
                let figures = [Some(price.input), price.cached_input, price.cache_write, Some(price.output)];
                if figures.into_iter().flatten().any(|p| !p.is_finite() || p < 0.0) {
                    let (provider, model) = (provider.clone(), model.clone());
                    return Err(PricingError::Invalid { provider, model, why: "prices are finite and not negative" });
                }
            }
        }
        Ok(table)
    }

    /// The table shipped with the gateway.
    pub fn default_table() -> Result<Self, PricingError> {
        Self::parse(DEFAULT_TABLE)
    }

    /// The table's name for `model` at `provider`, and its price.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<(&str, &Price)> {
        let models = self.providers.get(provider)?;
        models
            .iter()
            .filter(|(name, _)| {
                model == name.as_str() || model.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('-'))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(name, price)| (name.as_str(), price))
    }
}

/// What `usage` costs at `price`, in USD.
pub fn cost_usd(usage: &Usage, price: &Price) -> f64 {
    let per_token = |per_million: f64| per_million / 1_000_000.0;
    usage.input as f64 * per_token(price.input)
        + usage.cached_input as f64 * per_token(price.cached_input.unwrap_or(price.input))
        + usage.cache_write as f64 * per_token(price.cache_write.unwrap_or(price.input))
        + (usage.output + usage.reasoning) as f64 * per_token(price.output)
}

/// The table in use, swapped whole on reload.
pub struct Prices {
    table: RwLock<Arc<PriceTable>>,
    /// The text last loaded from the file, so an unchanged file is not re-parsed.
    loaded: Mutex<Option<String>>,
}

impl Prices {
    pub fn new(table: PriceTable) -> Self {
        Self { table: RwLock::new(Arc::new(table)), loaded: Mutex::new(None) }
    }

    pub fn current(&self) -> Arc<PriceTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the table with the file's when its text changed; a file that cannot
    /// be read or parsed leaves the table as it was. Returns whether it changed.
    pub fn reload_from(&self, path: &Path) -> Result<bool, PricingError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PricingError::Read { path: path.display().to_string(), source })?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let table = PriceTable::parse(&text)?;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        *loaded = Some(text);
        Ok(true)
    }
}

/// The unpriced models already logged, so each is logged once; bounded, so a
/// client sending endless model names cannot grow it without limit.
#[derive(Default)]
pub struct Unpriced(Mutex<HashSet<(String, String)>>);

/// Beyond this many distinct unpriced models, no more are logged.
const UNPRICED_LOGGED: usize = 1024;

impl Unpriced {
    /// True the first time `model` at `provider` is seen (up to the bound).
    pub fn first_time(&self, provider: &str, model: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= UNPRICED_LOGGED {
            return false;
        }
        seen.insert((provider.to_string(), model.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_prices_the_common_models() {
        let table = PriceTable::default_table().unwrap();
        for (provider, model) in [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")] {
            assert!(table.lookup(provider, model).is_some(), "{provider}/{model}");
        }
    }

    #[test]
    fn dated_variants_match_and_the_longest_name_wins() {
        let table = PriceTable::default_table().unwrap();
        assert_eq!(table.lookup("openai", "gpt-4o-2024-08-06").unwrap().0, "gpt-4o");
        assert_eq!(table.lookup("openai", "gpt-4o-mini-2024-07-18").unwrap().0, "gpt-4o-mini");
        assert_eq!(table.lookup("anthropic", "claude-opus-4-1-20250805").unwrap().0, "claude-opus-4-1");
        assert_eq!(table.lookup("anthropic", "claude-sonnet-4-20250514").unwrap().0, "claude-sonnet-4");
        // A prefix that is not at a '-' boundary does not match.
        assert!(table.lookup("openai", "gpt-4omega").is_none());
        assert!(table.lookup("openai", "my-finetune-1").is_none());
        assert!(table.lookup("nobody", "gpt-4o").is_none());
    }

    #[test]
    fn cost_prices_each_token_type() {
        let price = Price { input: 2.0, cached_input: Some(1.0), cache_write: Some(4.0), output: 10.0 };
        let usage = Usage {
            input: 1_000_000,
            cached_input: 500_000,
            cache_write: 250_000,
            output: 100_000,
            reasoning: 100_000,
        };
        let cost = cost_usd(&usage, &price);
        assert!((cost - (2.0 + 0.5 + 1.0 + 2.0)).abs() < 1e-9, "{cost}");
        let no_cache_prices = Price { input: 3.0, cached_input: None, cache_write: None, output: 0.0 };
        let usage = Usage { cached_input: 1_000_000, cache_write: 1_000_000, ..Usage::default() };
        assert!((cost_usd(&usage, &no_cache_prices) - 6.0).abs() < 1e-9);
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let err = PriceTable::parse("providers: {openai: {m: {input: -1, output: 1}}}").unwrap_err();
        assert_eq!(err.to_string(), "price of openai/m: prices are finite and not negative");
        assert!(PriceTable::parse("providers: {openai: {m: {input: 1}}}").is_err());
        assert!(PriceTable::parse("providers: {openai: {m: {input: 1, output: 1, typo: 2}}}").is_err());
        let alias = PriceTable::parse("providers: {anthropic: {m: {input: 1, cacheRead: 0.1, output: 2}}}").unwrap();
        assert_eq!(alias.lookup("anthropic", "m").unwrap().1.cached_input, Some(0.1));
    }

    #[test]
    fn reload_swaps_the_table_only_when_the_file_changed_and_keeps_it_on_error() {
        let dir = std::env::temp_dir().join(format!("payi-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prices.yaml");
        let prices = Prices::new(PriceTable::default_table().unwrap());
        std::fs::write(&path, "providers: {openai: {mine: {input: 1, output: 2}}}").unwrap();
        assert!(prices.reload_from(&path).unwrap());
        assert!(!prices.reload_from(&path).unwrap());
        assert!(prices.current().lookup("openai", "mine").is_some());
        assert!(prices.current().lookup("openai", "gpt-4o").is_none());
        std::fs::write(&path, "providers: [").unwrap();
        assert!(prices.reload_from(&path).is_err());
        assert!(prices.current().lookup("openai", "mine").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unpriced_models_are_reported_once_and_the_memory_is_bounded() {
        let unpriced = Unpriced::default();
        assert!(unpriced.first_time("openai", "x"));
        assert!(!unpriced.first_time("openai", "x"));
        for i in 0..2 * UNPRICED_LOGGED {
            unpriced.first_time("openai", &format!("m{i}"));
        }
        assert_eq!(unpriced.0.lock().unwrap().len(), UNPRICED_LOGGED);
    }
}
