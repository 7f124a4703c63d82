//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! replicas exactly one runs the controllers.
//!
//! The rules follow client-go's leader election: a replica takes the Lease when
//! nobody holds it or when the holder's record has not changed for a whole lease
//! duration *as observed on this replica's monotonic clock* (so clocks of
//! different machines never need to agree). A leader renews every `retry`; if it
//! has not renewed for `renew_deadline` (shorter than the lease) it stops being
//! leader at once, before any standby may take over. [`Leadership::is_valid`] is
//! checked before every write, so a leader that was frozen (SIGSTOP, a paused VM)
//! writes nothing when it wakes up, even before its election loop notices.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal: the longest a dead leader blocks a successor.
    pub duration: Duration,
}

impl LeaseSettings {
    /// A leader that has not renewed for this long stops acting: two thirds of
    /// the lease, so it has stopped well before a standby may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration.mul_f64(2.0 / 3.0)
    }

    /// How often the Lease is renewed or, on a standby, looked at.
    pub fn retry(&self) -> Duration {
        (self.duration / 7).max(Duration::from_millis(300))
    }
}

/// Whether this replica may write as the leader right now. Cheap to clone and check.
#[derive(Clone, Debug)]
pub struct Leadership {
    renewed: Arc<Mutex<Option<Instant>>>,
    /// `None`: not elected (a single replica), always valid.
    deadline: Option<Duration>,
}

impl Leadership {
    /// For a replica that runs without leader election.
    pub fn unconditional() -> Self {
        Self { renewed: Arc::new(Mutex::new(None)), deadline: None }
    }

    fn elected(deadline: Duration) -> Self {
        Self { renewed: Arc::new(Mutex::new(None)), deadline: Some(deadline) }
    }

    /// True while the last successful renewal is younger than the renew deadline.
    pub fn is_valid(&self) -> bool {
        let Some(deadline) = self.deadline else {
            return true;
        };
        let renewed = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        renewed.is_some_and(|at| at.elapsed() < deadline)
    }

    fn renewed_at(&self, at: Option<Instant>) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

/// What one look at the Lease calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No Lease object exists: create it, holding it.
    Create,
    /// We hold it: write a new renew time.
    Renew,
    /// Free or expired: write ourselves in as the holder.
    TakeOver,
    /// Someone else holds it and renews it.
    Follow,
}

/// The holder's record as last seen, and when (on our clock) it last changed.
#[derive(Debug, Default, Clone)]
pub struct Observation {
    record: Option<(String, Option<String>, i32)>,
    changed_at: Option<Instant>,
}

/// Pure: what to do given the Lease as read now. Updates `seen` with the record.
pub fn decide(lease: Option<&Lease>, me: &str, seen: &mut Observation, now: Instant, default: Duration) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() { Step::TakeOver } else { Step::Create };
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let record =
        (holder.clone(), spec.renew_time.as_ref().map(|t| t.0.to_string()), spec.lease_transitions.unwrap_or(0));
    if seen.record.as_ref() != Some(&record) {
        seen.record = Some(record);
        seen.changed_at = Some(now);
    }
    if holder == me {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration = spec.lease_duration_seconds.map_or(default, |s| Duration::from_secs(s.max(1) as u64));
    let quiet = seen.changed_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
    if quiet >= duration { Step::TakeOver } else { Step::Follow }
}

/// The Lease as `step` wants it written, from the current object (if any).
fn desired(current: Option<&Lease>, step: Step, settings: &LeaseSettings) -> Lease {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    if step != Step::Renew {
        let taken_from_someone = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + i32::from(taken_from_someone));
    }
    spec.holder_identity = Some(settings.identity.clone());
    spec.lease_duration_seconds = Some(settings.duration.as_secs().max(1) as i32);
    spec.renew_time = Some(now);
    lease.spec = Some(spec);
    lease
}

/// A running election: `leading` says whether this replica holds the Lease,
/// `leadership` whether it may still write as leader.
pub struct Election {
    pub leading: watch::Receiver<bool>,
    pub leadership: Leadership,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Election {
    pub fn start(client: Client, settings: &LeaseSettings) -> Self {
        let leadership = Leadership::elected(settings.renew_deadline());
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stopped) = watch::channel(false);
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let task = tokio::spawn(elect(api, settings.clone(), leadership.clone(), leading_tx, stopped));
        Self { leading, leadership, stop, task }
    }

    /// Gives the Lease up (if held) so a successor need not wait for it to expire.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "lease task failed");
        }
    }
}

