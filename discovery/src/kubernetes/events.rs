//! Events on the objects the proxy serves from, so their owners learn from `kubectl
//! describe` what the proxy's log says: a Warning when an Ingress is refused (its paths
//! answer 503), when something in it is not served as written (an annotation ignored, a
//! TLS Secret missing), when a ConfigMap key is not applied or its TCP/UDP port cannot be
//! opened; a Normal event when a refused Ingress is served again, or an object's problems
//! are all gone. Notes are the log's words. Only changes are reported, so a problem is one Event however often the routes
//! are rebuilt.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    api::{Api, PostParams},
    Client,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ingress::CONTROLLER;

/// The kinds of object Events are written on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Ingress,
    ConfigMap,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Ingress => "networking.k8s.io/v1",
            Kind::ConfigMap => "v1",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::ConfigMap => "ConfigMap",
        }
    }
}

/// One object, as Events name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Regarding {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// What is wrong with one object now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Finding {
    /// Why it is refused (its paths answer 503), for an Ingress.
    pub refused: Option<String>,
    /// What else is not served or applied as written.
    pub problems: BTreeSet<String>,
}

/// What is wrong, by object; objects with nothing wrong are absent.
pub type Findings = BTreeMap<Regarding, Finding>;

/// Sorts the operator's log lines (`Ingress NS/NAME: ...`, `ConfigMap NS/NAME: ...`) by the
/// object they are about, without that prefix; `refused` says which Ingresses are refused
/// and why (the line saying so is not repeated as a problem). Lines about no one object
/// are left out.
pub fn findings<'a>(
    problems: impl IntoIterator<Item = &'a String>,
    refused: &BTreeMap<String, String>,
) -> Findings {
    let mut out = Findings::new();
    for (source, why) in refused {
        if let Some(object) = regarding(Kind::Ingress, source) {
            out.entry(object).or_default().refused = Some(why.clone());
        }
    }
    for line in problems {
        let parsed = [(Kind::Ingress, "Ingress "), (Kind::ConfigMap, "ConfigMap ")]
            .into_iter()
            .find_map(|(kind, prefix)| {
                let (source, what) = line.strip_prefix(prefix)?.split_once(": ")?;
                Some((regarding(kind, source)?, what))
            });
        let Some((object, what)) = parsed else {
            continue;
        };
        let finding = out.entry(object).or_default();
        if !finding
            .refused
            .as_deref()
            .is_some_and(|why| what.starts_with(why))
        {
            finding.problems.insert(what.to_owned());
        }
    }
    out
}

