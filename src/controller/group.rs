//! Group reconciler: resolve the Organization, roll up the Applications, hold
//! the Group while Applications still reference it.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::context::{Context, Note};
use super::now;
use super::parent::{self, FinalizerChange};
use super::status;
use crate::conditions::{self, Outcome, reason};
use crate::crd::{Application, Group, GroupStatus, Organization};
use crate::error::Result;
use crate::metrics::GroupLabels;
use crate::rollup::{self, Child};

pub struct Inputs {
    pub group: Arc<Group>,
    pub organization: Option<Arc<Organization>>,
    /// Applications that reference the Group from a namespace it admits: only
    /// these are counted and hold it, so nobody can block deletion of someone
    /// else's Group by pointing at it from a refused namespace.
    pub applications: Vec<Arc<Application>>,
}

#[derive(Debug)]
pub struct Plan {
    pub status: GroupStatus,
    pub finalizer: FinalizerChange,
    pub notes: Vec<Note>,
}

impl Child for Application {
    fn display_name(&self) -> String {
        format!("{}/{}", self.namespace().unwrap_or_default(), self.name_any())
    }
    fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }
}

pub async fn reconcile(group: Arc<Group>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    let inputs = Inputs {
        organization: ctx.stores.organization(&group.spec.organization_ref.name),
        applications: ctx.stores.admitted_applications_of_group(&group),
        group,
    };
    let plan = decide(&inputs, &now());
    let api: Api<Group> = Api::all(ctx.client.clone());
    let group = inputs.group.as_ref();
    ctx.may_write()?;
    parent::change_finalizer(&api, group, plan.finalizer).await?;
    let labels = GroupLabels { organization: group.spec.organization_ref.name.clone(), group: group.name_any() };
    if plan.finalizer == FinalizerChange::Remove {
        ctx.metrics.group_applications.remove(&labels);
        ctx.metrics.group_applications_ready.remove(&labels);
    } else {
        status::write_status(&api, group, group.status.as_ref(), &plan.status).await?;
        ctx.metrics.group_applications.get_or_create(&labels).set(plan.status.applications.total.into());
        ctx.metrics.group_applications_ready.get_or_create(&labels).set(plan.status.applications.ready.into());
    }
    ctx.backoff().succeeded(&super::object_key(group));
    ctx.publish(group, &plan.notes).await;
    Ok(Action::await_change())
}

/// Pure: the Group's status, finalizer and Events from its inputs.
pub fn decide(inputs: &Inputs, now: &Time) -> Plan {
    let group = inputs.group.as_ref();
    let apps = &inputs.applications;
    let org_name = &group.spec.organization_ref.name;
    let finalizer = parent::finalizer_change(group, apps.len());
    let ready = if group.metadata.deletion_timestamp.is_some() && !apps.is_empty() {
        parent::deletion_blocked("Applications", apps.iter().map(|a| a.display_name()), apps.len())
    } else if inputs.organization.is_none() {
        Outcome::not_ready(reason::ORGANIZATION_NOT_FOUND, format!("Organization {org_name:?} does not exist"))
    } else {
        Outcome::ready(reason::RECONCILED, format!("Group belongs to Organization {org_name:?}"))
    };
    let previous = group.status.clone().unwrap_or_default();
    let notes = Note::ready_transition(&previous.conditions, &ready);
    let mut outcomes = conditions::with_kstatus(&ready);
    outcomes.push(rollup::applications_ready(apps));
    let limits = previous.limits.clone().filter(|_| !group.spec.limits.is_empty());
    outcomes.extend(crate::limits::status::limits_condition(limits.as_ref()));
    let status = GroupStatus {
        observed_generation: group.metadata.generation,
        conditions: conditions::merge(&previous.conditions, &outcomes, group.metadata.generation, now),
        organization: inputs.organization.as_ref().map(|_| org_name.clone()),
        applications: rollup::counts(apps),
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
    use crate::crd::{ApplicationSpec, GroupSpec, OrganizationSpec, ParentRef};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn group() -> Arc<Group> {
        let mut g =
            Group::new("eng", GroupSpec { organization_ref: ParentRef { name: "acme".into() }, ..Default::default() });
        g.metadata.generation = Some(4);
        g.metadata.finalizers = Some(vec![parent::CHILDREN_FINALIZER.into()]);
        Arc::new(g)
    }

    fn app(name: &str, ready: bool) -> Arc<Application> {
        let mut a = Application::new(
            name,
            ApplicationSpec { group_ref: ParentRef { name: "eng".into() }, ..Default::default() },
        );
        a.metadata.namespace = Some("team".into());
        let outcome = if ready {
            Outcome::ready(reason::KEY_ISSUED, "")
        } else {
            Outcome::not_ready(reason::SECRET_CONFLICT, "")
        };
        a.status = Some(crate::crd::ApplicationStatus {
            conditions: conditions::merge(&[], &[outcome], Some(1), &at(0)),
            ..Default::default()
        });
        Arc::new(a)
    }

    fn org() -> Option<Arc<Organization>> {
        Some(Arc::new(Organization::new("acme", OrganizationSpec::default())))
    }

    #[test]
    fn counts_and_conditions_roll_up_from_applications() {
        let inputs =
            Inputs { group: group(), organization: org(), applications: vec![app("a", true), app("b", false)] };
        let plan = decide(&inputs, &at(5));
        assert_eq!(plan.status.applications, crate::crd::Counts { total: 2, ready: 1 });
        assert_eq!(plan.status.observed_generation, Some(4));
        assert_eq!(plan.status.organization.as_deref(), Some("acme"));
        assert!(conditions::is_ready(&plan.status.conditions));
        let rollup = conditions::find(&plan.status.conditions, conditions::APPLICATIONS_READY).unwrap();
        assert_eq!(rollup.status, "False");
        assert!(rollup.message.contains("team/b (SecretConflict)"), "{}", rollup.message);
        assert_eq!(plan.finalizer, FinalizerChange::None);
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn missing_organization_is_not_ready_with_a_warning() {
        let inputs = Inputs { group: group(), organization: None, applications: vec![] };
        let plan = decide(&inputs, &at(5));
        let ready = conditions::find(&plan.status.conditions, conditions::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "OrganizationNotFound"));
        assert_eq!(plan.status.organization, None);
        assert_eq!(plan.notes.len(), 1);
        assert!(plan.notes[0].warning);
    }

    #[test]
    fn a_deleted_group_waits_for_its_applications() {
        let mut g = (*group()).clone();
        g.metadata.deletion_timestamp = Some(at(1));
        let inputs = Inputs { group: Arc::new(g.clone()), organization: org(), applications: vec![app("a", true)] };
        let plan = decide(&inputs, &at(5));
        let ready = conditions::find(&plan.status.conditions, conditions::READY).unwrap();
        assert_eq!(ready.reason, "DeletionBlocked");
        assert!(ready.message.contains("team/a"), "{}", ready.message);
        assert_eq!(plan.finalizer, FinalizerChange::None);

        let inputs = Inputs { group: Arc::new(g), organization: org(), applications: vec![] };
        assert_eq!(decide(&inputs, &at(5)).finalizer, FinalizerChange::Remove);
    }

    #[test]
    fn an_unchanged_group_yields_its_current_status() {
        let inputs = Inputs { group: group(), organization: org(), applications: vec![app("a", true)] };
        let first = decide(&inputs, &at(5)).status;
        let mut g = (*group()).clone();
        g.status = Some(first.clone());
        let again = decide(&Inputs { group: Arc::new(g), ..inputs }, &at(500));
        assert_eq!(again.status, first);
        assert!(again.notes.is_empty());
    }
}
