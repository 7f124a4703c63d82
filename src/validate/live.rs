//! `--cluster`: what the live cluster holds, for the cross-object rules.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::Live;
use super::cross::{ApplicationFacts, Origin};
use crate::crd::{Application, Group, Organization};

/// Lists Organizations, Groups, Applications (all namespaces) and Namespaces.
pub async fn gather(client: Client) -> Result<Live, kube::Error> {
    let list = ListParams::default();
    let organizations = Api::<Organization>::all(client.clone()).list(&list).await?;
    let groups = Api::<Group>::all(client.clone()).list(&list).await?;
    let applications = Api::<Application>::all(client.clone()).list(&list).await?;
    let namespaces = Api::<Namespace>::all(client).list_metadata(&list).await?;
    Ok(Live {
        organizations: organizations.items.iter().map(|o| o.name_any()).collect(),
        groups: groups
            .items
            .iter()
            .map(|g| (g.name_any(), g.spec.organization_ref.name.clone(), g.spec.namespace_policy.clone()))
            .collect(),
        namespaces: namespaces.items.iter().map(|n| (n.name_any(), n.labels().clone())).collect(),
        applications: applications
            .items
            .iter()
            .map(|a| ApplicationFacts {
                namespace: a.namespace().unwrap_or_default(),
                name: a.name_any(),
                group: a.spec.group_ref.name.clone(),
                secret: a.key_secret_name(),
                origin: Origin::Cluster,
            })
            .collect(),
    })
}