fn regarding(kind: Kind, source: &str) -> Option<Regarding> {
    let (namespace, name) = source.split_once('/')?;
    (!name.contains(char::is_whitespace)).then(|| Regarding {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// One Event to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub regarding: Regarding,
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Events that tell the change from `before` to `now`.
pub fn changes(before: &Findings, now: &Findings) -> Vec<Notice> {
    let mut out = Vec::new();
    let empty = Finding::default();
    for (object, finding) in now {
        let old = before.get(object).unwrap_or(&empty);
        let warn = |reason, note: &String| Notice {
            regarding: object.clone(),
            warning: true,
            reason,
            note: note.clone(),
        };
        if let Some(why) = &finding.refused {
            if old.refused.as_ref() != Some(why) {
                out.push(warn("Refused", why));
            }
        }
        let reason = match object.kind {
            Kind::Ingress => "Differs",
            Kind::ConfigMap => "NotApplied",
        };
        for problem in finding.problems.difference(&old.problems) {
            out.push(warn(reason, problem));
        }
    }
    for (object, old) in before {
        let now = now.get(object).unwrap_or(&empty);
        let (reason, note) = match (object.kind, old.refused.is_some()) {
            (Kind::Ingress, true) if now.refused.is_none() => {
                ("Served", "served again: nothing in it is refused now")
            }
            _ if *now != empty => continue,
            (Kind::Ingress, _) => ("Served", "served as written now: nothing in it differs"),
            (Kind::ConfigMap, _) => ("Applied", "applied whole now: every key and port of it"),
        };
        out.push(Notice {
            regarding: object.clone(),
            warning: false,
            reason,
            note: note.to_owned(),
        });
    }
    out
}

/// Starts the writer of Events (events.k8s.io/v1), reported as `instance`.
pub fn spawn_writer(
    client: Client,
    instance: String,
    stop: CancellationToken,
) -> mpsc::UnboundedSender<Notice> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
    tokio::spawn(async move {
        loop {
            let notice = tokio::select! {
                _ = stop.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            let object = &notice.regarding;
            let api: Api<Event> = Api::namespaced(client.clone(), &object.namespace);
            let event = event(&notice, &instance);
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(
                    "cannot write an Event on {} {}/{} ({e}); the log line above says the same (check RBAC: create events in events.k8s.io)",
                    object.kind.as_str(),
                    object.namespace,
                    object.name
                );
            }
        }
    });
    tx
}

fn event(notice: &Notice, instance: &str) -> Event {
    // The API server caps notes at 1 kB.
    let mut note = notice.note.clone();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push('…');
    }
    let object = &notice.regarding;
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", object.name)),
            namespace: Some(object.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        reporting_controller: Some(CONTROLLER.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        action: Some("Route".to_owned()),
        reason: Some(notice.reason.to_owned()),
        type_: Some(if notice.warning { "Warning" } else { "Normal" }.to_owned()),
        note: Some(note),
        regarding: Some(ObjectReference {
            api_version: Some(object.kind.api_version().to_owned()),
            kind: Some(object.kind.as_str().to_owned()),
            namespace: Some(object.namespace.clone()),
            name: Some(object.name.clone()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn log_lines_are_sorted_by_object_and_the_refusal_is_not_repeated() {
        let lines = [
            "Ingress shop/a: annotation x is unknown; its paths answer 503 until it is fixed"
                .to_owned(),
            "Ingress shop/a: Secret shop/t does not exist".to_owned(),
            "Ingress shop/b: annotation proxy-buffer-size is not supported and is ignored"
                .to_owned(),
            "ConfigMap edge/tcp: cannot listen on 0.0.0.0:22".to_owned(),
            "ConfigMap edge/controller (--configmap) does not exist".to_owned(),
        ];
        let all = findings(&lines, &refused(&[("shop/a", "annotation x is unknown")]));
        let a = &all[&Regarding {
            kind: Kind::Ingress,
            namespace: "shop".into(),
            name: "a".into(),
        }];
        assert_eq!(a.refused.as_deref(), Some("annotation x is unknown"));
        assert_eq!(
            a.problems,
            BTreeSet::from(["Secret shop/t does not exist".to_owned()])
        );
        assert_eq!(
            all.len(),
            3,
            "a line about no one object is left out: {all:?}"
        );
    }

    #[test]
    fn only_changes_make_events() {
        let a = findings(&[], &refused(&[("shop/a", "annotation x refused")]));
        let b = findings(
            &["Ingress shop/b: annotation y is ignored".to_owned()],
            &BTreeMap::new(),
        );
        assert!(changes(&a, &a).is_empty(), "a refusal is told once");
        let got = changes(&a, &b);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (
                got[0].regarding.name.as_str(),
                got[0].warning,
                got[0].reason
            ),
            ("b", true, "Differs")
        );
        assert_eq!(
            (
                got[1].regarding.name.as_str(),
                got[1].warning,
                got[1].reason
            ),
            ("a", false, "Served")
        );
        // Refused for another reason: told again.
        let a2 = findings(&[], &refused(&[("shop/a", "annotation z refused")]));
        assert_eq!(changes(&a, &a2).len(), 1);
        // Its differences gone: a Normal Event says it is served as written.
        let got = changes(&b, &Findings::new());
        assert_eq!(
            (got.len(), got[0].warning, got[0].reason),
            (1, false, "Served")
        );
        assert!(got[0].note.contains("as written"), "{:?}", got[0]);
        let c = findings(
            &["ConfigMap edge/tcp: cannot listen on 0.0.0.0:22".to_owned()],
            &BTreeMap::new(),
        );
        let got = changes(&c, &Findings::new());
        assert_eq!((got[0].warning, got[0].reason), (false, "Applied"));
        let got = changes(&Findings::new(), &c);
        assert_eq!(
            (got[0].regarding.kind, got[0].reason),
            (Kind::ConfigMap, "NotApplied")
        );
        let e = event(&got[0], "r1");
        let about = e.regarding.unwrap();
        assert_eq!(
            (about.kind.as_deref(), about.api_version.as_deref()),
            (Some("ConfigMap"), Some("v1"))
        );
        let long = "x".repeat(2000);
        let e = event(
            &changes(
                &Findings::new(),
                &findings(&[], &refused(&[("s/n", &long)])),
            )[0],
            "r1",
        );
        assert!(e.note.unwrap().len() <= 1003);
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
}
