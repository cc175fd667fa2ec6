//! A Kubernetes API test server: the real wire protocol for list and watch (resourceVersions,
//! chunked watch streams of ADDED/MODIFIED/DELETED/BOOKMARK, 410 Gone as an ERROR event,
//! watch timeouts, dropped streams), with objects a test changes. kube-rs talks to it over
//! HTTP through a generated kubeconfig, exactly as it would to a cluster.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::watch};

/// A resource type the server knows: its URL group path, plural and list kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kind {
    pub prefix: &'static str,
    pub plural: &'static str,
    pub list_kind: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
}

pub const ENDPOINT_SLICES: Kind = Kind {
    prefix: "/apis/discovery.k8s.io/v1",
    plural: "endpointslices",
    list_kind: "EndpointSliceList",
    api_version: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
};
pub const SERVICES: Kind = Kind {
    prefix: "/api/v1",
    plural: "services",
    list_kind: "ServiceList",
    api_version: "v1",
    kind: "Service",
};

pub const INGRESSES: Kind = Kind {
    prefix: "/apis/networking.k8s.io/v1",
    plural: "ingresses",
    list_kind: "IngressList",
    api_version: "networking.k8s.io/v1",
    kind: "Ingress",
};
/// Cluster-scoped: objects have no namespace.
pub const INGRESS_CLASSES: Kind = Kind {
    prefix: "/apis/networking.k8s.io/v1",
    plural: "ingressclasses",
    list_kind: "IngressClassList",
    api_version: "networking.k8s.io/v1",
    kind: "IngressClass",
};
pub const SECRETS: Kind = Kind {
    prefix: "/api/v1",
    plural: "secrets",
    list_kind: "SecretList",
    api_version: "v1",
    kind: "Secret",
};

pub const CONFIG_MAPS: Kind = Kind {
    prefix: "/api/v1",
    plural: "configmaps",
    list_kind: "ConfigMapList",
    api_version: "v1",
    kind: "ConfigMap",
};

const KINDS: [Kind; 6] = [
    ENDPOINT_SLICES,
    SERVICES,
    INGRESSES,
    INGRESS_CLASSES,
    SECRETS,
    CONFIG_MAPS,
];

struct Event {
    rv: u64,
    kind: Kind,
    kind_of_change: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (kind, namespace, name) → object with metadata.resourceVersion set.
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    /// Requests answered with 503 while set (the API server is "down").
    down: bool,
    lists: u64,
    watches: u64,
    /// When each event was first written to a watch stream, by resourceVersion (for
    /// propagation benchmarks).
    sent_at: std::collections::HashMap<u64, std::time::Instant>,
    /// (verb, resource) of every request, as RBAC names them.
    seen: std::collections::BTreeSet<(&'static str, &'static str)>,
}

/// The running test API server.
#[derive(Clone)]
pub struct KubeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped on every change (wakes watch streams) and on `drop_watches` (ends them).
    changes: watch::Sender<(u64, u64)>,
}