async fn elect(
    api: Api<Lease>,
    settings: LeaseSettings,
    leadership: Leadership,
    leading: watch::Sender<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut seen = Observation::default();
    let mut warned = false;
    loop {
        let attempt = Instant::now();
        match try_once(&api, &settings, &mut seen).await {
            Ok(true) => {
                leadership.renewed_at(Some(attempt));
                warned = false;
            }
            Ok(false) => {}
            Err(error) if !warned || !leadership.is_valid() => {
                tracing::warn!(%error, lease = %settings.name, "could not read or renew the leader lease");
                warned = true;
            }
            Err(_) => {}
        }
        let holds = leadership.is_valid();
        if *leading.borrow() != holds {
            if !holds {
                tracing::warn!(lease = %settings.name, "no longer the leader: the lease was not renewed in time or was taken");
            }
            let _ = leading.send(holds);
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.retry()) => {}
            _ = stopped.changed() => break,
        }
    }
    if leadership.is_valid() {
        release(&api, &settings).await;
    }
    leadership.renewed_at(None);
    let _ = leading.send(false);
}

/// One look at the Lease. `Ok(true)` when this replica holds it afterwards.
async fn try_once(api: &Api<Lease>, settings: &LeaseSettings, seen: &mut Observation) -> kube::Result<bool> {
    let current = api.get_opt(&settings.name).await?;
    let step = decide(current.as_ref(), &settings.identity, seen, Instant::now(), settings.duration);
    let body = desired(current.as_ref(), step, settings);
    match step {
        Step::Follow => Ok(false),
        Step::Create => conflict_is_no(api.create(&PostParams::default(), &body).await),
        // `replace` carries the resourceVersion read above: of two replicas taking
        // over at once, the API server lets exactly one succeed.
        Step::Renew | Step::TakeOver => {
            conflict_is_no(api.replace(&settings.name, &PostParams::default(), &body).await)
        }
    }
}

fn conflict_is_no(result: kube::Result<Lease>) -> kube::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Clears the holder so a standby takes over at its next look.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let result = async {
        let Some(mut lease) = api.get_opt(&settings.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        api.replace(&settings.name, &PostParams::default(), &lease).await.map(drop)
    }
    .await;
    match result {
        Ok(()) => tracing::info!("released the leader lease"),
        Err(error) => tracing::warn!(%error, "could not release the leader lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: i64, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::from_second(renewed).unwrap())),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn no_lease_is_created_and_an_empty_holder_is_taken() {
        let t0 = Instant::now();
        let mut seen = Observation::default();
        assert_eq!(decide(None, "me", &mut seen, t0, D), Step::Create);
        assert_eq!(decide(Some(&lease(None, 1, 15)), "me", &mut seen, t0, D), Step::TakeOver);
        assert_eq!(decide(Some(&lease(Some(""), 1, 15)), "me", &mut seen, t0, D), Step::TakeOver);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        let mut seen = Observation::default();
        assert_eq!(decide(Some(&lease(Some("me"), 1, 15)), "me", &mut seen, Instant::now(), D), Step::Renew);
    }

    #[test]
    fn another_holder_is_followed_until_its_record_stops_changing_for_a_lease_duration() {
        let t0 = Instant::now();
        let mut seen = Observation::default();
        let other = lease(Some("other"), 100, 6);
        assert_eq!(decide(Some(&other), "me", &mut seen, t0, D), Step::Follow);
        assert_eq!(decide(Some(&other), "me", &mut seen, t0 + Duration::from_secs(5), D), Step::Follow);
        // A renewal seen at 5 s restarts the count, whatever the timestamps say.
        let renewed = lease(Some("other"), 50, 6);
        assert_eq!(decide(Some(&renewed), "me", &mut seen, t0 + Duration::from_secs(5), D), Step::Follow);
        assert_eq!(decide(Some(&renewed), "me", &mut seen, t0 + Duration::from_secs(10), D), Step::Follow);
        assert_eq!(decide(Some(&renewed), "me", &mut seen, t0 + Duration::from_secs(11), D), Step::TakeOver);
    }

    #[test]
    fn the_renew_deadline_is_shorter_than_the_lease() {
        let s = LeaseSettings { namespace: "n".into(), name: "l".into(), identity: "me".into(), duration: D };
        assert!(s.renew_deadline() < s.duration);
        assert!(s.retry() * 3 < s.renew_deadline());
    }

    #[test]
    fn leadership_expires_after_the_deadline_and_unconditional_never_does() {
        let l = Leadership::elected(Duration::from_millis(50));
        assert!(!l.is_valid());
        l.renewed_at(Some(Instant::now()));
        assert!(l.is_valid());
        l.renewed_at(Some(Instant::now() - Duration::from_millis(60)));
        assert!(!l.is_valid());
        assert!(Leadership::unconditional().is_valid());
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let s = LeaseSettings { namespace: "n".into(), name: "l".into(), identity: "me".into(), duration: D };
        let other = lease(Some("other"), 1, 15);
        let taken = desired(Some(&other), Step::TakeOver, &s);
        let spec = taken.spec.unwrap();
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions), (Some("me"), Some(1)));
        let renewed = desired(Some(&lease(Some("me"), 1, 15)), Step::Renew, &s).spec.unwrap();
        assert_eq!(renewed.lease_transitions, None);
        assert_eq!(renewed.lease_duration_seconds, Some(15));
    }
}
