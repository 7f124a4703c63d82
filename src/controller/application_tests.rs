//! Table tests of `decide`: no cluster, a fixed clock, a counting key source.

use super::*;
use crate::crd::{
    Access, AccessSubject, ApplicationSpec, GroupSpec, KeySecretTemplate, NamespacePolicy, OrganizationSpec, ParentRef,
    SubjectKind,
};
use crate::key;
use crate::key_secret::{
    API_KEY_FIELD, APPLICATION_LABEL, BASE_URL_FIELD, MANAGED_BY_LABEL, PREVIOUS_EXPIRES_ANNOTATION,
    PREVIOUS_KEY_FIELD, ROTATION_ID_ANNOTATION,
};
use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;

const UID: &str = "11111111-2222-3333-4444-555555555555";

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn app() -> Application {
    let spec = ApplicationSpec { group_ref: ParentRef { name: "eng".into() }, ..Default::default() };
    let mut a = Application::new("chatbot", spec);
    a.metadata.namespace = Some("team-a".into());
    a.metadata.uid = Some(UID.into());
    a.metadata.generation = Some(2);
    a
}

fn group(policy: Option<NamespacePolicy>) -> Arc<Group> {
    let spec = GroupSpec {
        organization_ref: ParentRef { name: "acme".into() },
        namespace_policy: policy,
        ..Default::default()
    };
    let mut g = Group::new("eng", spec);
    g.metadata.finalizers = Some(vec![CHILDREN_FINALIZER.into()]);
    Arc::new(g)
}

fn admit_team_a() -> Option<NamespacePolicy> {
    Some(NamespacePolicy { names: vec!["team-a".into()], selector: None })
}

fn org(base_url: Option<&str>) -> Arc<Organization> {
    let spec = OrganizationSpec { base_url: base_url.map(str::to_string), ..Default::default() };
    let mut o = Organization::new("acme", spec);
    o.metadata.finalizers = Some(vec![CHILDREN_FINALIZER.into()]);
    Arc::new(o)
}

fn inputs(app: Application, secret: Option<Secret>) -> Inputs {
    Inputs {
        app: Arc::new(app),
        group: Some(group(admit_team_a())),
        organization: Some(org(None)),
        namespace_labels: BTreeMap::new(),
        secret,
        secret_unchanged: false,
        refused: Refusals::default(),
    }
}

/// A key source that hands out predictable, well-formed keys and counts calls.
struct Keys(u8);

impl Keys {
    fn next(&mut self) -> Result<ApiKey, MintError> {
        self.0 += 1;
        let mut bytes = [0u8; 32];
        bytes[0] = self.0;
        Ok(ApiKey::for_tests(&bytes))
    }
}

fn decide_with(inputs: &Inputs, keys: &mut Keys) -> Plan {
    decide(inputs, &at(100), &mut || keys.next()).unwrap()
}

fn ready(plan: &Plan) -> (String, String) {
    let c = conditions::find(&plan.status.conditions, conditions::READY).expect("Ready is always set");
    (c.status.clone(), c.reason.clone())
}

/// The app after `plan` was applied: its status recorded, its Secret as written.
fn applied(app: &Application, plan: Plan) -> (Application, Secret) {
    let mut next = app.clone();
    next.status = Some(plan.status);
    let secret = plan.secret.expect("plan writes a Secret").secret;
    (next, secret)
}

