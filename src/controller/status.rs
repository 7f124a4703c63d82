//! The one way this operator writes status.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Error, Result};
use crate::key_secret::MANAGER;

/// Writes `status` by server-side apply when it differs from `current`, so a
/// reconcile that changes nothing writes nothing. Returns the object's new
/// resourceVersion when it wrote.
pub async fn write_status<K, S>(api: &Api<K>, obj: &K, current: Option<&S>, status: &S) -> Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(None);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let written = api
        .patch_status(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch))
        .await
        .map_err(Error::kube(format!("writing status of {} {}", K::kind(&()), obj.name_any())))?;
    Ok(written.resource_version())
}

/// Statuses this replica wrote and its cache may not show yet, so a reconcile on
/// a stale cached object does not write the same status again. An entry counts
/// only while the cached object is older than the write (resourceVersions of
/// etcd-backed objects are increasing integers; anything else is never trusted).
#[derive(Default)]
pub struct Written<S>(std::sync::Mutex<std::collections::HashMap<String, (S, u64)>>);

impl<S: PartialEq + Clone> Written<S> {
    fn version(rv: Option<&str>) -> Option<u64> {
        rv?.parse().ok()
    }

    /// Whether `status` was written by us after the version `cached_rv` the cache holds.
    pub fn is_pending(&self, uid: &str, cached_rv: Option<&str>, status: &S) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some((written, at)) = map.get(uid) else { return false };
        match Self::version(cached_rv) {
            Some(cached) if cached < *at => written == status,
            _ => {
                // The cache has caught up (or cannot be compared): forget the entry.
                map.remove(uid);
                false
            }
        }
    }

    /// The status we wrote after the version `cached_rv` the cache holds, if any:
    /// the truth a reconcile on that stale cached object should start from.
    pub fn newer_than(&self, uid: &str, cached_rv: Option<&str>) -> Option<S> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (written, at) = map.get(uid)?;
        (Self::version(cached_rv)? < *at).then(|| written.clone())
    }

    /// Forgets the objects `keep` says no to (those that are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid, _| keep(uid));
    }

    pub fn remember(&self, uid: &str, status: &S, rv: Option<&str>) {
        if let Some(at) = Self::version(rv) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.to_string(), (status.clone(), at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_status_is_pending_only_until_the_cache_catches_up() {
        let w = Written::<u8>::default();
        assert!(!w.is_pending("u", Some("5"), &1));
        w.remember("u", &1, Some("10"));
        assert!(w.is_pending("u", Some("9"), &1), "cache older than our write");
        assert!(!w.is_pending("u", Some("9"), &2), "a different status is written");
        assert_eq!(w.newer_than("u", Some("9")), Some(1), "what we wrote is newer than the cache");
        assert_eq!(w.newer_than("u", Some("10")), None);
        assert_eq!(w.newer_than("other", Some("1")), None);
        assert!(!w.is_pending("u", Some("10"), &1), "the cache shows our write");
        assert!(!w.is_pending("u", Some("9"), &1), "and the entry is gone");
        w.remember("u", &1, Some("opaque"));
        assert!(!w.is_pending("u", Some("1"), &1), "non-numeric versions are never trusted");
        w.remember("a", &1, Some("10"));
        w.remember("b", &1, Some("10"));
        w.retain(|uid| uid == "b");
        assert_eq!((w.newer_than("a", Some("1")), w.newer_than("b", Some("1"))), (None, Some(1)), "a is gone");
    }
}
