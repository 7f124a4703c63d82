//! What Groups and Organizations share: a finalizer that holds a parent while
//! children still reference it.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::conditions::{Outcome, reason};
use crate::error::{Error, Result};
use crate::rollup;

/// Keeps a parent from disappearing while children still point at it.
pub const CHILDREN_FINALIZER: &str = "payi.io/children";

/// What the finalizer should look like after this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizerChange {
    None,
    Add,
    Remove,
}

/// A parent keeps its finalizer until it is being deleted and has no children.
pub fn finalizer_change<K: Resource>(obj: &K, children: usize) -> FinalizerChange {
    let has = obj.finalizers().iter().any(|f| f == CHILDREN_FINALIZER);
    let deleting = obj.meta().deletion_timestamp.is_some();
    match (deleting, has) {
        (false, false) => FinalizerChange::Add,
        (true, true) if children == 0 => FinalizerChange::Remove,
        _ => FinalizerChange::None,
    }
}

/// `Ready=False, DeletionBlocked` while a deleted parent waits for its children.
pub fn deletion_blocked(kind_plural: &str, names: impl Iterator<Item = String>, count: usize) -> Outcome {
    let message = format!(
        "deletion waits for {count} {kind_plural} that still reference this object: {}",
        rollup::list_names(names)
    );
    Outcome::not_ready(reason::DELETION_BLOCKED, message)
}

/// Adds or removes [`CHILDREN_FINALIZER`], guarded by `resourceVersion` so a
/// concurrent change to the list is never lost (the conflict retries).
pub async fn change_finalizer<K>(api: &Api<K>, obj: &K, change: FinalizerChange) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut finalizers: Vec<String> = obj.finalizers().to_vec();
    match change {
        FinalizerChange::None => return Ok(()),
        FinalizerChange::Add => finalizers.push(CHILDREN_FINALIZER.into()),
        FinalizerChange::Remove => finalizers.retain(|f| f != CHILDREN_FINALIZER),
    }
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": obj.resource_version() }
    });
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::kube(format!("updating finalizers of {}", obj.name_any())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Group, GroupSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn group(finalizer: bool, deleting: bool) -> Group {
        let mut g = Group::new("g", GroupSpec::default());
        if finalizer {
            g.metadata.finalizers = Some(vec![CHILDREN_FINALIZER.into()]);
        }
        if deleting {
            g.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        g
    }

    #[test]
    fn finalizer_is_added_while_alive_and_removed_only_without_children() {
        assert_eq!(finalizer_change(&group(false, false), 0), FinalizerChange::Add);
        assert_eq!(finalizer_change(&group(true, false), 3), FinalizerChange::None);
        assert_eq!(finalizer_change(&group(true, true), 3), FinalizerChange::None);
        assert_eq!(finalizer_change(&group(true, true), 0), FinalizerChange::Remove);
        // Deleted before we ever added it: nothing to hold.
        assert_eq!(finalizer_change(&group(false, true), 2), FinalizerChange::None);
    }
}