#[test]
fn first_sight_mints_one_key_with_owner_labels_and_event() {
    let mut keys = Keys(0);
    let plan = decide_with(&inputs(app(), None), &mut keys);
    assert_eq!(keys.0, 1);
    assert_eq!(plan.minted(), Some(MintCause::FirstIssue));
    assert_eq!(ready(&plan), ("True".into(), "KeyIssued".into()));
    let write = plan.secret.as_ref().unwrap();
    assert!(write.create, "a missing Secret is created, never applied over");
    let meta = &write.secret.metadata;
    assert_eq!(meta.name.as_deref(), Some("chatbot-payi-key"));
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.uid.as_str(), owner.controller), (UID, Some(true)));
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some("payi-operator"));
    assert_eq!(labels.get(APPLICATION_LABEL).map(String::as_str), Some("chatbot"));
    let key = String::from_utf8(write.secret.data.as_ref().unwrap()[API_KEY_FIELD].0.clone()).unwrap();
    assert!(key::is_well_formed(&key));
    assert_eq!(plan.status.key_fingerprint, Some(key::fingerprint(&key)));
    assert_eq!(plan.status.key_created_at, Some(at(100)));
    assert_eq!(plan.status.observed_generation, Some(2));
    assert_eq!(
        plan.notes,
        vec![Note::normal(
            reason::KEY_MINTED,
            format!("minted API key {} into Secret chatbot-payi-key", key::fingerprint(&key))
        )]
    );
}

#[test]
fn a_converged_application_plans_no_write_and_no_event() {
    let mut keys = Keys(0);
    let first = decide_with(&inputs(app(), None), &mut keys);
    let (app, secret) = applied(&app(), first);
    let plan = decide_with(&inputs(app.clone(), Some(secret)), &mut keys);
    assert_eq!(keys.0, 1, "no second key");
    assert!(plan.secret.is_none());
    assert!(plan.notes.is_empty());
    assert_eq!(Some(&plan.status), app.status.as_ref());
}

#[test]
fn parent_problems_block_the_key_and_name_the_missing_thing() {
    type Edit = Box<dyn Fn(&mut Inputs)>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        ("no group", Box::new(|i| i.group = None), "GroupNotFound", "Group \"eng\" does not exist"),
        (
            "no org",
            Box::new(|i| i.organization = None),
            "OrganizationNotFound",
            "Organization \"acme\" of Group \"eng\"",
        ),
        ("no policy", Box::new(|i| i.group = Some(group(None))), "NamespaceNotAllowed", "no namespacePolicy"),
        (
            "other namespace",
            Box::new(|i| i.group = Some(group(Some(NamespacePolicy { names: vec!["team-b".into()], selector: None })))),
            "NamespaceNotAllowed",
            "does not admit namespace \"team-a\"",
        ),
    ];
    for (name, edit, want_reason, want_message) in cases {
        let mut inputs = inputs(app(), None);
        edit(&mut inputs);
        let mut keys = Keys(0);
        let plan = decide_with(&inputs, &mut keys);
        assert_eq!(keys.0, 0, "{name}: no key for an invalid Application");
        assert!(plan.secret.is_none(), "{name}");
        assert_eq!(ready(&plan), ("False".into(), want_reason.into()), "{name}");
        let message = &conditions::find(&plan.status.conditions, conditions::READY).unwrap().message;
        assert!(message.contains(want_message), "{name}: {message}");
        assert_eq!(plan.notes.len(), 1, "{name}: one Warning Event");
        assert!(plan.notes[0].warning);
    }
}

#[test]
fn a_vanished_parent_leaves_the_key_untouched_and_its_return_restores_ready() {
    let mut keys = Keys(0);
    let (app, secret) = applied(&app(), decide_with(&inputs(app(), None), &mut keys));
    let fingerprint = app.status.as_ref().unwrap().key_fingerprint.clone();

    let mut orphaned = inputs(app.clone(), Some(secret.clone()));
    orphaned.group = None;
    let plan = decide_with(&orphaned, &mut keys);
    assert!(plan.secret.is_none());
    assert_eq!(plan.status.key_fingerprint, fingerprint, "status still names the key in the Secret");
    let mut app_after = app.clone();
    app_after.status = Some(plan.status);

    let plan = decide_with(&inputs(app_after, Some(secret)), &mut keys);
    assert_eq!(keys.0, 1, "the parent's return does not mint");
    assert!(plan.secret.is_none());
    assert_eq!(ready(&plan).1, "KeyIssued");
    assert_eq!(plan.status.key_fingerprint, fingerprint);
}

