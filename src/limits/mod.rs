//! Budgets: spend in USD per window at every level, kept in a ledger (Redis)
//! that every gateway replica shares, charged after each metered request and
//! checked before the provider is called (docs/limits.md).
//!
//! - `window`: day, week, month in UTC (pure).
//! - `rule`: limits compiled for enforcement, their ids and ledger keys (pure).
//! - `status`: what objects' status says about their limits, and the Events (pure).
//! - `spend`: month-to-date usage counters of every level, limits or not (pure).
//! - `ledger`: the Redis ledger: one read before the call, one atomic charge after.
//! - `connect`: reaching the ledger's Redis (TLS, Sentinel) and staying connected.

pub mod connect;
pub mod ledger;
pub mod rule;
pub mod spend;
pub mod status;
pub mod window;
