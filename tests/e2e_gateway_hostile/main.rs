//! The gateway under a hostile tenant (issue #26): the real `payi-operator gateway`
//! binary against the provider simulator, one file per topic.

#[path = "../common/mod.rs"]
mod common;

mod connections;