#[test]
fn a_foreign_secret_is_never_touched() {
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("chatbot-payi-key".into());
    foreign.data = Some(BTreeMap::from([(API_KEY_FIELD.into(), ByteString(b"theirs".to_vec()))]));
    let mut keys = Keys(0);
    let plan = decide_with(&inputs(app(), Some(foreign)), &mut keys);
    assert_eq!(keys.0, 0);
    assert!(plan.secret.is_none());
    assert_eq!(ready(&plan), ("False".into(), "SecretConflict".into()));
}

#[test]
fn a_deleted_secret_is_repaired_with_a_warning() {
    let mut keys = Keys(0);
    let (app, _) = applied(&app(), decide_with(&inputs(app(), None), &mut keys));
    let plan = decide_with(&inputs(app.clone(), None), &mut keys);
    assert_eq!(plan.minted(), Some(MintCause::SecretMissing));
    assert!(plan.secret.as_ref().unwrap().create);
    assert_ne!(plan.status.key_fingerprint, app.status.unwrap().key_fingerprint);
    assert!(plan.notes.iter().any(|n| n.warning && n.reason == reason::KEY_REPAIRED));
}

#[test]
fn tampered_key_data_is_replaced_never_adopted() {
    let mut keys = Keys(0);
    let (app, mut secret) = applied(&app(), decide_with(&inputs(app(), None), &mut keys));
    secret.data.as_mut().unwrap().insert(API_KEY_FIELD.into(), ByteString(b"payi_somebody_elses".to_vec()));
    let plan = decide_with(&inputs(app, Some(secret)), &mut keys);
    assert_eq!(plan.minted(), Some(MintCause::KeyMismatch));
    let write = plan.secret.unwrap();
    assert!(!write.create);
    let key = String::from_utf8(write.secret.data.unwrap()[API_KEY_FIELD].0.clone()).unwrap();
    assert_ne!(key, "payi_somebody_elses");
    assert_eq!(plan.status.key_fingerprint, Some(key::fingerprint(&key)));
}

#[test]
fn template_drift_and_base_url_are_restored_without_a_new_key() {
    let mut keys = Keys(0);
    let mut a = app();
    a.spec.key_secret = Some(KeySecretTemplate {
        name: None,
        labels: BTreeMap::from([("team".into(), "a".into())]),
        annotations: BTreeMap::from([("reloader.stakater.com/match".into(), "true".into())]),
    });
    let (a, mut secret) = applied(&a, decide_with(&inputs(a.clone(), None), &mut keys));
    secret.metadata.labels.as_mut().unwrap().remove("team");
    secret.metadata.annotations = None;
    let mut with_url = inputs(a, Some(secret));
    with_url.organization = Some(org(Some("https://api.example.com")));
    let plan = decide_with(&with_url, &mut keys);
    assert_eq!(keys.0, 1, "metadata drift never changes the key");
    let written = plan.secret.unwrap().secret;
    assert_eq!(written.metadata.labels.unwrap().get("team").map(String::as_str), Some("a"));
    assert!(written.metadata.annotations.unwrap().contains_key("reloader.stakater.com/match"));
    assert_eq!(written.data.unwrap()[BASE_URL_FIELD].0, b"https://api.example.com".to_vec());
    assert!(plan.notes.is_empty());
}

#[test]
fn an_owned_secret_without_a_record_is_adopted() {
    let mut keys = Keys(0);
    let (_, secret) = applied(&app(), decide_with(&inputs(app(), None), &mut keys));
    // Status lost (e.g. restored from a backup without status): keep the key.
    let plan = decide_with(&inputs(app(), Some(secret.clone())), &mut keys);
    assert_eq!(keys.0, 1);
    assert!(plan.secret.is_none());
    let key = String::from_utf8(secret.data.unwrap()[API_KEY_FIELD].0.clone()).unwrap();
    assert_eq!(plan.status.key_fingerprint, Some(key::fingerprint(&key)));
}

