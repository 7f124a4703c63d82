//! The price table: exact prices by provider and model, shipped in
//! `charts/payi-operator/files/prices.yaml` (compiled in as the default) and
//! replaceable by a file the gateway re-reads while it runs.
//!
//! - **Exact money.** Each price is read once, at load, from its decimal text (a
//!   YAML number through its shortest decimal form, or a quoted decimal) into
//!   pico-USD per token ([`crate::money`]); a cost is an integer sum of tokens ×
//!   price, never a float.
//! - **Matching (pure).** A model matches only its table name, that name followed
//!   by a date (`-YYYY-MM-DD`, `-YYYYMMDD`, Vertex's `@YYYYMMDD`), or an alias the
//!   table declares (also with a date). Nothing else: `o1-pro` is not `o1`, and a
//!   model the table does not name is unpriced, never priced as a cheaper
//!   relative. An exact name wins over a dated one, so a dated snapshot with its
//!   own price can sit beside its base name. The metric label is the table's
//!   name, so the label set is bounded by the table.
//! - **Token types.** Each type of [`Usage`] has its price; absent prices fall
//!   back as [`TokenPrices`] and [`Price`] document. Above a model's
//!   `longContext.aboveInputTokens` input tokens, every token of the request is
//!   priced at the long-context prices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::usage::Usage;
use crate::money::{self, MoneyError, PicoPerToken, PicoUsd};

const DEFAULT_TABLE: &str = include_str!("../../charts/payi-operator/files/prices.yaml");

/// A 1-hour cache write without its own price costs this many times the input
/// price: Anthropic's rule (5-minute writes are 1.25×, 1-hour writes 2×).
const CACHE_WRITE_1H_TIMES_INPUT: u128 = 2;

/// Decimals a `webSearch` price (USD per 1,000 requests) may have: nine make a
/// whole number of pico-USD per request.
const WEB_SEARCH_DECIMALS: usize = 9;

/// The prices a long-context tier replaces, pico-USD per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenPrices {
    /// Input not read from a cache.
    pub input: PicoPerToken,
    /// Input read from the prompt cache; priced as `input` when absent.
    pub cached_input: Option<PicoPerToken>,
    /// Input written to the 5-minute cache; priced as `input` when absent.
    pub cache_write: Option<PicoPerToken>,
    /// Input written to the 1-hour cache; twice `input` when absent
    /// ([`CACHE_WRITE_1H_TIMES_INPUT`]).
    pub cache_write_1h: Option<PicoPerToken>,
    /// Output, reasoning included (both providers bill reasoning as output).
    pub output: PicoPerToken,
}

/// One model's prices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Price {
    pub tokens: TokenPrices,
    /// Audio input tokens; priced as the tier's `input` when absent (a model
    /// without audio has none to price).
    pub audio_input: Option<PicoPerToken>,
    /// Audio output tokens; priced as the tier's `output` when absent.
    pub audio_output: Option<PicoPerToken>,
    /// Each web search request (the table writes USD per 1,000); free when absent.
    pub web_search: Option<PicoUsd>,
    pub long_context: Option<LongContext>,
}

/// A long-context tier: when a request's input tokens (every kind: input, cached,
/// cache writes, audio) exceed `above_input_tokens`, all its tokens are priced at
/// `tokens` (audio and web search prices do not change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LongContext {
    pub above_input_tokens: u64,
    pub tokens: TokenPrices,
}

impl TokenPrices {
    /// The dearest price any input token of this tier can have.
    fn dearest_input(&self) -> PicoPerToken {
        let write_1h =
            self.cache_write_1h.unwrap_or(PicoPerToken(self.input.0.saturating_mul(CACHE_WRITE_1H_TIMES_INPUT)));
        [Some(self.input), self.cached_input, self.cache_write, Some(write_1h)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default()
    }
}

impl Price {
    /// An upper bound of what a request can cost: every one of at most
    /// `input_tokens` input tokens and `output_tokens` output tokens at the dearest
    /// price it could have (long-context tier, cache writes, audio). Web searches are
    /// not bounded by tokens and are left out.
    pub fn upper_bound(&self, input_tokens: u64, output_tokens: u64) -> PicoUsd {
        let tiers = [Some(&self.tokens), self.long_context.as_ref().map(|l| &l.tokens)];
        let tiers = tiers.into_iter().flatten();
        let input = tiers.clone().map(TokenPrices::dearest_input).chain(self.audio_input).max().unwrap_or_default();
        let output = tiers.map(|t| t.output).chain(self.audio_output).max().unwrap_or_default();
        PicoUsd::of_tokens(input_tokens, input) + PicoUsd::of_tokens(output_tokens, output)
    }

