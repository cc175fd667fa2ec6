//! Endpoints written as names (the file's `endpoints: ["db.internal:5432"]`, an
//! `auth-url` host that is not a Service): resolved through DNS with hickory, re-resolved
//! when the answer's TTL runs out (or `resolver.valid`), and published like discovered
//! endpoints. A failed lookup keeps the addresses last published and is logged once per
//! change, not once per retry.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use gatehouse_config::{Config, NamedEndpoint, ResolverSettings};
use hickory_resolver::{
    config::{NameServerConfigGroup, ResolverConfig, ResolverOpts},
    name_server::TokioConnectionProvider,
    TokioResolver,
};
use tokio::{sync::mpsc, task::JoinHandle};

/// Answers are used at least this long (a TTL of 0 must not spin the loop)...
const MIN_VALID: Duration = Duration::from_secs(1);
/// ...and at most this long, so a name that moves is followed within minutes whatever
/// its TTL says.
const MAX_VALID: Duration = Duration::from_secs(300);
/// After a failed lookup, the next try.
const RETRY: Duration = Duration::from_secs(5);

/// New addresses for a service's names.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    pub service: String,
    pub addrs: Vec<SocketAddr>,
}

/// Keeps one resolving task per service with names, following the served configuration.
pub struct NameResolution {
    settings: Option<ResolverSettings>,
    tasks: BTreeMap<String, (Vec<NamedEndpoint>, JoinHandle<()>)>,
    tx: mpsc::UnboundedSender<Resolved>,
}

impl NameResolution {
    /// A resolution with nothing to resolve yet, and where its answers arrive.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Resolved>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            NameResolution {
                settings: None,
                tasks: BTreeMap::new(),
                tx,
            },
            rx,
        )
    }

    /// Resolves the names of `config`'s services: new ones start, changed ones restart,
    /// those gone stop. Cheap when nothing changed.
    pub fn follow(&mut self, config: &Config) {
        if self.settings.as_ref() != Some(&config.resolver) {
            self.stop_all();
            self.settings = Some(config.resolver.clone());
        }
        let wanted: BTreeMap<&str, &Vec<NamedEndpoint>> = config
            .services
            .iter()
            .filter(|s| !s.names.is_empty())
            .map(|s| (s.name.as_str(), &s.names))
            .collect();
        self.tasks.retain(|service, (names, task)| {
            let keep = wanted.get(service.as_str()) == Some(&&*names);
            if !keep {
                task.abort();
            }
            keep
        });
        if wanted.len() == self.tasks.len() {
            return;
        }
        let resolver = match resolver(&config.resolver) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot set up the DNS resolver ({e}); services with endpoint names have no endpoints. Check /etc/resolv.conf or set `resolver.servers`");
                return;
            }
        };
        for (service, names) in wanted {
            if self.tasks.contains_key(service) {
                continue;
            }
            let task = tokio::spawn(follow_names(
                resolver.clone(),
                service.to_owned(),
                names.clone(),
                config.resolver.valid,
                self.tx.clone(),
            ));
            self.tasks.insert(service.to_owned(), (names.clone(), task));
        }
    }

    fn stop_all(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.tasks) {
            task.abort();
        }
    }
}

impl Drop for NameResolution {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The resolver `settings` ask for: their servers, else the system's configuration.
fn resolver(settings: &ResolverSettings) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| e.to_string())?
    } else {
        let ips: Vec<_> = settings.servers.iter().map(|a| a.ip()).collect();
        let port = settings.servers[0].port();
        let group = NameServerConfigGroup::from_ips_clear(&ips, port, true);
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            provider,
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // We re-resolve by TTL ourselves; hickory's cache would only hide changes.
    opts.cache_size = 0;
    Ok(builder.build())
}

/// Resolves `names` for `service` until aborted, sending each change of addresses.
async fn follow_names(
    resolver: TokioResolver,
    service: String,
    names: Vec<NamedEndpoint>,
    valid: Option<Duration>,
    tx: mpsc::UnboundedSender<Resolved>,
) {
    let mut published: Option<Vec<SocketAddr>> = None;
    let mut failing: Option<String> = None;
    loop {
        let (addrs, expires, failure) = lookup(&resolver, &names).await;
        let wait = match failure {
            None => {
                if failing.take().is_some() {
                    tracing::info!(service, "endpoint names resolve again: {addrs:?}");
                }
                valid.unwrap_or(expires).clamp(MIN_VALID, MAX_VALID)
            }
            Some(why) => {
                if failing.as_ref() != Some(&why) {
                    tracing::warn!(service, "cannot resolve {why}; keeping the addresses last resolved ({}), trying again every {RETRY:?}", published.as_ref().map_or(0, Vec::len));
                    failing = Some(why);
                }
                RETRY
            }
        };
        // A partial answer replaces the last one only when there was none.
        if (failing.is_none() || published.is_none()) && published.as_ref() != Some(&addrs) {
            if tx
                .send(Resolved {
                    service: service.clone(),
                    addrs: addrs.clone(),
                })
                .is_err()
            {
                return;
            }
            published = Some(addrs);
        }
        tokio::time::sleep(wait).await;
    }
}

/// The addresses of every name (sorted), how long they are valid, and what failed.
async fn lookup(
    resolver: &TokioResolver,
    names: &[NamedEndpoint],
) -> (Vec<SocketAddr>, Duration, Option<String>) {
    let mut addrs = Vec::new();
    let mut valid = MAX_VALID;
    let mut failures = Vec::new();
    for name in names {
        match resolver.lookup_ip(name.host.as_str()).await {
            Ok(found) => {
                valid = valid.min(
                    found
                        .valid_until()
                        .saturating_duration_since(Instant::now()),
                );
                addrs.extend(found.iter().map(|ip| SocketAddr::new(ip, name.port)));
            }
            Err(e) => failures.push(format!("{name} ({e})")),
        }
    }
    addrs.sort();
    addrs.dedup();
    let failure = (!failures.is_empty()).then(|| failures.join(", "));
    (addrs, valid, failure)
}
