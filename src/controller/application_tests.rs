//! Table tests of `decide`: no cluster, a fixed clock, a counting key source.

use super::*;
use crate::crd::{ApplicationSpec, GroupSpec, KeySecretTemplate, NamespacePolicy, OrganizationSpec, ParentRef};
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
    Arc::new(Group::new("eng", spec))
}

fn admit_team_a() -> Option<NamespacePolicy> {
    Some(NamespacePolicy { names: vec!["team-a".into()], selector: None })
}

fn org(base_url: Option<&str>) -> Arc<Organization> {
    let spec = OrganizationSpec { base_url: base_url.map(str::to_string), ..Default::default() };
    Arc::new(Organization::new("acme", spec))
}

fn inputs(app: Application, secret: Option<Secret>) -> Inputs {
    Inputs {
        app: Arc::new(app),
        group: Some(group(admit_team_a())),
        organization: Some(org(None)),
        namespace_labels: BTreeMap::new(),
        secret,
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
    assert_eq!(plan.minted, Some(MintCause::FirstIssue));
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
    assert_eq!(plan.minted, Some(MintCause::SecretMissing));
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
    assert_eq!(plan.minted, Some(MintCause::KeyMismatch));
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
