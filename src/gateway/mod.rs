//! The metering AI gateway (`payi-operator gateway`): a reverse proxy that
//! workloads call instead of the AI provider. It checks the key in-process with
//! the verifier's index and watches, forwards to the provider with the provider's
//! credential, reads the usage the provider reports, and counts tokens and cost
//! per Organization, Group, Application and use case.
//!
//! - `body`: the request body: model, streaming, and asking for streamed usage.
//! - `usage`: the usage a provider reports, from a JSON body or an SSE stream.
//! - `pricing`: the price table (USD per million tokens), reloadable.

pub mod body;
pub mod pricing;
pub mod usage;
