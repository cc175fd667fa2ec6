//! Events on Ingresses, so their owners learn from `kubectl describe ingress` what the
//! proxy's log says: a Warning when an Ingress is refused (its paths answer 503), naming
//! what and why in the log's words, and a Normal event when it is served again. Only
//! changes are reported, so a refusal is one Event however often the routes are rebuilt.

use std::collections::BTreeMap;

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

/// Refused Ingresses: `namespace/name` → why.
pub type Refusals = BTreeMap<String, String>;

/// One Event to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub namespace: String,
    pub name: String,
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Events that tell the change from `before` to `now`.
pub fn changes(before: &Refusals, now: &Refusals) -> Vec<Notice> {
    let split = |key: &str| {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        (ns.to_owned(), name.to_owned())
    };
    let mut out = Vec::new();
    for (key, why) in now {
        if before.get(key) != Some(why) {
            let (namespace, name) = split(key);
            out.push(Notice {
                namespace,
                name,
                warning: true,
                reason: "Refused",
                note: why.clone(),
            });
        }
    }
    for key in before.keys().filter(|k| !now.contains_key(*k)) {
        let (namespace, name) = split(key);
        out.push(Notice {
            namespace,
            name,
            warning: false,
            reason: "Served",
            note: "served again: nothing in it is refused now".to_owned(),
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
            let api: Api<Event> = Api::namespaced(client.clone(), &notice.namespace);
            let event = event(&notice, &instance);
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(
                    "cannot write an Event on Ingress {}/{} ({e}); the log line above says the same (check RBAC: create events in events.k8s.io)",
                    notice.namespace,
                    notice.name
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
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", notice.name)),
            namespace: Some(notice.namespace.clone()),
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
            api_version: Some("networking.k8s.io/v1".to_owned()),
            kind: Some("Ingress".to_owned()),
            namespace: Some(notice.namespace.clone()),
            name: Some(notice.name.clone()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_make_events() {
        let a = Refusals::from([("shop/a".to_owned(), "annotation x refused".to_owned())]);
        let b = Refusals::from([("shop/b".to_owned(), "annotation y refused".to_owned())]);
        assert!(changes(&a, &a).is_empty(), "a refusal is told once");
        let got = changes(&a, &b);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].name.as_str(), got[0].warning), ("b", true));
        assert_eq!(
            (got[1].name.as_str(), got[1].warning, got[1].reason),
            ("a", false, "Served")
        );
        // Refused for another reason: told again.
        let a2 = Refusals::from([("shop/a".to_owned(), "annotation z refused".to_owned())]);
        assert_eq!(changes(&a, &a2).len(), 1);
        let long = "x".repeat(2000);
        let e = event(
            &changes(
                &Refusals::new(),
                &Refusals::from([("s/n".to_owned(), long)]),
            )[0],
            "r1",
        );
        assert!(e.note.unwrap().len() <= 1003);
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
}