#[test]
fn a_custom_secret_name_is_used_and_reported() {
    let mut a = app();
    a.spec.key_secret = Some(KeySecretTemplate { name: Some("llm-credentials".into()), ..Default::default() });
    let plan = decide_with(&inputs(a, None), &mut Keys(0));
    assert_eq!(plan.secret.unwrap().secret.metadata.name.as_deref(), Some("llm-credentials"));
    assert_eq!(plan.status.key_secret_name.as_deref(), Some("llm-credentials"));
}

// --- rotation -------------------------------------------------------------

use crate::crd::KeyRotation;
use crate::keyring::ROTATE_ANNOTATION;

fn decide_at(inputs: &Inputs, keys: &mut Keys, secs: i64) -> Plan {
    decide(inputs, &at(secs), &mut || keys.next()).unwrap()
}

fn data(secret: &Secret, field: &str) -> Option<String> {
    secret.data.as_ref()?.get(field).map(|v| String::from_utf8(v.0.clone()).unwrap())
}

/// An Application with one key issued at t=100, and its Secret.
fn issued(rotation: Option<KeyRotation>) -> (Application, Secret, Keys) {
    let mut a = app();
    a.spec.key_rotation = rotation;
    let mut keys = Keys(0);
    let plan = decide_at(&inputs(a.clone(), None), &mut keys, 100);
    let (a, secret) = applied(&a, plan);
    (a, secret, keys)
}

fn request(a: &mut Application, token: &str) {
    let rotation = a.spec.key_rotation.get_or_insert_with(Default::default);
    rotation.requested_at = Some(token.into());
}

#[test]
fn a_request_present_at_first_issue_does_not_rotate() {
    let mut a = app();
    request(&mut a, "from-the-start");
    let mut keys = Keys(0);
    let (a, secret) = applied(&a, decide_at(&inputs(a.clone(), None), &mut keys, 100));
    let plan = decide_at(&inputs(a, Some(secret)), &mut keys, 200);
    assert_eq!(keys.0, 1);
    assert_eq!(plan.key_move, Some(Move::Keep));
}

#[test]
fn a_request_rotates_once_and_keeps_the_old_key_for_the_grace_period() {
    let (mut a, secret, mut keys) = issued(None);
    let old = data(&secret, API_KEY_FIELD).unwrap();
    request(&mut a, "2026-11-29T12:00:00Z");
    let plan = decide_at(&inputs(a.clone(), Some(secret.clone())), &mut keys, 1000);
    assert!(matches!(plan.key_move, Some(Move::Rotate(_))));
    assert_eq!(keys.0, 2);
    let (a, secret) = applied(&a, plan);
    let new = data(&secret, API_KEY_FIELD).unwrap();
    assert_ne!(new, old);
    assert_eq!(data(&secret, PREVIOUS_KEY_FIELD).as_deref(), Some(old.as_str()));
    let annotations = secret.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[ROTATION_ID_ANNOTATION], "request:2026-11-29T12:00:00Z");
    assert!(annotations.contains_key(PREVIOUS_EXPIRES_ANNOTATION));
    let status = a.status.clone().unwrap();
    assert_eq!(status.keys.len(), 2);
    assert_eq!(status.keys[0].fingerprint, key::fingerprint(&new));
    assert_eq!(status.keys[1].fingerprint, key::fingerprint(&old));
    assert_eq!(status.keys[1].created_at, at(100));
    assert_eq!(status.keys[1].expires_at, Some(at(1000 + 24 * 3600)));

    // Seen again, and again after a restart: no second rotation, no write.
    for t in [1001, 5000] {
        let again = decide_at(&inputs(a.clone(), Some(secret.clone())), &mut keys, t);
        assert_eq!(again.key_move, Some(Move::Keep));
        assert!(again.secret.is_none());
        assert_eq!(Some(&again.status), a.status.as_ref());
        assert_eq!(again.requeue_after, Some(std::time::Duration::from_secs((1000 + 24 * 3600 - t) as u64 + 1)));
    }
    assert_eq!(keys.0, 2);

    // Grace period over: the previous key leaves the Secret and status.
    let expired = decide_at(&inputs(a, Some(secret)), &mut keys, 1000 + 24 * 3600);
    assert_eq!(keys.0, 2);
    let written = expired.secret.expect("the previous key is removed").secret;
    assert_eq!(data(&written, PREVIOUS_KEY_FIELD), None);
    assert_eq!(data(&written, API_KEY_FIELD).as_deref(), Some(new.as_str()));
    assert_eq!(expired.status.keys.len(), 1);
    assert!(expired.notes.iter().any(|n| n.reason == reason::PREVIOUS_KEY_REMOVED));
}

