//! A Kubernetes API test server: the real wire protocol for list (paginated with
//! limit/continue), watch (resourceVersions, chunked ADDED/MODIFIED/DELETED/BOOKMARK
//! events, 410 Gone as an ERROR event, watch timeouts, dropped streams), single-object get,
//! create, update, patch and delete, over HTTP or TLS, with a bearer token checked on every
//! request. kube-rs talks to it through a generated kubeconfig, exactly as it would to a
//! cluster. Every request is recorded with its method, so a test sees each get, write and
//! Event as well as each list and watch (what RBAC must allow).
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
};

/// The bearer token every kubeconfig this server writes carries, and every request must.
pub const TOKEN: &str = "test-token";

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

/// Events as Gatehouse would write them (events.k8s.io), and the older core kind.
pub const EVENTS: Kind = Kind {
    prefix: "/apis/events.k8s.io/v1",
    plural: "events",
    list_kind: "EventList",
    api_version: "events.k8s.io/v1",
    kind: "Event",
};
pub const CORE_EVENTS: Kind = Kind {
    prefix: "/api/v1",
    plural: "events",
    list_kind: "EventList",
    api_version: "v1",
    kind: "Event",
};
/// Leader-election leases.
pub const LEASES: Kind = Kind {
    prefix: "/apis/coordination.k8s.io/v1",
    plural: "leases",
    list_kind: "LeaseList",
    api_version: "coordination.k8s.io/v1",
    kind: "Lease",
};

/// Pods (for the nodes Gatehouse's own replicas run on) and Nodes (cluster-scoped).
pub const PODS: Kind = Kind {
    prefix: "/api/v1",
    plural: "pods",
    list_kind: "PodList",
    api_version: "v1",
    kind: "Pod",
};
pub const NODES: Kind = Kind {
    prefix: "/api/v1",
    plural: "nodes",
    list_kind: "NodeList",
    api_version: "v1",
    kind: "Node",
};

const KINDS: [Kind; 11] = [
    PODS,
    NODES,
    ENDPOINT_SLICES,
    SERVICES,
    INGRESSES,
    INGRESS_CLASSES,
    SECRETS,
    CONFIG_MAPS,
    EVENTS,
    CORE_EVENTS,
    LEASES,
];

impl Kind {
    /// The API group, as RBAC rules name it ("" for the core group).
    pub fn group(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}

struct Event {
    rv: u64,
    kind: Kind,
    kind_of_change: &'static str,
    object: Value,
}

/// One request as the server received it, named the way an RBAC rule names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    /// The HTTP method.
    pub method: String,
    /// get, list, watch, create, update, patch or delete; "unknown" for a path the server
    /// does not serve, "unauthorized" for a request without the bearer token.
    pub verb: &'static str,
    /// The API group ("" for the core group).
    pub group: &'static str,
    /// The resource's plural, with `/status` for that subresource; the path when unknown.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (kind, namespace, name) → object with metadata.resourceVersion set.
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this, and list continuations of a list served
    /// before it, get 410 Gone.
    oldest: u64,
    /// Requests answered with 503 while set (the API server is "down").
    down: bool,
    /// When each event was first written to a watch stream, by resourceVersion (for
    /// propagation benchmarks).
    sent_at: std::collections::HashMap<u64, std::time::Instant>,
    /// Every request, in arrival order.
    seen: Vec<Seen>,
}

/// The running test API server.
#[derive(Clone)]
pub struct KubeApi {
    pub addr: SocketAddr,
    /// The CA that signed the server's certificate, when it serves TLS.
    ca_pem: Option<String>,
    state: Arc<Mutex<State>>,
    /// Bumped on every change (wakes watch streams) and on `drop_watches` (ends them).
    changes: watch::Sender<(u64, u64)>,
}

/// A resource path taken apart: `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]`.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

