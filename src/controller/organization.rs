//! Organization reconciler: roll up Groups and their Applications, hold the
//! Organization while Groups still reference it.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::context::{Context, Note};
use super::now;
use super::parent::{self, FinalizerChange};
use super::status;
use crate::conditions::{self, Outcome, reason};
use crate::crd::{Application, Group, Organization, OrganizationStatus};
use crate::error::Result;
use crate::metrics::OrganizationLabels;
use crate::rollup::{self, Child};

pub struct Inputs {
    pub organization: Arc<Organization>,
    pub groups: Vec<Arc<Group>>,
    pub applications: Vec<Arc<Application>>,
}

#[derive(Debug)]
pub struct Plan {
    pub status: OrganizationStatus,
    pub finalizer: FinalizerChange,
    pub notes: Vec<Note>,
}

impl Child for Group {
    fn display_name(&self) -> String {
        self.name_any()
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }
}

pub async fn reconcile(organization: Arc<Organization>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    let name = organization.name_any();
    let groups = ctx.stores.groups_of_organization(&name);
    let applications = groups.iter().flat_map(|g| ctx.stores.admitted_applications_of_group(g)).collect();
    let inputs = Inputs { groups, applications, organization };
    let plan = decide(&inputs, &now());
    let api: Api<Organization> = Api::all(ctx.client.clone());
    let org = inputs.organization.as_ref();
    ctx.may_write()?;
    parent::change_finalizer(&api, org, plan.finalizer).await?;
    let labels = OrganizationLabels { organization: name };
    if plan.finalizer == FinalizerChange::Remove {
        ctx.metrics.organization_applications.remove(&labels);
        ctx.metrics.organization_applications_ready.remove(&labels);
    } else {
        status::write_status(&api, org, org.status.as_ref(), &plan.status).await?;
        let apps = plan.status.applications;
        ctx.metrics.organization_applications.get_or_create(&labels).set(apps.total.into());
        ctx.metrics.organization_applications_ready.get_or_create(&labels).set(apps.ready.into());
    }
    ctx.backoff().succeeded(&super::object_key(org));
    ctx.publish(org, &plan.notes).await;
    Ok(Action::await_change())
}

/// Pure: the Organization's status, finalizer and Events from its inputs.
pub fn decide(inputs: &Inputs, now: &Time) -> Plan {
    let org = inputs.organization.as_ref();
    let groups = &inputs.groups;
    let finalizer = parent::finalizer_change(org, groups.len());
    let ready = if org.metadata.deletion_timestamp.is_some() && !groups.is_empty() {
        parent::deletion_blocked("Groups", groups.iter().map(|g| g.display_name()), groups.len())
    } else {
        Outcome::ready(reason::RECONCILED, format!("{} Groups reference this Organization", groups.len()))
    };
    let previous = org.status.clone().unwrap_or_default();
    let notes = Note::ready_transition(&previous.conditions, &ready);
    let mut outcomes = conditions::with_kstatus(&ready);
    outcomes.push(rollup::applications_ready(&inputs.applications));
    let limits = previous.limits.clone().filter(|_| !org.spec.limits.is_empty());
    outcomes.extend(crate::limits::status::limits_condition(limits.as_ref()));
    let status = OrganizationStatus {
        observed_generation: org.metadata.generation,
        conditions: conditions::merge(&previous.conditions, &outcomes, org.metadata.generation, now),
        groups: rollup::counts(groups),
        applications: rollup::counts(&inputs.applications),
        // Written by the limits task (its own field manager); carried so this write keeps it.
        limits,
        // Written by the usage task (its own field manager); carried likewise.
        usage: previous.usage.clone(),
    };
    Plan { status, finalizer, notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Counts, GroupSpec, OrganizationSpec, ParentRef};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn group(name: &str, ready: bool) -> Arc<Group> {
        let mut g =
            Group::new(name, GroupSpec { organization_ref: ParentRef { name: "acme".into() }, ..Default::default() });
        let o = if ready {
            Outcome::ready(reason::RECONCILED, "")
        } else {
            Outcome::not_ready(reason::DELETION_BLOCKED, "")
        };
        g.status = Some(crate::crd::GroupStatus {
            conditions: conditions::merge(&[], &[o], None, &at(0)),
            ..Default::default()
        });
        Arc::new(g)
    }

    fn org(deleting: bool) -> Arc<Organization> {
        let mut o = Organization::new("acme", OrganizationSpec::default());
        o.metadata.finalizers = Some(vec![parent::CHILDREN_FINALIZER.into()]);
        if deleting {
            o.metadata.deletion_timestamp = Some(at(1));
        }
        Arc::new(o)
    }

    #[test]
    fn counts_groups_and_applications() {
        let inputs = Inputs {
            organization: org(false),
            groups: vec![group("eng", true), group("mkt", false)],
            applications: vec![],
        };
        let plan = decide(&inputs, &at(3));
        assert_eq!(plan.status.groups, Counts { total: 2, ready: 1 });
        assert_eq!(plan.status.applications, Counts { total: 0, ready: 0 });
        assert!(conditions::is_ready(&plan.status.conditions));
        assert_eq!(plan.finalizer, FinalizerChange::None);
    }

    #[test]
    fn deletion_waits_for_groups_then_releases() {
        let inputs = Inputs { organization: org(true), groups: vec![group("eng", true)], applications: vec![] };
        let plan = decide(&inputs, &at(3));
        let ready = conditions::find(&plan.status.conditions, conditions::READY).unwrap();
        assert_eq!(ready.reason, "DeletionBlocked");
        assert!(ready.message.contains("1 Groups") && ready.message.contains("eng"), "{}", ready.message);
        assert_eq!(plan.notes.len(), 1);
        let inputs = Inputs { organization: org(true), groups: vec![], applications: vec![] };
        assert_eq!(decide(&inputs, &at(3)).finalizer, FinalizerChange::Remove);
    }
}
