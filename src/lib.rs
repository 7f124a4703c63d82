//! payi-operator: Organizations, Groups and Applications of the Pay-i hierarchy
//! as Kubernetes resources, with one API key per Application.

pub mod access;
pub mod allocator;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod error;
pub mod faults;
pub mod gateway;
pub mod health;
pub mod http;
pub mod key;
pub mod key_secret;
pub mod keyring;
pub mod leader;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod money;
pub mod namespace_policy;
pub mod note;
pub mod plugin;
pub mod rollup;
pub mod use_case;
pub mod validate;
pub mod verifier;

pub use error::{Error, Result};
