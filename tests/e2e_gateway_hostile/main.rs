//! The gateway under a hostile tenant and a failing environment (issue #26): the
//! tests written for it, one file per topic, in one test binary.

#[path = "../common/mod.rs"]
mod common;

mod bytes;
mod connections;
mod headers;
mod large_answers;
mod ledger_ha;
mod memory;
mod readiness;