#[test]
fn the_annotation_rotates_and_a_zero_grace_period_drops_the_old_key_at_once() {
    let (mut a, secret, mut keys) = issued(Some(KeyRotation { grace_period: Some("0s".into()), ..Default::default() }));
    a.metadata.annotations = Some(BTreeMap::from([(ROTATE_ANNOTATION.to_string(), "1".to_string())]));
    let plan = decide_at(&inputs(a.clone(), Some(secret)), &mut keys, 500);
    assert!(matches!(&plan.key_move, Some(Move::Rotate(t)) if t.id == "annotation:1"));
    let (_, secret) = applied(&a, plan);
    assert_eq!(data(&secret, PREVIOUS_KEY_FIELD), None);
}

#[test]
fn a_schedule_rotates_when_due_and_requeues_for_it() {
    let (a, secret, mut keys) = issued(Some(KeyRotation { every: Some("1h".into()), ..Default::default() }));
    assert_eq!(a.status.as_ref().unwrap().rotation.as_ref().unwrap().next_rotation_at, Some(at(100 + 3600)));
    let early = decide_at(&inputs(a.clone(), Some(secret.clone())), &mut keys, 200);
    assert_eq!(early.key_move, Some(Move::Keep));
    assert_eq!(early.requeue_after, Some(std::time::Duration::from_secs(3500 + 1)));
    let due = decide_at(&inputs(a.clone(), Some(secret)), &mut keys, 100 + 3600);
    assert!(matches!(&due.key_move, Some(Move::Rotate(t)) if t.id.starts_with("schedule:")));
    assert_eq!(due.status.rotation.unwrap().next_rotation_at, Some(at(100 + 2 * 3600)));
}

#[test]
fn a_rotation_interrupted_after_the_secret_write_is_completed_without_a_new_key() {
    let (mut a, secret, mut keys) = issued(None);
    request(&mut a, "r1");
    let plan = decide_at(&inputs(a.clone(), Some(secret)), &mut keys, 1000);
    // Crash: the Secret was written, status was not.
    let (_, written) = applied(&a, plan);
    let resumed = decide_at(&inputs(a.clone(), Some(written.clone())), &mut keys, 1010);
    assert!(matches!(resumed.key_move, Some(Move::Complete(_))), "{:?}", resumed.key_move);
    assert_eq!(keys.0, 2, "no third key");
    let status = resumed.status.clone();
    assert_eq!(status.key_fingerprint, Some(key::fingerprint(&data(&written, API_KEY_FIELD).unwrap())));
    assert_eq!(status.keys[1].fingerprint, key::fingerprint(&data(&written, PREVIOUS_KEY_FIELD).unwrap()));
    assert_eq!(status.rotation.as_ref().unwrap().handled_request.as_deref(), Some("r1"));
    assert!(resumed.secret.is_none(), "the Secret already holds the rotation");
    let a = Application { status: Some(resumed.status), ..a };
    let settled = decide_at(&inputs(a, Some(written)), &mut keys, 1020);
    assert_eq!(settled.key_move, Some(Move::Keep));
    assert!(settled.secret.is_none());
}

