//! `kubectl payi tree`: Organization -> Groups -> Applications -> use cases, each
//! with its Ready condition, and for Applications the namespace and key facts (a
//! use case is Ready when its Application's status publishes it).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::conditions::READY;
use crate::crd::{Application, Group, MonthUsage, Organization};

/// Shown for a parent that is referenced but does not exist.
pub const NOT_FOUND: &str = "NotFound";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationNode {
    pub name: String,
    pub ready: String,
    pub reason: String,
    /// The limit nearest its maximum, from status (`kubectl get`'s Spend column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<String>,
    /// Month-to-date usage, from `status.usage` (`kubectl get`'s Month-USD column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_month: Option<MonthUsage>,
    pub groups: Vec<GroupNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupNode {
    pub name: String,
    pub ready: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_month: Option<MonthUsage>,
    pub applications: Vec<ApplicationNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationNode {
    pub name: String,
    pub namespace: String,
    pub ready: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_age_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_due: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_month: Option<MonthUsage>,
    /// The declared use cases, with the version requests are attributed to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub use_cases: Vec<UseCaseNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UseCaseNode {
    pub name: String,
    pub version: i64,
    /// Published in status: the verifier and the gateway attribute requests to it.
    pub live: bool,
    /// Its own limits' spend and maxima, e.g. `1.5/10 USD (daily)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<String>,
    /// Its month-to-date usage, from its Application's `status.usage.useCases`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_month: Option<MonthUsage>,
}

fn ready_of(conditions: Option<&Vec<Condition>>) -> (String, String) {
    conditions
        .and_then(|c| c.iter().find(|c| c.type_ == READY))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_else(|| ("Unknown".into(), String::new()))
}

/// Builds the tree (pure): parents that are referenced but missing appear as `NotFound`
/// nodes, so nothing in the cluster is left out. `only` keeps one Organization.
pub fn build(
    organizations: &[Organization],
    groups: &[Group],
    applications: &[Application],
    only: Option<&str>,
    now: Timestamp,
) -> Vec<OrganizationNode> {
    let mut orgs: BTreeMap<String, OrganizationNode> = BTreeMap::new();
    for org in organizations {
        let (ready, reason) = ready_of(org.status.as_ref().map(|s| &s.conditions));
        let spend = spend_of(org.status.as_ref().and_then(|s| s.limits.as_ref()));
        let this_month = org.status.as_ref().and_then(|s| s.usage.as_ref()).map(|u| u.this_month.clone());
        let node = OrganizationNode { name: org.name_any(), ready, reason, spend, this_month, groups: vec![] };
        orgs.insert(org.name_any(), node);
    }
    let mut group_nodes: BTreeMap<String, (String, GroupNode)> = BTreeMap::new();
    for group in groups {
        let (ready, reason) = ready_of(group.status.as_ref().map(|s| &s.conditions));
        let spend = spend_of(group.status.as_ref().and_then(|s| s.limits.as_ref()));
        let this_month = group.status.as_ref().and_then(|s| s.usage.as_ref()).map(|u| u.this_month.clone());
        let node = GroupNode { name: group.name_any(), ready, reason, spend, this_month, applications: vec![] };
        group_nodes.insert(group.name_any(), (group.spec.organization_ref.name.clone(), node));
    }
    for app in applications {
        let group = &app.spec.group_ref.name;
        let node = application_node(app, now);
        let entry = group_nodes.entry(group.clone()).or_insert_with(|| {
            let missing = GroupNode {
                name: group.clone(),
                ready: NOT_FOUND.into(),
                reason: String::new(),
                spend: None,
                this_month: None,
                applications: vec![],
            };
            (String::new(), missing)
        });
        entry.1.applications.push(node);
    }
    for (organization, mut node) in group_nodes.into_values() {
        node.applications.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let key = if organization.is_empty() { "-".to_string() } else { organization };
        orgs.entry(key.clone())
            .or_insert_with(|| OrganizationNode {
                name: key,
                ready: NOT_FOUND.into(),
                reason: String::new(),
                spend: None,
                this_month: None,
                groups: vec![],
            })
            .groups
            .push(node);
    }
    orgs.into_values().filter(|o| only.is_none_or(|n| n == o.name)).collect()
}

fn application_node(app: &Application, now: Timestamp) -> ApplicationNode {
    let status = app.status.as_ref();
    let (ready, reason) = ready_of(status.map(|s| &s.conditions));
    let created: Option<&Time> = status.and_then(|s| s.key_created_at.as_ref());
    ApplicationNode {
        name: app.name_any(),
        namespace: app.namespace().unwrap_or_default(),
        ready,
        reason,
        key_fingerprint: status.and_then(|s| s.key_fingerprint.clone()),
        key_created_at: created.map(|t| t.0.to_string()),
        key_age_seconds: created.map(|t| now.duration_since(t.0).as_secs().max(0)),
        rotation_due: status
            .and_then(|s| s.rotation.as_ref())
            .and_then(|r| r.next_rotation_at.as_ref())
            .map(|t| t.0.to_string()),
        spend: spend_of(status.and_then(|s| s.limits.as_ref())),
        this_month: status.and_then(|s| s.usage.as_ref()).map(|u| u.this_month.clone()),
        use_cases: use_case_nodes(app),
    }
}

/// `spend/max USD (name)` of each limit, comma-separated; `None` without limits status.
fn spend_of(limits: Option<&crate::crd::LimitsStatus>) -> Option<String> {
    let limits = limits?;
    let own: Vec<String> = limits
        .items
        .iter()
        .filter(|i| i.use_case.is_none())
        .map(|i| format!("{}/{} USD ({})", i.spend_usd, i.max_usd, i.name))
        .collect();
    (!own.is_empty()).then(|| own.join(", "))
}

fn use_case_nodes(app: &Application) -> Vec<UseCaseNode> {
    let published = app.status.as_ref().and_then(|s| s.use_cases.as_ref()).map(|u| &u.items[..]).unwrap_or_default();
    app.spec
        .use_cases
        .iter()
        .map(|u| {
            let version = u.version.unwrap_or(crate::use_case::DEFAULT_VERSION);
            let live = published.iter().any(|p| p.name == u.name && p.version == version);
            let items = app.status.as_ref().and_then(|s| s.limits.as_ref()).map(|l| &l.items[..]).unwrap_or_default();
            let own: Vec<String> = items
                .iter()
                .filter(|i| i.use_case.as_deref() == Some(u.name.as_str()))
                .map(|i| format!("{}/{} USD ({})", i.spend_usd, i.max_usd, i.name))
                .collect();
            let spend = (!own.is_empty()).then(|| own.join(", "));
            let usage =
                app.status.as_ref().and_then(|s| s.usage.as_ref()).map(|u| &u.use_cases[..]).unwrap_or_default();
            let this_month = usage.iter().find(|c| c.name == u.name).map(|c| c.this_month.clone());
            UseCaseNode { name: u.name.clone(), version, live, spend, this_month }
        })
        .collect()
}

/// `5d3h`, `3h12m`, `12m`, `40s`: the two largest units, like kubectl's ages.
pub fn human_age(seconds: i64) -> String {
    let (d, h, m, s) = (seconds / 86400, seconds % 86400 / 3600, seconds % 3600 / 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Colours for a terminal; none when piped.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    fn ready(&self, status: &str) -> String {
        if !self.colour {
            return status.to_string();
        }
        let code = match status {
            "True" => "32",
            "False" | NOT_FOUND => "31",
            _ => "33",
        };
        format!("\x1b[{code}m{status}\x1b[0m")
    }
}

/// Columns of the text tree: NAME to ROTATION DUE, then MONTH USD and SPEND.
const COLUMNS: usize = 9;
/// MONTH USD and SPEND are shown only when some row has a value.
const OPTIONAL_FROM: usize = 7;

/// The tree as aligned text: one row per object, box-drawing prefixes.
pub fn render_text(tree: &[OrganizationNode], style: Style) -> String {
    let mut rows: Vec<[String; COLUMNS]> = vec![[
        "NAME".into(),
        "NAMESPACE".into(),
        "READY".into(),
        "REASON".into(),
        "KEY".into(),
        "KEY AGE".into(),
        "ROTATION DUE".into(),
        "MONTH USD".into(),
        "SPEND".into(),
    ]];
    let shown = |spend: &Option<String>| spend.clone().unwrap_or_default();
    let month = |usage: &Option<MonthUsage>| usage.as_ref().map(|u| u.spend_usd.clone()).unwrap_or_default();
    let blank = String::new;
    for org in tree {
        rows.push([
            format!("Organization/{}", org.name),
            blank(),
            org.ready.clone(),
            org.reason.clone(),
            blank(),
            blank(),
            blank(),
            month(&org.this_month),
            shown(&org.spend),
        ]);
        for (gi, group) in org.groups.iter().enumerate() {
            let last_group = gi + 1 == org.groups.len();
            let (branch, stem) = if last_group { ("└── ", "    ") } else { ("├── ", "│   ") };
            rows.push([
                format!("{branch}Group/{}", group.name),
                blank(),
                group.ready.clone(),
                group.reason.clone(),
                blank(),
                blank(),
                blank(),
                month(&group.this_month),
                shown(&group.spend),
            ]);
            for (ai, app) in group.applications.iter().enumerate() {
                let last_app = ai + 1 == group.applications.len();
                let (twig, app_stem) = if last_app { ("└── ", "    ") } else { ("├── ", "│   ") };
                rows.push([
                    format!("{stem}{twig}Application/{}", app.name),
                    app.namespace.clone(),
                    app.ready.clone(),
                    app.reason.clone(),
                    app.key_fingerprint.clone().unwrap_or_else(|| "-".into()),
                    app.key_age_seconds.map(human_age).unwrap_or_else(|| "-".into()),
                    app.rotation_due.clone().unwrap_or_else(|| "-".into()),
                    month(&app.this_month),
                    shown(&app.spend),
                ]);
                for (ui, use_case) in app.use_cases.iter().enumerate() {
                    let leaf = if ui + 1 == app.use_cases.len() { "└── " } else { "├── " };
                    let live = if use_case.live { "True" } else { "False" };
                    rows.push([
                        format!("{stem}{app_stem}{leaf}UseCase/{} v{}", use_case.name, use_case.version),
                        blank(),
                        live.into(),
                        blank(),
                        blank(),
                        blank(),
                        blank(),
                        month(&use_case.this_month),
                        shown(&use_case.spend),
                    ]);
                }
            }
        }
    }
    // MONTH USD only when some level has usage status (an operator with a ledger), SPEND
    // only when some level has limits, so trees without either read as before.
    let columns: Vec<usize> =
        (0..COLUMNS).filter(|&c| c < OPTIONAL_FROM || rows.iter().skip(1).any(|r| !r[c].is_empty())).collect();
    let widths: Vec<usize> =
        (0..COLUMNS).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (n, &c) in columns.iter().enumerate() {
            let cell = &row[c];
            let pad = widths[c] - cell.chars().count();
            let shown = if c == 2 && i > 0 { style.ready(cell) } else { cell.clone() };
            line.push_str(&shown);
            if n + 1 < columns.len() {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationSpec, GroupSpec, OrganizationSpec, ParentRef};

    fn org(name: &str) -> Organization {
        Organization::new(name, OrganizationSpec::default())
    }

    fn group(name: &str, org: &str) -> Group {
        Group::new(name, GroupSpec { organization_ref: ParentRef { name: org.into() }, ..Default::default() })
    }

    fn app(name: &str, group: &str) -> Application {
        let mut app = Application::new(
            name,
            ApplicationSpec { group_ref: ParentRef { name: group.into() }, ..Default::default() },
        );
        app.metadata.namespace = Some("team-a".into());
        app
    }

    #[test]
    fn missing_parents_become_not_found_nodes() {
        let tree = build(
            &[org("acme")],
            &[group("eng", "acme"), group("lost", "gone")],
            &[app("chat", "eng"), app("orphan", "nobody")],
            None,
            Timestamp::UNIX_EPOCH,
        );
        let names: Vec<(&str, &str)> = tree.iter().map(|o| (o.name.as_str(), o.ready.as_str())).collect();
        assert_eq!(names, vec![("-", NOT_FOUND), ("acme", "Unknown"), ("gone", NOT_FOUND)]);
        assert_eq!(tree[0].groups[0].name, "nobody");
        let text = render_text(&tree, Style { colour: false });
        assert!(text.contains("├── Group/eng") || text.contains("└── Group/eng"), "{text}");
        assert!(text.contains("    └── Application/chat "), "{text}");
        let only = build(&[org("acme")], &[group("eng", "acme")], &[], Some("acme"), Timestamp::UNIX_EPOCH);
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn use_cases_hang_under_their_application_with_their_versions() {
        let mut chat = app("chat", "eng");
        chat.spec.use_cases = vec![
            crate::crd::UseCase { name: "summarize".into(), version: Some(2), ..Default::default() },
            crate::crd::UseCase { name: "draft".into(), ..Default::default() },
        ];
        chat.status = Some(crate::crd::ApplicationStatus {
            use_cases: Some(crate::use_case::published(&chat, true)),
            ..Default::default()
        });
        let tree =
            build(&[org("acme")], &[group("eng", "acme")], &[chat, app("search", "eng")], None, Timestamp::UNIX_EPOCH);
        let nodes = &tree[0].groups[0].applications[0].use_cases;
        let node =
            |name: &str, version| UseCaseNode { name: name.into(), version, live: true, spend: None, this_month: None };
        assert_eq!(nodes[0], node("summarize", 2));
        assert_eq!(nodes[1], node("draft", 1));
        let text = render_text(&tree, Style { colour: false });
        assert!(!text.contains("SPEND") && !text.contains("MONTH USD"), "no limits or usage, no such columns");
        let text = render_text(&tree, Style { colour: false });
        assert!(text.contains("    ├── Application/chat"), "{text}");
        assert!(text.contains("    │   ├── UseCase/summarize v2") && text.contains("True"), "{text}");
        assert!(text.contains("    │   └── UseCase/draft v1"), "{text}");
    }

    #[test]
    fn spend_and_maxima_show_at_each_level_that_has_limits() {
        use crate::crd::{LimitState, LimitStatusItem, LimitType, LimitsStatus};
        let item = |name: &str, use_case: Option<&str>, spend: &str, max: &str| LimitStatusItem {
            id: format!("x/{name}"),
            name: name.into(),
            use_case: use_case.map(str::to_string),
            kind: LimitType::Block,
            spend_usd: spend.into(),
            max_usd: max.into(),
            state: LimitState::Ok,
            window: "2026-12".into(),
        };
        let mut eng = group("eng", "acme");
        eng.status = Some(crate::crd::GroupStatus {
            limits: Some(LimitsStatus { items: vec![item("monthly", None, "12.5", "250")], ..Default::default() }),
            ..Default::default()
        });
        let mut chat = app("chat", "eng");
        chat.spec.use_cases = vec![crate::crd::UseCase { name: "draft".into(), ..Default::default() }];
        chat.status = Some(crate::crd::ApplicationStatus {
            use_cases: Some(crate::use_case::published(&chat, true)),
            limits: Some(LimitsStatus { items: vec![item("daily", Some("draft"), "1", "2")], ..Default::default() }),
            ..Default::default()
        });
        let tree = build(&[org("acme")], &[eng], &[chat], None, Timestamp::UNIX_EPOCH);
        assert_eq!(tree[0].groups[0].spend.as_deref(), Some("12.5/250 USD (monthly)"));
        assert_eq!(tree[0].groups[0].applications[0].spend, None);
        assert_eq!(tree[0].groups[0].applications[0].use_cases[0].spend.as_deref(), Some("1/2 USD (daily)"));
        let text = render_text(&tree, Style { colour: false });
        assert!(text.lines().next().unwrap().ends_with("SPEND"), "{text}");
        assert!(text.contains("12.5/250 USD (monthly)") && text.contains("1/2 USD (daily)"), "{text}");
    }

    #[test]
    fn this_months_spend_shows_at_every_level_with_usage_status() {
        use crate::crd::{UsageStatus, UseCaseUsage};
        let month = |spend: &str| MonthUsage {
            month: "2026-12".into(),
            spend_usd: spend.into(),
            tokens: 10,
            requests: 1,
            unpriced_requests: 0,
        };
        let usage = |spend: &str| UsageStatus { this_month: month(spend), last_month: month("0"), use_cases: vec![] };
        let mut acme = org("acme");
        acme.status = Some(crate::crd::OrganizationStatus { usage: Some(usage("4.5")), ..Default::default() });
        let mut eng = group("eng", "acme");
        eng.status = Some(crate::crd::GroupStatus { usage: Some(usage("4.5")), ..Default::default() });
        let mut chat = app("chat", "eng");
        chat.spec.use_cases = vec![
            crate::crd::UseCase { name: "draft".into(), ..Default::default() },
            crate::crd::UseCase { name: "new".into(), ..Default::default() },
        ];
        let mut chat_usage = usage("1.234567891");
        chat_usage.use_cases =
            vec![UseCaseUsage { name: "draft".into(), this_month: month("0.5"), last_month: month("0") }];
        chat.status = Some(crate::crd::ApplicationStatus { usage: Some(chat_usage), ..Default::default() });
        let tree = build(&[acme], &[eng], &[chat], None, Timestamp::UNIX_EPOCH);
        assert_eq!(tree[0].this_month.as_ref().map(|m| m.spend_usd.as_str()), Some("4.5"));
        let chat = &tree[0].groups[0].applications[0];
        assert_eq!(chat.this_month.as_ref().map(|m| m.spend_usd.as_str()), Some("1.234567891"));
        assert_eq!(chat.use_cases[0].this_month, Some(month("0.5")));
        assert_eq!(chat.use_cases[1].this_month, None, "not published yet");
        let text = render_text(&tree, Style { colour: false });
        let header = text.lines().next().unwrap();
        assert!(header.ends_with("ROTATION DUE  MONTH USD"), "no limits, no SPEND column: {text}");
        assert!(text.lines().any(|l| l.starts_with("Organization/acme") && l.ends_with("  4.5")), "{text}");
        assert!(text.lines().any(|l| l.contains("UseCase/draft v1") && l.ends_with("  0.5")), "{text}");
        let json = serde_json::to_value(&tree).unwrap();
        assert_eq!(json[0]["thisMonth"]["spendUSD"], "4.5");
        assert_eq!(json[0]["groups"][0]["applications"][0]["useCases"][0]["thisMonth"]["tokens"], 10);
    }

    #[test]
    fn colour_only_when_asked() {
        let tree = build(&[org("acme")], &[group("eng", "gone")], &[], None, Timestamp::UNIX_EPOCH);
        let coloured = render_text(&tree, Style { colour: true });
        assert!(
            coloured.contains("\x1b[33mUnknown\x1b[0m") && coloured.contains("\x1b[31mNotFound\x1b[0m"),
            "{coloured}"
        );
        assert!(!render_text(&tree, Style { colour: false }).contains('\x1b'));
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(human_age(40), "40s");
        assert_eq!(human_age(125), "2m");
        assert_eq!(human_age(3 * 3600 + 120), "3h2m");
        assert_eq!(human_age(2 * 86400 + 3600), "2d1h");
    }
}
