//! The gateway under a hostile tenant and a failing ledger (issue #26): one test
//! binary, one file per topic.

#[path = "../common/mod.rs"]
mod common;

mod ledger_ha;