#[test]
fn a_previous_key_someone_else_wrote_is_not_trusted() {
    let (mut a, secret, mut keys) = issued(None);
    request(&mut a, "r1");
    let (a, mut secret) = applied(&a, decide_at(&inputs(a.clone(), Some(secret)), &mut keys, 1000));
    secret.data.as_mut().unwrap().insert(PREVIOUS_KEY_FIELD.into(), ByteString(b"payi_planted".to_vec()));
    let plan = decide_at(&inputs(a, Some(secret)), &mut keys, 1001);
    let written = plan.secret.expect("the planted key is removed").secret;
    assert_eq!(data(&written, PREVIOUS_KEY_FIELD), None);
    assert_eq!(plan.status.keys.len(), 1);
}

#[test]
fn adopting_a_secret_after_status_loss_does_not_replay_old_requests() {
    let mut a = app();
    request(&mut a, "long-done");
    let mut keys = Keys(0);
    let (_, secret) = applied(&a, decide_at(&inputs(a.clone(), None), &mut keys, 100));
    // Status lost: the Application comes back with its spec but no status.
    let adopted = decide_at(&inputs(a.clone(), Some(secret.clone())), &mut keys, 200);
    assert_eq!(adopted.key_move, Some(Move::Keep));
    let (a, secret) = (Application { status: Some(adopted.status), ..a }, secret);
    let again = decide_at(&inputs(a, Some(secret)), &mut keys, 300);
    assert_eq!(again.key_move, Some(Move::Keep), "an old request rotated after adoption");
    assert_eq!(keys.0, 1);
}

// --- failures after the Secret write, refusals, access ----------------------

#[test]
fn a_repair_interrupted_before_its_status_write_is_completed_without_another_key() {
    let mut keys = Keys(0);
    let (app, _) = applied(&app(), decide_with(&inputs(app(), None), &mut keys));
    let repair = decide_with(&inputs(app.clone(), None), &mut keys);
    assert_eq!(repair.minted(), Some(MintCause::SecretMissing));
    // The Secret was written, the status write failed (or the process died).
    let written = repair.secret.unwrap().secret;
    let resumed = decide_with(&inputs(app.clone(), Some(written.clone())), &mut keys);
    assert!(matches!(&resumed.key_move, Some(Move::Complete(t)) if t.id.starts_with("repair:")));
    assert_eq!(keys.0, 2, "no third key");
    let key = data(&written, API_KEY_FIELD).unwrap();
    assert_eq!(resumed.status.key_fingerprint, Some(key::fingerprint(&key)));
    assert!(resumed.secret.is_none(), "the Secret already holds it");
    // Once recorded, the marker of the old repair no longer matches: tampering is repaired again.
    let mut app = app;
    app.status = Some(resumed.status);
    let mut tampered = written;
    tampered.data.as_mut().unwrap().insert(API_KEY_FIELD.into(), ByteString(b"payi_x".to_vec()));
    assert_eq!(decide_with(&inputs(app, Some(tampered)), &mut keys).minted(), Some(MintCause::KeyMismatch));
}

#[test]
fn a_refused_secret_is_a_condition_not_a_write_and_grants_nothing() {
    let mut a = app();
    a.spec.access = Access { owners: vec![user("alice")], readers: vec![] };
    let mut i = inputs(a, None);
    i.refused.secret = Some("the API server refused Secret chatbot-payi-key: label value too long".into());
    let plan = decide_with(&i, &mut Keys(0));
    assert!(plan.secret.is_none());
    assert_eq!(plan.key_move, None);
    assert_eq!(ready(&plan), ("False".into(), "SecretRejected".into()));
    assert!(!grants_secret(&plan), "no Secret will exist: nothing to grant");
    assert_eq!(plan.notes.len(), 1);
}