impl KubeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changes, _) = watch::channel((0, 0));
        let api = KubeApi {
            addr,
            state: Arc::new(Mutex::new(State {
                rv: 1,
                ..State::default()
            })),
            changes,
        };
        let server = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // As Go's net/http does: no Nagle delay on small watch events.
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        api
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", self.addr.port()));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{ server: \"http://{}\" }}\ncontexts:\n- name: test\n  context: {{ cluster: test, user: test, namespace: default }}\ncurrent-context: test\nusers:\n- name: test\n  user: {{ token: test-token }}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    /// Creates or replaces an object (`metadata.namespace` and `.name` required); returns
    /// its new resourceVersion.
    pub fn apply(&self, kind: Kind, mut object: Value) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        object["apiVersion"] = kind.api_version.into();
        object["kind"] = kind.kind.into();
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let key = (
            kind,
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            object["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        );
        let change = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects.insert(key, object.clone());
        s.history.push(Event {
            rv,
            kind,
            kind_of_change: change,
            object,
        });
        drop(s);
        self.changes.send_modify(|c| c.0 += 1);
        rv
    }

    /// When the event of resourceVersion `rv` was first written to a watch stream.
    pub fn sent_at(&self, rv: u64) -> Option<std::time::Instant> {
        self.state.lock().unwrap().sent_at.get(&rv).copied()
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(mut object) = s
            .objects
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
        else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        s.history.push(Event {
            rv,
            kind,
            kind_of_change: "DELETED",
            object,
        });
        drop(s);
        self.changes.send_modify(|c| c.0 += 1);
    }

    /// Forgets the history, as etcd compaction does: a watch from any resourceVersion
    /// handed out so far gets 410 Gone; a fresh list gets a new one that is fine.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        s.oldest = s.rv + 1;
        s.history.clear();
    }

    /// Ends every open watch stream, as an API server restart or a load balancer would.
    pub fn drop_watches(&self) {
        self.changes.send_modify(|c| c.1 += 1);
    }

    /// While down, every request gets 503 and open watches end.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
        if down {
            self.drop_watches();
        }
    }

    /// Every (verb, resource) requested so far, as an RBAC rule names them.
    pub fn verbs_seen(&self) -> std::collections::BTreeSet<(&'static str, &'static str)> {
        self.state.lock().unwrap().seen.clone()
    }

    /// (lists, watches) served so far.
    pub fn requests(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        (s.lists, s.watches)
    }

    fn handle(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_owned();
        let query: BTreeMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        if self.state.lock().unwrap().down {
            return status(StatusCode::SERVICE_UNAVAILABLE, "down for the test");
        }
        let Some((kind, namespace)) = KINDS.iter().find_map(|k| route(k, &path)) else {
            return status(StatusCode::NOT_FOUND, "unknown path");
        };
        let selector = query.get("labelSelector").cloned().unwrap_or_default();
        let fields = query.get("fieldSelector").cloned().unwrap_or_default();
        let matches = move |o: &Value| {
            let ns_ok = namespace
                .as_deref()
                .is_none_or(|ns| o["metadata"]["namespace"] == ns);
            ns_ok
                && selector_matches(&selector, &o["metadata"]["labels"])
                && fields_match(&fields, o)
        };
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        self.state
            .lock()
            .unwrap()
            .seen
            .insert((if watching { "watch" } else { "list" }, kind.plural));
        if watching {
            let from: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let bookmarks = query
                .get("allowWatchBookmarks")
                .is_some_and(|v| v == "true");
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(290u64);
            return self.watch(kind, from, bookmarks, Duration::from_secs(timeout), matches);
        }
        let mut s = self.state.lock().unwrap();
        s.lists += 1;
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((k, _, _), o)| *k == kind && matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        let body = json!({
            "apiVersion": kind.api_version,
            "kind": kind.list_kind,
            "metadata": { "resourceVersion": s.rv.to_string() },
            "items": items,
        });
        json_response(&body)
    }

    fn watch(
        &self,
        kind: Kind,
        from: u64,
        bookmarks: bool,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool + Send + 'static,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let state = self.state.clone();
        let mut changes = self.changes.subscribe();
        let dropped_at_start = changes.borrow().1;
        state.lock().unwrap().watches += 1;
        tokio::spawn(async move {
            let line = |v: Value| Bytes::from(format!("{v}\n"));
            let mut sent = from;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let (events, gone, rv) = {
                    let s = state.lock().unwrap();
                    if from != 0 && from + 1 < s.oldest {
                        (Vec::new(), true, s.rv)
                    } else {
                        // History is in resourceVersion order: skip what was sent already.
                        let start = s.history.partition_point(|e| e.rv <= sent);
                        let events: Vec<(u64, Value)> = s.history[start..]
                            .iter()
                            .filter(|e| e.kind == kind && matches(&e.object))
                            .map(|e| {
                                (
                                    e.rv,
                                    json!({ "type": e.kind_of_change, "object": e.object }),
                                )
                            })
                            .collect();
                        (events, false, s.rv)
                    }
                };
                if gone {
                    let status = json!({ "type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": format!("too old resource version: {from}"),
                        "reason": "Expired", "code": 410 } });
                    let _ = tx.send(line(status)).await;
                    return;
                }
                for (rv, e) in events {
                    if tx.send(line(e)).await.is_err() {
                        return;
                    }
                    let now = std::time::Instant::now();
                    state.lock().unwrap().sent_at.entry(rv).or_insert(now);
                }
                sent = rv;
                if bookmarks {
                    let bookmark = json!({ "type": "BOOKMARK", "object": {
                        "kind": kind.kind, "apiVersion": kind.api_version,
                        "metadata": { "resourceVersion": rv.to_string() } } });
                    if tx.send(line(bookmark)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() || changes.borrow().1 != dropped_at_start {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
        let stream = futures_rx(rx);
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        resp
    }
}

fn futures_rx(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    struct Rx(tokio::sync::mpsc::Receiver<Bytes>);
    impl futures_core::Stream for Rx {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }
    Rx(rx)
}

fn route(kind: &Kind, path: &str) -> Option<(Kind, Option<String>)> {
    let rest = path.strip_prefix(kind.prefix)?;
    if rest == format!("/{}", kind.plural) {
        return Some((*kind, None));
    }
    let rest = rest.strip_prefix("/namespaces/")?;
    let (ns, plural) = rest.split_once('/')?;
    (plural == kind.plural).then(|| (*kind, Some(ns.to_owned())))
}

fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k] == v,
            None => labels.get(term).is_some(),
        })
}

/// Field selectors of the form `a.b=value` (the API server supports few fields per kind;
/// Gatehouse uses `type` on Secrets).
fn fields_match(selector: &str, object: &Value) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((path, v)) => path
                .split('.')
                .fold(object, |o, key| &o[key])
                .as_str()
                .is_some_and(|actual| actual == v),
            None => false,
        })
}

fn json_response(v: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

fn status(code: StatusCode, message: &str) -> Response<BoxBody<Bytes, Infallible>> {
    let mut resp = json_response(&json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "code": code.as_u16() }));
    *resp.status_mut() = code;
    resp
}