    /// The token prices for a request with `input_tokens` input tokens in all.
    pub fn tier(&self, input_tokens: u64) -> &TokenPrices {
        match &self.long_context {
            Some(long) if input_tokens > long.above_input_tokens => &long.tokens,
            _ => &self.tokens,
        }
    }
}

/// What `usage` costs at `price`, exactly.
pub fn cost(usage: &Usage, price: &Price) -> PicoUsd {
    let tier = price.tier(usage.total_input());
    let input = tier.input;
    let cache_write_1h = PicoPerToken(input.0.saturating_mul(CACHE_WRITE_1H_TIMES_INPUT));
    let tokens = [
        (usage.input, input),
        (usage.cached_input, tier.cached_input.unwrap_or(input)),
        (usage.cache_write, tier.cache_write.unwrap_or(input)),
        (usage.cache_write_1h, tier.cache_write_1h.unwrap_or(cache_write_1h)),
        (usage.audio_input, price.audio_input.unwrap_or(input)),
        (usage.output, tier.output),
        (usage.reasoning, tier.output),
        (usage.audio_output, price.audio_output.unwrap_or(tier.output)),
    ];
    let searches = usage.server_tools.web_search_requests;
    let web_search = PicoUsd(u128::from(searches).saturating_mul(price.web_search.unwrap_or_default().0));
    tokens.into_iter().map(|(count, price)| PicoUsd::of_tokens(count, price)).sum::<PicoUsd>() + web_search
}

/// The table: each provider's models and the aliases they declare.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceTable {
    providers: BTreeMap<String, ProviderPrices>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ProviderPrices {
    models: BTreeMap<String, Price>,
    /// Each alias and the model it names.
    aliases: HashMap<String, String>,
}

impl ProviderPrices {
    /// The model named `name` or aliased by it.
    fn named(&self, name: &str) -> Option<(&str, &Price)> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.models.get_key_value(name).map(|(name, price)| (name.as_str(), price))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("the price table is not valid YAML for the gateway: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("price of {provider}/{model}: {why}")]
    Invalid { provider: String, model: String, why: String },
    #[error("reading the price table {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

impl PriceTable {
    pub fn parse(text: &str) -> Result<Self, PricingError> {
        let raw: RawTable = serde_yaml::from_str(text)?;
        let mut providers = BTreeMap::new();
        for (provider, models) in raw.providers {
            let invalid = |model: &str, why: String| PricingError::Invalid {
                provider: provider.clone(),
                model: model.to_string(),
                why,
            };
            let mut prices = ProviderPrices::default();
            for (model, raw) in &models {
                prices.models.insert(model.clone(), raw.price().map_err(|why| invalid(model, why))?);
            }
            for (model, raw) in &models {
                for alias in &raw.aliases {
                    if models.contains_key(alias) {
                        return Err(invalid(model, format!("alias {alias:?} is the name of a model")));
                    }
                    if let Some(other) = prices.aliases.insert(alias.clone(), model.clone()) {
                        return Err(invalid(model, format!("alias {alias:?} is also an alias of {other}")));
                    }
                }
            }
            providers.insert(provider, prices);
        }
        Ok(Self { providers })
    }

    /// The table shipped with the gateway.
    pub fn default_table() -> Result<Self, PricingError> {
        Self::parse(DEFAULT_TABLE)
    }

    /// The table's name for `model` at `provider`, and its price: the model's own
    /// name or alias first, then the same without a date suffix.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<(&str, &Price)> {
        let prices = self.providers.get(provider)?;
        prices.named(model).or_else(|| prices.named(without_date(model)?))
    }
}

/// `model` without a trailing date (`-2024-08-06`, `-20250514`, `@20250514`);
/// `None` when it has none.
fn without_date(model: &str) -> Option<&str> {
    let b = model.as_bytes();
    let n = b.len();
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && is_date(&b[n - 10..n - 6], &b[n - 5..n - 3], &b[n - 2..])
    {
        return Some(&model[..n - 11]);
    }
    if n > 9 && matches!(b[n - 9], b'-' | b'@') && is_date(&b[n - 8..n - 4], &b[n - 4..n - 2], &b[n - 2..]) {
        return Some(&model[..n - 9]);
    }
    None
}

/// A plausible date, loosely: year 20xx, month 01-12, day 01-31.
fn is_date(year: &[u8], month: &[u8], day: &[u8]) -> bool {
    let number = |digits: &[u8]| {
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    year.starts_with(b"20")
        && number(year).is_some()
        && number(month).is_some_and(|m| (1..=12).contains(&m))
        && number(day).is_some_and(|d| (1..=31).contains(&d))
}

/// The table as written (camelCase, unknown keys refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    providers: BTreeMap<String, BTreeMap<String, RawPrice>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPrice {
    input: Figure,
    #[serde(default, alias = "cacheRead")]
    cached_input: Option<Figure>,
    #[serde(default)]
    cache_write: Option<Figure>,
    #[serde(default, rename = "cacheWrite1h")]
    cache_write_1h: Option<Figure>,
    output: Figure,
    #[serde(default)]
    audio_input: Option<Figure>,
    #[serde(default)]
    audio_output: Option<Figure>,
    /// USD per 1,000 requests.
    #[serde(default)]
    web_search: Option<Figure>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    long_context: Option<RawLongContext>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLongContext {
    above_input_tokens: u64,
    input: Figure,
    #[serde(default, alias = "cacheRead")]
    cached_input: Option<Figure>,
    #[serde(default)]
    cache_write: Option<Figure>,
    #[serde(default, rename = "cacheWrite1h")]
    cache_write_1h: Option<Figure>,
    output: Figure,
}

impl RawPrice {
    /// The exact price, or why not (naming the field).
    fn price(&self) -> Result<Price, String> {
        let tokens = TokenPrices {
            input: self.input.per_million("input")?,
            cached_input: per_million(&self.cached_input, "cachedInput")?,
            cache_write: per_million(&self.cache_write, "cacheWrite")?,
            cache_write_1h: per_million(&self.cache_write_1h, "cacheWrite1h")?,
            output: self.output.per_million("output")?,
        };
        let long_context = match &self.long_context {
            None => None,
            Some(long) => Some(LongContext {
                above_input_tokens: long.above_input_tokens,
                tokens: TokenPrices {
                    input: long.input.per_million("longContext.input")?,
                    cached_input: per_million(&long.cached_input, "longContext.cachedInput")?,
                    cache_write: per_million(&long.cache_write, "longContext.cacheWrite")?,
                    cache_write_1h: per_million(&long.cache_write_1h, "longContext.cacheWrite1h")?,
                    output: long.output.per_million("longContext.output")?,
                },
            }),
        };
        let web_search = match &self.web_search {
            None => None,
            Some(figure) => Some(PicoUsd(figure.parse(WEB_SEARCH_DECIMALS, "webSearch")?)),
        };
        Ok(Price {
            tokens,
            audio_input: per_million(&self.audio_input, "audioInput")?,
            audio_output: per_million(&self.audio_output, "audioOutput")?,
            web_search,
            long_context,
        })
    }
}

fn per_million(figure: &Option<Figure>, field: &str) -> Result<Option<PicoPerToken>, String> {
    figure.as_ref().map(|f| f.per_million(field)).transpose()
}

/// A price as written: a YAML number, taken through its shortest decimal form
/// (the text a person wrote: `0.075` is "0.075"), or a quoted decimal.
struct Figure(String);

impl Figure {
    /// USD per million tokens as pico-USD per token.
    fn per_million(&self, field: &str) -> Result<PicoPerToken, String> {
        self.parse(6, field).map(PicoPerToken)
    }

    fn parse(&self, decimals: usize, field: &str) -> Result<u128, String> {
        money::parse_scaled(&self.0, decimals).map_err(|err| match err {
            _ if self.0.starts_with('-') => format!("{field} is negative ({})", self.0),
            MoneyError::TooPrecise(..) => format!("{field} {:?} has more than {decimals} decimals", self.0),
            err => format!("{field}: {err}"),
        })
    }
}

impl<'de> Deserialize<'de> for Figure {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Figure;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a price: a number or a quoted decimal")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Figure, E> {
                Ok(Figure(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Figure, E> {
                Ok(Figure(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Figure, E> {
                Ok(Figure(format!("{v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Figure, E> {
                Ok(Figure(v.to_string()))
            }
        }
        deserializer.deserialize_any(Text)
    }
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
    use crate::gateway::usage::ServerTools;

    fn parsed(yaml: &str) -> PriceTable {
        PriceTable::parse(yaml).unwrap()
    }

    fn refused(yaml: &str) -> String {
        PriceTable::parse(yaml).unwrap_err().to_string()
    }

    /// The name the shipped table prices `model` under at `provider`.
    fn shipped_name(provider: &str, model: &str) -> Option<String> {
        let table = PriceTable::default_table().unwrap();
        table.lookup(provider, model).map(|(name, _)| name.to_string())
    }

    fn per_million(text: &str) -> PicoPerToken {
        money::price_per_million(text).unwrap()
    }

    #[test]
    fn a_model_matches_its_exact_name() {
        let t =
            parsed("providers: {openai: {gpt-4o: {input: 2.5, output: 10}, gpt-4o-mini: {input: 0.15, output: 0.6}}}");
        assert_eq!(t.lookup("openai", "gpt-4o").unwrap().0, "gpt-4o");
        assert_eq!(t.lookup("openai", "gpt-4o-mini").unwrap().0, "gpt-4o-mini");
        assert!(t.lookup("anthropic", "gpt-4o").is_none(), "per provider");
    }

    #[test]
    fn a_model_matches_its_name_with_each_date_form() {
        let t = parsed("providers: {p: {m: {input: 1, output: 1}, claude-sonnet-4: {input: 3, output: 15}}}");
        for dated in ["m-2024-08-06", "m-20250514", "m@20250514", "m-2099-12-31", "m-20000101"] {
            assert_eq!(t.lookup("p", dated).map(|(n, _)| n), Some("m"), "{dated}");
        }
        assert_eq!(t.lookup("p", "claude-sonnet-4-20250514").unwrap().0, "claude-sonnet-4");
        assert_eq!(t.lookup("p", "claude-sonnet-4@20250514").unwrap().0, "claude-sonnet-4");
        // Not dates: another century, month 13, day 00/32, too few or too many digits,
        // another separator, letters, nothing before the date.
        for not_dated in [
            "m-1999-01-01",
            "m-2024-13-01",
            "m-2024-01-00",
            "m-2024-01-32",
            "m-20241301",
            "m-2024-0806",
            "m-202408061",
            "m-2024080",
            "m_20240806",
            "m-2024-08-06x",
            "m-2024-08-0a",
            "m@2024-08-06",
            "-20240806",
            "m-0125",
            "m-latest",
        ] {
            assert!(t.lookup("p", not_dated).is_none(), "{not_dated}");
        }
    }

    #[test]
    fn a_dated_name_of_its_own_wins_over_its_base_name() {
        assert_eq!(shipped_name("openai", "gpt-4o-2024-05-13").as_deref(), Some("gpt-4o-2024-05-13"));
        assert_eq!(shipped_name("openai", "gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
        let table = PriceTable::default_table().unwrap();
        let (_, old) = table.lookup("openai", "gpt-4o-2024-05-13").unwrap();
        assert_eq!(old.tokens.input, per_million("5"));
    }

    #[test]
    fn an_alias_matches_with_and_without_a_date_and_is_labelled_by_its_model() {
        let t =
            parsed("providers: {anthropic: {claude-sonnet-4: {input: 3, output: 15, aliases: [claude-sonnet-4-0]}}}");
        assert_eq!(t.lookup("anthropic", "claude-sonnet-4-0").unwrap().0, "claude-sonnet-4");
        assert_eq!(t.lookup("anthropic", "claude-sonnet-4-0-20250514").unwrap().0, "claude-sonnet-4");
        assert_eq!(t.lookup("anthropic", "claude-sonnet-4-0@20250514").unwrap().0, "claude-sonnet-4");
        assert!(t.lookup("anthropic", "claude-sonnet-4-0-x").is_none());
        // Only declared aliases: Azure's and OpenAI's other names are not guessed.
        assert_eq!(shipped_name("openai", "gpt-35-turbo").as_deref(), Some("gpt-3.5-turbo"));
        assert_eq!(shipped_name("openai", "gpt-3.5-turbo-0125").as_deref(), Some("gpt-3.5-turbo"));
        assert_eq!(shipped_name("anthropic", "claude-3-5-haiku-latest").as_deref(), Some("claude-3-5-haiku"));
        assert_eq!(shipped_name("openai", "gpt-3.5-turbo-1106"), None, "priced differently, not an alias");
        assert_eq!(shipped_name("openai", "gpt-4o-latest"), None);
    }

    #[test]
    fn premium_and_other_variants_get_their_own_price_or_none_never_their_base_models() {
        let table = PriceTable::default_table().unwrap();
        let input = |model: &str| table.lookup("openai", model).map(|(name, p)| (name, p.tokens.input));
        for (model, own) in [
            ("o1-pro", "150"),
            ("o1-pro-2025-03-19", "150"),
            ("o3-pro", "20"),
            ("o3-pro-2025-06-10", "20"),
            ("gpt-5-pro", "15"),
            ("gpt-4o-audio-preview", "2.5"),
            ("gpt-4o-realtime-preview", "5"),
            ("gpt-4o-realtime-preview-2025-06-03", "5"),
            ("gpt-4o-mini-audio-preview-2024-12-17", "0.15"),
            ("gpt-5-chat-latest", "1.25"),
            ("codex-mini-latest", "1.5"),
            ("o3-deep-research", "10"),
            ("o4-mini-deep-research", "2"),
        ] {
            let (name, price) = input(model).unwrap_or_else(|| panic!("{model} is unpriced"));
            assert!(model.starts_with(name) && name != "o1" && name != "o3" && name != "gpt-4o", "{model} as {name}");
            assert_eq!(price, per_million(own), "{model}");
        }
        for unpriced in
            ["gpt-4o-mini-2024-07-18x", "gpt-4omega", "gpt-4o-foo", "o1-ultra", "gpt-5-turbo", "my-finetune-1"]
        {
            assert_eq!(input(unpriced), None, "{unpriced}");
        }
        // The rule itself, on a table that lacks the premium models: unpriced, not the base price.
        let t = parsed("providers: {openai: {o1: {input: 15, output: 60}, gpt-4o: {input: 2.5, output: 10}}}");
        for model in ["o1-pro", "o3-pro", "gpt-5-pro", "gpt-4o-audio-preview", "gpt-4o-realtime-preview", "gpt-4o-foo"]
        {
            assert!(t.lookup("openai", model).is_none(), "{model}");
        }
    }

    #[test]
    fn cost_is_exact_in_pico_usd() {
        let t = parsed("providers: {openai: {e: {input: 0.02, output: 0}, m: {input: '0.075', output: 0.3}}}");
        let (_, embedding) = t.lookup("openai", "e").unwrap();
        // 24 embedding tokens at USD 0.02 per million: 480 nano-USD, never zero.
        assert_eq!(cost(&Usage { input: 24, ..Usage::default() }, embedding), PicoUsd(480_000));
        assert_eq!(cost(&Usage { input: 1, ..Usage::default() }, embedding), PicoUsd(20_000));
        let (_, m) = t.lookup("openai", "m").unwrap();
        assert_eq!(m.tokens.input, PicoPerToken(75_000), "a quoted price");
        let usage = Usage { input: 3, output: 7, reasoning: 11, ..Usage::default() };
        assert_eq!(cost(&usage, m), PicoUsd(3 * 75_000 + 18 * 300_000), "reasoning at the output price");
        assert_eq!(cost(&Usage { input: 1_000_000, ..Usage::default() }, m).usd_f64(), 0.075);
    }

    #[test]
    fn each_token_type_has_its_price_and_absent_prices_fall_back() {
        let t = parsed(
            "providers: {p: {m: {input: 2, cachedInput: 0.2, cacheWrite: 2.5, cacheWrite1h: 4.5, output: 10,
             audioInput: 40, audioOutput: 80}, bare: {input: 3, output: 15}}}",
        );
        let (_, m) = t.lookup("p", "m").unwrap();
        let million = |f: fn(&mut Usage)| {
            let mut usage = Usage::default();
            f(&mut usage);
            cost(&usage, m)
        };
        let usd = |text: &str| PicoUsd(money::parse_scaled(text, 12).unwrap());
        assert_eq!(million(|u| u.input = 1_000_000), usd("2"));
        assert_eq!(million(|u| u.cached_input = 1_000_000), usd("0.2"));
        assert_eq!(million(|u| u.cache_write = 1_000_000), usd("2.5"));
        assert_eq!(million(|u| u.cache_write_1h = 1_000_000), usd("4.5"));
        assert_eq!(million(|u| u.audio_input = 1_000_000), usd("40"));
        assert_eq!(million(|u| u.output = 1_000_000), usd("10"));
        assert_eq!(million(|u| u.reasoning = 1_000_000), usd("10"));
        assert_eq!(million(|u| u.audio_output = 1_000_000), usd("80"));
        // Absent: cache reads and 5-minute writes at input, 1-hour writes at twice
        // input, audio at input and output.
        let (_, bare) = t.lookup("p", "bare").unwrap();
        let usage = Usage {
            cached_input: 1_000_000,
            cache_write: 1_000_000,
            cache_write_1h: 1_000_000,
            audio_input: 1_000_000,
            audio_output: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(cost(&usage, bare), usd("3") + usd("3") + usd("6") + usd("3") + usd("15"));
    }

    #[test]
    fn one_hour_cache_writes_are_priced_apart_from_5_minute_ones() {
        let table = PriceTable::default_table().unwrap();
        let (_, sonnet) = table.lookup("anthropic", "claude-sonnet-4-5-20250929").unwrap();
        let five = Usage { cache_write: 1_000, ..Usage::default() };
        let hour = Usage { cache_write_1h: 1_000, ..Usage::default() };
        assert_eq!(cost(&five, sonnet), PicoUsd(1_000 * 3_750_000));
        assert_eq!(cost(&hour, sonnet), PicoUsd(1_000 * 6_000_000));
        // Every shipped Anthropic 1-hour write is twice its input price.
        let anthropic = &table.providers["anthropic"];
        for (name, price) in &anthropic.models {
            let tokens = price.tokens;
            assert_eq!(tokens.cache_write_1h, Some(PicoPerToken(2 * tokens.input.0)), "{name}");
        }
    }

    #[test]
    fn the_upper_bound_prices_every_token_at_the_dearest_it_could_be() {
        let table = PriceTable::parse(
            "providers: {anthropic: {m: {input: 3, cachedInput: 0.3, cacheWrite: 3.75, output: 15,
               longContext: {aboveInputTokens: 200000, input: 6, cachedInput: 0.6, cacheWrite: 7.5, output: 22.5}}}}",
        )
        .unwrap();
        let (_, price) = table.lookup("anthropic", "m").unwrap();
        // Input at the long tier's 1-hour write (2 x 6), output at the long tier's 22.5.
        assert_eq!(price.upper_bound(1_000_000, 1_000_000), PicoUsd((12 + 22) * 1_000_000_000_000 + 500_000_000_000));
        let plain = PriceTable::parse("providers: {openai: {m: {input: 1, output: 4, audioOutput: 80}}}").unwrap();
        let (_, price) = plain.lookup("openai", "m").unwrap();
        assert_eq!(price.upper_bound(10, 10), PicoUsd(10 * 2_000_000 + 10 * 80_000_000), "audio output is dearest");
        assert_eq!(price.upper_bound(0, 0), PicoUsd::ZERO);
    }

    #[test]
    fn the_long_context_tier_applies_to_every_token_only_above_the_threshold() {
        let table = PriceTable::default_table().unwrap();
        for model in ["claude-sonnet-4-5", "claude-sonnet-4-20250514"] {
            let (_, price) = table.lookup("anthropic", model).unwrap();
            // The threshold counts input, cache reads and cache writes together.
            let at = Usage {
                input: 100_000,
                cached_input: 50_000,
                cache_write: 30_000,
                cache_write_1h: 20_000,
                output: 1_000,
                ..Usage::default()
            };
            assert_eq!(at.total_input(), 200_000);
            let base =
                100_000 * 3_000_000 + 50_000 * 300_000 + 30_000 * 3_750_000 + 20_000 * 6_000_000 + 1_000 * 15_000_000;
            assert_eq!(cost(&at, price), PicoUsd(base), "{model}: exactly at the threshold, base prices");
            let above = Usage { input: 100_001, ..at };
            let premium =
                100_001 * 6_000_000 + 50_000 * 600_000 + 30_000 * 7_500_000 + 20_000 * 12_000_000 + 1_000 * 22_500_000;
            assert_eq!(cost(&above, price), PicoUsd(premium), "{model}: one token above, all at long-context prices");
        }
        // OpenAI's gpt-4.1 has no long-context premium; nor does Opus.
        assert!(table.lookup("openai", "gpt-4.1").unwrap().1.long_context.is_none());
        assert!(table.lookup("anthropic", "claude-opus-4-1").unwrap().1.long_context.is_none());
        // Absent long-context cache prices follow the long-context input.
        let t = table_with("longContext: {aboveInputTokens: 10, input: 2, output: 4}");
        let (_, p) = t.lookup("p", "m").unwrap();
        let usage =
            Usage { input: 5, cached_input: 3, cache_write: 2, cache_write_1h: 1, output: 1, ..Usage::default() };
        assert_eq!(cost(&usage, p), PicoUsd(5 * 2_000_000 + 3 * 2_000_000 + 2 * 2_000_000 + 4_000_000 + 4_000_000));
    }

    fn table_with(extra: &str) -> PriceTable {
        parsed(&format!("providers: {{p: {{m: {{input: 1, output: 2, {extra}}}}}}}"))
    }

    #[test]
    fn audio_tokens_are_priced_at_the_audio_prices() {
        let table = PriceTable::default_table().unwrap();
        let (name, price) = table.lookup("openai", "gpt-4o-audio-preview-2024-12-17").unwrap();
        assert_eq!(name, "gpt-4o-audio-preview");
        let usage = Usage { input: 10, audio_input: 100, output: 20, audio_output: 200, ..Usage::default() };
        let want = 10 * 2_500_000 + 100 * 40_000_000 + 20 * 10_000_000 + 200 * 80_000_000;
        assert_eq!(cost(&usage, price), PicoUsd(want));
        let (_, realtime) = table.lookup("openai", "gpt-realtime").unwrap();
        assert_eq!((realtime.audio_input, realtime.audio_output), (Some(per_million("32")), Some(per_million("64"))));
    }

    #[test]
    fn web_search_requests_are_priced_per_thousand() {
        let table = PriceTable::default_table().unwrap();
        let (_, haiku) = table.lookup("anthropic", "claude-haiku-4-5").unwrap();
        // USD 10 per 1,000 searches: USD 0.01 each.
        assert_eq!(haiku.web_search, Some(PicoUsd(10_000_000_000)));
        let usage = Usage { server_tools: ServerTools { web_search_requests: 3 }, ..Usage::default() };
        assert_eq!(cost(&usage, haiku), PicoUsd(30_000_000_000));
        for (name, price) in &table.providers["anthropic"].models {
            assert_eq!(price.web_search, Some(PicoUsd(10_000_000_000)), "{name}");
        }
        // Exact to the pico-USD per request; absent, searches add nothing.
        let p = *table_with("webSearch: 0.000000001").lookup("p", "m").unwrap().1;
        assert_eq!(p.web_search, Some(PicoUsd(1)));
        let none = *table_with("").lookup("p", "m").unwrap().1;
        assert_eq!(cost(&usage, &none), PicoUsd::ZERO);
    }

    #[test]
    fn bad_tables_are_refused_naming_the_model_and_the_reason() {
        let cases = [
            ("input: -1", "price of p/m: input is negative (-1)"),
            ("input: -0.5", "price of p/m: input is negative (-0.5)"),
            ("input: .nan", "price of p/m: input: \"NaN\" is not a decimal amount of USD"),
            ("input: .inf", "price of p/m: input: \"inf\" is not a decimal amount of USD"),
            ("input: 0.0000001", "price of p/m: input \"0.0000001\" has more than 6 decimals"),
            ("input: '1e3'", "price of p/m: input: \"1e3\" is not a decimal amount of USD"),
            ("cachedInput: 0.1234567", "price of p/m: cachedInput \"0.1234567\" has more than 6 decimals"),
            ("cacheWrite1h: -2", "price of p/m: cacheWrite1h is negative (-2)"),
            ("audioOutput: abc", "price of p/m: audioOutput: \"abc\" is not a decimal amount of USD"),
            ("webSearch: 0.0000000001", "price of p/m: webSearch \"0.0000000001\" has more than 9 decimals"),
            (
                "longContext: {aboveInputTokens: 1, input: 1, output: -3}",
                "price of p/m: longContext.output is negative (-3)",
            ),
        ];
        for (field, want) in cases {
            let yaml = if field.starts_with("input:") {
                format!("providers: {{p: {{m: {{{field}, output: 1}}}}}}")
            } else {
                format!("providers: {{p: {{m: {{input: 1, output: 1, {field}}}}}}}")
            };
            let err = refused(&yaml);
            assert!(err.starts_with(want), "{field}: {err}");
        }
        assert!(refused("providers: {p: {m: {input: 1}}}").contains("missing field `output`"));
        assert!(refused("providers: {p: {m: {input: 1, output: 1, typo: 2}}}").contains("unknown field `typo`"));
        assert!(
            refused("providers: {p: {m: {input: 1, output: 1, longContext: {input: 1, output: 1}}}}")
                .contains("missing field `aboveInputTokens`")
        );
        // Aliases may not collide with a model's name or another alias.
        let err = refused("providers: {p: {a: {input: 1, output: 1, aliases: [b]}, b: {input: 2, output: 2}}}");
        assert_eq!(err, r#"price of p/a: alias "b" is the name of a model"#);
        let err = refused("providers: {p: {a: {input: 1, output: 1, aliases: [a]}}}");
        assert_eq!(err, r#"price of p/a: alias "a" is the name of a model"#);
        let err =
            refused("providers: {p: {a: {input: 1, output: 1, aliases: [x]}, b: {input: 2, output: 2, aliases: [x]}}}");
        assert_eq!(err, r#"price of p/b: alias "x" is also an alias of a"#);
        // The same alias in two providers is fine; cacheRead is cachedInput's other name.
        let t = parsed(
            "providers: {p: {a: {input: 1, cacheRead: 0.1, output: 1, aliases: [x]}}, q: {b: {input: 1, output: 1, aliases: [x]}}}",
        );
        assert_eq!(t.lookup("p", "x").unwrap().1.tokens.cached_input, Some(per_million("0.1")));
        assert_eq!(t.lookup("q", "x").unwrap().0, "b");
    }

    #[test]
    fn yaml_numbers_are_read_through_their_shortest_decimal_form() {
        let t = parsed("providers: {p: {m: {input: 0.075, cachedInput: 2.50, cacheWrite: 10, output: '0.000001'}}}");
        let (_, m) = t.lookup("p", "m").unwrap();
        assert_eq!(m.tokens.input, PicoPerToken(75_000));
        assert_eq!(m.tokens.cached_input, Some(PicoPerToken(2_500_000)));
        assert_eq!(m.tokens.cache_write, Some(PicoPerToken(10_000_000)));
        assert_eq!(m.tokens.output, PicoPerToken(1));
    }

    #[test]
    fn the_shipped_table_parses_and_every_model_sits_under_a_dated_source_comment() {
        let table = PriceTable::default_table().unwrap();
        assert_eq!(table.providers.keys().collect::<Vec<_>>(), ["anthropic", "openai"]);
        // Each provider's section of the file: the lines from "  <provider>:" to the next provider.
        let mut sections: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let mut current = None;
        for line in DEFAULT_TABLE.lines().skip_while(|l| *l != "providers:").skip(1) {
            let provider = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'));
            if let Some(name) = provider.filter(|name| !name.starts_with(' ') && !name.starts_with('#')) {
                current = Some(name.to_string());
            }
            sections.entry(current.clone().expect("a provider first")).or_default().push(line);
        }
        for (provider, prices) in &table.providers {
            let section = &sections[provider];
            let comments: String = section.iter().filter(|l| l.trim_start().starts_with('#')).copied().collect();
            assert!(comments.contains("# Source: ") && comments.contains("https://"), "{provider} has no source");
            let checked = comments.split("checked ").nth(1).map(|rest| rest.get(..10).unwrap_or(rest));
            let dated = checked.is_some_and(|date| without_date(&format!("x-{date}")).is_some());
            assert!(dated, "{provider}'s source has no date it was checked: {checked:?}");
            for model in prices.models.keys() {
                let listed = section.iter().any(|l| l.trim_start().starts_with(&format!("{model}:")));
                assert!(listed, "{provider}/{model} is not in its provider's section");
            }
        }
        for (provider, model) in [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")] {
            assert!(table.lookup(provider, model).is_some(), "{provider}/{model}");
        }
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
