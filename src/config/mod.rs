//! Configuration: Istio manifests (several YAML documents in one file) parsed into raw
//! `File*` types, then validated into the [`Config`] the rest of ringress uses.

pub mod model;

pub use model::*;
