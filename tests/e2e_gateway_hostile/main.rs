//! The gateway under a hostile tenant (issue #26): the tests written for it, one
//! file per topic, in one test binary.

#[path = "../common/mod.rs"]
mod common;

mod large_answers;
mod memory;