#[test]
fn a_refused_role_binding_keeps_the_key_and_says_why() {
    let mut keys = Keys(0);
    let mut i = inputs(app(), None);
    i.refused.access = Some(grants::Refused { reason: reason::ACCESS_REJECTED, message: "invalid subject".into() });
    let plan = decide_with(&i, &mut keys);
    assert_eq!(plan.minted(), Some(MintCause::FirstIssue), "the workload still gets its key");
    assert_eq!(ready(&plan), ("False".into(), "AccessRejected".into()));
    let stalled = conditions::find(&plan.status.conditions, conditions::STALLED).unwrap();
    assert_eq!(stalled.status, "True");
}

fn user(name: &str) -> AccessSubject {
    AccessSubject { kind: SubjectKind::User, name: name.into(), namespace: None }
}

fn grants_secret(plan: &Plan) -> bool {
    plan.access.iter().flat_map(|g| g.role.rules.iter().flatten()).any(|r| r.resources == Some(vec!["secrets".into()]))
}

fn owners(plan: &Plan) -> Vec<String> {
    let owner = plan.access.iter().find(|g| g.role.metadata.name.as_deref() == Some("payi-chatbot-owner"));
    owner.and_then(|g| g.binding.subjects.clone()).unwrap_or_default().into_iter().map(|s| s.name).collect()
}

#[test]
fn a_foreign_secret_is_never_granted() {
    let mut a = app();
    a.spec.access = Access { owners: vec![user("alice")], readers: vec![] };
    a.spec.key_secret = Some(KeySecretTemplate { name: Some("db-password".into()), ..Default::default() });
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("db-password".into());
    let plan = decide_with(&inputs(a.clone(), Some(foreign)), &mut Keys(0));
    assert_eq!(ready(&plan).1, "SecretConflict");
    assert_eq!(owners(&plan), vec!["alice".to_string()], "owners keep their Application rights");
    assert!(!grants_secret(&plan));
    // Missing and about to be created: not yet, as the name may still turn out to be
    // someone else's Secret (it is created without a read); granted once it is ours.
    let first = decide_with(&inputs(a.clone(), None), &mut Keys(0));
    assert!(!grants_secret(&first));
    let created = first.secret.expect("the key Secret to create").secret;
    assert!(grants_secret(&decide_with(&inputs(a, Some(created)), &mut Keys(0))));
}

#[test]
fn inherited_access_is_withdrawn_while_parents_are_invalid_and_own_subjects_stay() {
    let mut keys = Keys(0);
    let mut a = app();
    a.spec.access = Access { owners: vec![user("app-owner")], readers: vec![] };
    let mut g = (*group(admit_team_a())).clone();
    g.spec.access = Access { owners: vec![user("group-owner")], readers: vec![] };
    let mut i = inputs(a, None);
    i.group = Some(Arc::new(g.clone()));
    let (a, secret) = applied(&i.app, decide_with(&i, &mut keys));
    let mut valid = inputs(a.clone(), Some(secret.clone()));
    valid.group = Some(Arc::new(g));
    assert_eq!(owners(&decide_with(&valid, &mut keys)), vec!["app-owner".to_string(), "group-owner".to_string()]);

    let mut broken = inputs(a, Some(secret));
    broken.group = None;
    let plan = decide_with(&broken, &mut keys);
    assert_eq!(ready(&plan).1, "GroupNotFound");
    assert_eq!(owners(&plan), vec!["app-owner".to_string()]);
    assert!(grants_secret(&plan), "the Application's own owners keep its existing key");
}

#[test]
fn parents_must_be_guarded_and_a_deleted_parent_admits_no_new_application() {
    let mut keys = Keys(0);
    let mut unguarded = inputs(app(), None);
    let mut g = (*group(admit_team_a())).clone();
    g.metadata.finalizers = None;
    unguarded.group = Some(Arc::new(g.clone()));
    let plan = decide_with(&unguarded, &mut keys);
    assert_eq!(ready(&plan).1, "WaitingForParent");
    assert_eq!(keys.0, 0, "no key under an unguarded parent");

    let mut deleting = inputs(app(), None);
    let mut o = (*org(None)).clone();
    o.metadata.deletion_timestamp = Some(at(50));
    deleting.organization = Some(Arc::new(o.clone()));
    let plan = decide_with(&deleting, &mut keys);
    assert_eq!(ready(&plan), ("False".into(), "ParentDeleting".into()));
    assert_eq!(keys.0, 0);

    // An Application that already has its key keeps it, and stays Ready, while the parent waits for it.
    let (a, secret) = applied(&app(), decide_with(&inputs(app(), None), &mut keys));
    let mut existing = inputs(a, Some(secret));
    existing.organization = Some(Arc::new(o));
    let plan = decide_with(&existing, &mut keys);
    assert_eq!(ready(&plan).1, "KeyIssued");
    assert!(plan.secret.is_none());
}

