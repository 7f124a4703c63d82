//! The gateway against a hostile tenant and a failing environment (issue #26):
//! one binary, one file per topic.

#[path = "../common/mod.rs"]
mod common;

mod readiness;