impl KubeApi {
    /// A server on plain HTTP.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// A server on HTTPS, with a certificate for 127.0.0.1 from a CA of its own that its
    /// kubeconfig carries (`certificate-authority-data`).
    pub async fn start_tls() -> Self {
        let ca = super::tls::TestCa::new();
        let (cert, key) = ca.leaf(&["127.0.0.1"], (-1, 30));
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let mut api = Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
        api.ca_pem = Some(ca.pem);
        api
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changes, _) = watch::channel((0, 0));
        let api = KubeApi {
            addr,
            ca_pem: None,
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
                if server.state.lock().unwrap().down {
                    continue;
                }
                // As Go's net/http does: no Nagle delay on small watch events.
                let _ = stream.set_nodelay(true);
                let (server, tls) = (server.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                server.serve_connection(stream).await;
                            }
                        }
                        None => server.serve_connection(stream).await,
                    }
                });
            }
        });
        api
    }

    async fn serve_connection(self, io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) {
        let svc = hyper::service::service_fn(move |req| {
            let server = self.clone();
            async move { server.handle(req).await }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }

    /// A kubeconfig file pointing at this server, with the bearer token.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", self.addr.port()));
        let cluster = match &self.ca_pem {
            Some(ca) => format!(
                "{{ server: \"https://{}\", certificate-authority-data: \"{}\" }}",
                self.addr,
                base64::engine::general_purpose::STANDARD.encode(ca)
            ),
            None => format!("{{ server: \"http://{}\" }}", self.addr),
        };
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {cluster}\ncontexts:\n- name: test\n  context: {{ cluster: test, user: test, namespace: default }}\ncurrent-context: test\nusers:\n- name: test\n  user: {{ token: {TOKEN} }}\n"
            ),
        )
        .unwrap();
        path
    }

    /// Creates or replaces an object (`metadata.namespace` and `.name` required); returns
    /// its new resourceVersion.
    pub fn apply(&self, kind: Kind, object: Value) -> u64 {
        let key = key_of(kind, &object);
        let (rv, _) = self.store(kind, key, object);
        rv
    }

    /// The stored object, if any.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Stores `object` under `key` as a new resourceVersion and tells the watches.
    fn store(&self, kind: Kind, key: (Kind, String, String), mut object: Value) -> (u64, Value) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        object["apiVersion"] = kind.api_version.into();
        object["kind"] = kind.kind.into();
        object["metadata"]["resourceVersion"] = rv.to_string().into();
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
            object: object.clone(),
        });
        drop(s);
        self.changes.send_modify(|c| c.0 += 1);
        (rv, object)
    }

    /// When the event of resourceVersion `rv` was first written to a watch stream.
    pub fn sent_at(&self, rv: u64) -> Option<std::time::Instant> {
        self.state.lock().unwrap().sent_at.get(&rv).copied()
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let mut s = self.state.lock().unwrap();
        let mut object = s
            .objects
            .remove(&(kind, namespace.to_owned(), name.to_owned()))?;
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        s.history.push(Event {
            rv,
            kind,
            kind_of_change: "DELETED",
            object: object.clone(),
        });
        drop(s);
        self.changes.send_modify(|c| c.0 += 1);
        Some(object)
    }

    /// Forgets the history, as etcd compaction does: a watch from any resourceVersion
    /// handed out so far, or a list continued from such a page, gets 410 Gone; a fresh
    /// list gets a new one that is fine.
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

    /// While down, the server is unreachable as a restarting API server is: new
    /// connections are closed at once, requests on open ones end the connection without an
    /// answer, and open watches end.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
        if down {
            self.drop_watches();
        }
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Every (verb, resource) requested so far, as an RBAC rule names them.
    pub fn verbs_seen(&self) -> BTreeSet<(&'static str, String)> {
        self.seen()
            .into_iter()
            .map(|s| (s.verb, s.resource))
            .collect()
    }

    /// How many requests of `verb` on `resource` were made so far (lists count pages).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.verb == verb && s.resource == resource)
            .count()
    }

    /// (lists, watches) served so far, every resource together.
    pub fn requests(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        let count = |verb| s.seen.iter().filter(|s| s.verb == verb).count() as u64;
        (count("list"), count("watch"))
    }

    async fn handle(&self, req: Request<Incoming>) -> Result<Answer, std::io::Error> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let query: BTreeMap<String, String> =
            form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let target = parse_path(&path);
        let authorized = parts
            .headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
        let verb = match (&target, &parts.method) {
            _ if !authorized => "unauthorized",
            (None, _) => "unknown",
            (Some(t), &Method::GET) if t.name.is_some() => "get",
            (Some(_), &Method::GET) if watching => "watch",
            (Some(_), &Method::GET) => "list",
            (Some(_), &Method::POST) => "create",
            (Some(_), &Method::PUT) => "update",
            (Some(_), &Method::PATCH) => "patch",
            (Some(_), &Method::DELETE) => "delete",
            (Some(_), _) => "unknown",
        };
        let seen = Seen {
            method: parts.method.to_string(),
            verb,
            group: target.as_ref().map_or("", |t| t.kind.group()),
            resource: match &target {
                Some(t) => match &t.subresource {
                    Some(sub) => format!("{}/{sub}", t.kind.plural),
                    None => t.kind.plural.to_owned(),
                },
                None => path.clone(),
            },
            namespace: target.as_ref().and_then(|t| t.namespace.clone()),
            name: target.as_ref().and_then(|t| t.name.clone()),
        };
        let down = {
            let mut s = self.state.lock().unwrap();
            s.seen.push(seen);
            s.down
        };
        if down {
            // An error from the service makes hyper drop the connection unanswered.
            return Err(std::io::Error::other("down for the test"));
        }
        Ok(self
            .answer(verb, target, authorized, &query, parts.headers, body)
            .await)
    }

    async fn answer(
        &self,
        verb: &'static str,
        target: Option<Target>,
        authorized: bool,
        query: &BTreeMap<String, String>,
        headers: http::HeaderMap,
        body: Incoming,
    ) -> Answer {
        if !authorized {
            return status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "no valid bearer token",
            );
        }
        let Some(target) = target else {
            return status(StatusCode::NOT_FOUND, "NotFound", "unknown path");
        };
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body"),
        };
        match verb {
            "watch" => self.watch_request(&target, query),
            "list" => self.list(&target, query),
            "get" => match self.get_target(&target) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => not_found(&target),
            },
            "create" => self.create(&target, &body),
            "update" => self.update(&target, &body),
            "patch" => self.patch(&target, &body, &content_type),
            "delete" => match self.delete(
                target.kind,
                target.namespace.as_deref().unwrap_or(""),
                target.name.as_deref().unwrap_or(""),
            ) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => not_found(&target),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not allowed",
            ),
        }
    }

    fn get_target(&self, t: &Target) -> Option<Value> {
        self.get(
            t.kind,
            t.namespace.as_deref().unwrap_or(""),
            t.name.as_deref()?,
        )
    }

    fn key(t: &Target, name: &str) -> (Kind, String, String) {
        (
            t.kind,
            t.namespace.clone().unwrap_or_default(),
            name.to_owned(),
        )
    }

    fn create(&self, t: &Target, body: &[u8]) -> Answer {
        let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let name = match object["metadata"]["name"].as_str() {
            Some(n) => n.to_owned(),
            None => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{}", self.state.lock().unwrap().rv + 1),
                None => {
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "name required")
                }
            },
        };
        let key = Self::key(t, &name);
        if self.state.lock().unwrap().objects.contains_key(&key) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{name} already exists"),
            );
        }
        object["metadata"]["name"] = name.clone().into();
        if let Some(ns) = &t.namespace {
            object["metadata"]["namespace"] = ns.clone().into();
        }
        object["metadata"]["uid"] = format!("uid-{name}").into();
        if object["metadata"]["creationTimestamp"].is_null() {
            object["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        let (_, stored) = self.store(t.kind, key, object);
        json_response(StatusCode::CREATED, &stored)
    }

    fn update(&self, t: &Target, body: &[u8]) -> Answer {
        let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let Some(current) = self.get_target(t) else {
            return not_found(t);
        };
        let sent_rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !sent_rv.is_empty() && sent_rv != current["metadata"]["resourceVersion"] {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            );
        }
        if t.subresource.as_deref() == Some("status") {
            let status_only = object["status"].take();
            object = current;
            object["status"] = status_only;
        }
        let (_, stored) = self.store(
            t.kind,
            Self::key(t, t.name.as_deref().unwrap_or("")),
            object,
        );
        json_response(StatusCode::OK, &stored)
    }

    /// JSON merge patch (RFC 7386); strategic-merge and server-side-apply bodies are read
    /// the same way, which is what they mean for the plain fields Gatehouse writes.
    fn patch(&self, t: &Target, body: &[u8], content_type: &str) -> Answer {
        let Ok(mut patch) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let current = match self.get_target(t) {
            Some(c) => c,
            // Server-side apply creates what is missing.
            None if content_type.starts_with("application/apply-patch") => json!({
                "metadata": { "name": t.name, "namespace": t.namespace }
            }),
            None => return not_found(t),
        };
        if t.subresource.as_deref() == Some("status") {
            patch = json!({ "status": patch["status"].take() });
        }
        let mut object = current;
        merge_patch(&mut object, &patch);
        let (_, stored) = self.store(
            t.kind,
            Self::key(t, t.name.as_deref().unwrap_or("")),
            object,
        );
        json_response(StatusCode::OK, &stored)
    }

    /// A list, in pages when the client asks with `limit` (kube-rs's watcher asks for 500).
    /// A continue token names the list's resourceVersion and the offset reached; items
    /// changed between pages show as they are now, and the watch from the list's
    /// resourceVersion replays those changes.
    fn list(&self, t: &Target, query: &BTreeMap<String, String>) -> Answer {
        let matches = selector(t, query);
        let s = self.state.lock().unwrap();
        let (list_rv, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => match token.split_once(':').and_then(|(rv, off)| {
                Some((rv.parse::<u64>().ok()?, off.parse::<usize>().ok()?))
            }) {
                Some((rv, _)) if rv + 1 < s.oldest => {
                    return status(
                        StatusCode::GONE,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result.",
                    )
                }
                Some(parsed) => parsed,
                None => return status(StatusCode::BAD_REQUEST, "BadRequest", "bad continue token"),
            },
            None => (s.rv, 0),
        };
        let all: Vec<&Value> = s
            .objects
            .iter()
            .filter(|((k, _, _), o)| *k == t.kind && matches(o))
            .map(|(_, o)| o)
            .collect();
        let limit = query
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let rest = all.get(offset..).unwrap_or_default();
        let page: Vec<Value> = rest.iter().take(limit).map(|o| (*o).clone()).collect();
        let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
        let remaining = rest.len() - page.len();
        if remaining > 0 {
            metadata["continue"] = format!("{list_rv}:{}", offset + page.len()).into();
            metadata["remainingItemCount"] = remaining.into();
        }
        let body = json!({
            "apiVersion": t.kind.api_version,
            "kind": t.kind.list_kind,
            "metadata": metadata,
            "items": page,
        });
        json_response(StatusCode::OK, &body)
    }

    fn watch_request(&self, t: &Target, query: &BTreeMap<String, String>) -> Answer {
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
        self.watch(
            t.kind,
            from,
            bookmarks,
            Duration::from_secs(timeout),
            selector(t, query),
        )
    }

    fn watch(
        &self,
        kind: Kind,
        from: u64,
        bookmarks: bool,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool + Send + 'static,
    ) -> Answer {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let state = self.state.clone();
        let mut changes = self.changes.subscribe();
        let dropped_at_start = changes.borrow().1;
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

fn key_of(kind: Kind, object: &Value) -> (Kind, String, String) {
    (
        kind,
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        object["metadata"]["name"].as_str().unwrap_or("").to_owned(),
    )
}

/// The namespace, label and field selection of a list or watch.
fn selector(
    t: &Target,
    query: &BTreeMap<String, String>,
) -> impl Fn(&Value) -> bool + Send + 'static {
    let namespace = t.namespace.clone();
    let labels = query.get("labelSelector").cloned().unwrap_or_default();
    let fields = query.get("fieldSelector").cloned().unwrap_or_default();
    move |o: &Value| {
        namespace
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"] == ns)
            && selector_matches(&labels, &o["metadata"]["labels"])
            && fields_match(&fields, o)
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(fields) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
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

fn parse_path(path: &str) -> Option<Target> {
    KINDS.iter().find_map(|kind| {
        let rest = path.strip_prefix(kind.prefix)?.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        let (namespace, segments) = match segments.as_slice() {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            all => (None, all),
        };
        match segments {
            [plural] if *plural == kind.plural => Some((namespace, None, None)),
            [plural, name] if *plural == kind.plural => {
                Some((namespace, Some(name.to_string()), None))
            }
            [plural, name, sub] if *plural == kind.plural => {
                Some((namespace, Some(name.to_string()), Some(sub.to_string())))
            }
            _ => None,
        }
        .map(|(namespace, name, subresource)| Target {
            kind: *kind,
            namespace,
            name,
            subresource,
        })
    })
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
/// Gatehouse uses `type` on Secrets and `metadata.name` on ConfigMaps).
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

fn json_response(code: StatusCode, v: &Value) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

fn not_found(t: &Target) -> Answer {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "{} \"{}\" not found",
            t.kind.plural,
            t.name.as_deref().unwrap_or("")
        ),
    )
}

/// A `Status` object, as the API server answers errors.
fn status(code: StatusCode, reason: &str, message: &str) -> Answer {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16() }),
    )
}