#[test]
fn a_removed_base_url_and_template_label_leave_the_secret_in_one_write() {
    let mut keys = Keys(0);
    let mut a = app();
    a.spec.key_secret =
        Some(KeySecretTemplate { labels: BTreeMap::from([("reload".into(), "yes".into())]), ..Default::default() });
    let mut i = inputs(a.clone(), None);
    i.organization = Some(org(Some("https://gw.example")));
    let (mut a, secret) = applied(&a, decide_with(&i, &mut keys));
    a.spec.key_secret = None;
    let plan = decide_with(&inputs(a.clone(), Some(secret)), &mut keys);
    let written = plan.secret.expect("one write removes both").secret;
    assert!(!written.data.as_ref().unwrap().contains_key(BASE_URL_FIELD));
    assert!(!written.metadata.labels.as_ref().unwrap().contains_key("reload"));
    let again = decide_with(&inputs(a, Some(written)), &mut keys);
    assert!(again.secret.is_none(), "and then nothing more");
    assert_eq!(keys.0, 1);
}

// --- reading the Secret only when its metadata says it may have changed ----

#[test]
fn a_secret_known_unchanged_from_its_metadata_is_not_read_and_nothing_is_written() {
    use crate::key_secret::CONTENT_ANNOTATION;
    let mut keys = Keys(0);
    let (mut a, secret) = applied(&app(), decide_with(&inputs(app(), None), &mut keys));
    a.status.as_mut().unwrap().key_secret_version = Some("7".into());
    let content =
        secret.metadata.annotations.as_ref().and_then(|m| m.get(CONTENT_ANNOTATION).map(|c| c.as_str().into()));
    let watched = SecretSummary { resource_version: Some(7), controller: Some(UID.into()), content };
    assert!(known_unchanged(&a, &watched, None, &at(100)));

    let moved = SecretSummary { resource_version: Some(8), ..watched.clone() };
    assert!(!known_unchanged(&a, &moved, None, &at(100)), "changed since we wrote it");
    let opaque = SecretSummary { resource_version: None, ..watched.clone() };
    assert!(!known_unchanged(&a, &opaque, None, &at(100)), "a version that is not an integer proves nothing");
    let mut recorded_opaque = a.clone();
    recorded_opaque.status.as_mut().unwrap().key_secret_version = Some("x7".into());
    assert!(!known_unchanged(&recorded_opaque, &watched, None, &at(100)));
    let foreign = SecretSummary { controller: Some("someone".into()), ..watched.clone() };
    assert!(!known_unchanged(&a, &foreign, None, &at(100)));
    assert!(!known_unchanged(&a, &watched, Some("https://gw"), &at(100)), "the base URL was added");
    let mut requested = a.clone();
    request(&mut requested, "rotate-now");
    assert!(!known_unchanged(&requested, &watched, None, &at(100)), "a rotation needs the old key's value");

    let mut i = inputs(a.clone(), None);
    i.secret_unchanged = true;
    let plan = decide_with(&i, &mut keys);
    assert_eq!(keys.0, 1, "no key minted");
    assert!(plan.secret.is_none());
    assert_eq!(ready(&plan).1, "KeyIssued");
    assert_eq!(Some(&plan.status), a.status.as_ref(), "a converged Application writes nothing");
    assert!(grants_secret(&plan) || plan.access.is_empty());
}
