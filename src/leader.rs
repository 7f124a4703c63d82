//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas
//! exactly one runs the controllers.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal: the longest a dead leader blocks a successor.
    pub duration_seconds: u64,
}

/// A running election: `leading` says whether this replica holds the Lease.
pub struct Election {
    pub leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Election {
    pub async fn start(client: Client, settings: &LeaseSettings) -> Result<Self, LeaseManagerError> {
        // Renew well before expiry: a third of the duration, at least one second.
        let grace = (settings.duration_seconds / 3).max(1);
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration_seconds)
            .with_grace(grace)
            .with_field_manager(format!("payi-operator-{}", settings.identity))
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Self { leading, task })
    }

    /// Gives the Lease up so a successor need not wait for it to expire.
    pub async fn release(self) {
        let Self { leading, task } = self;
        // Closing the channel makes the manager's task release the Lease and end.
        drop(leading);
        match task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease"),
            Err(error) => tracing::warn!(%error, "lease task failed"),
        }
    }
}
