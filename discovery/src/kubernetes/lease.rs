//! Leader election through a coordination.k8s.io Lease, so one replica at a time writes
//! what all would write alike (Ingress status). A replica holds the Lease by renewing it;
//! another takes it once it has seen no renewal for the Lease's duration (judged by its own
//! clock from when it last saw the record change, as client-go does, so clocks need not
//! agree). Writes carry the resourceVersion read, so two replicas cannot both take it.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    api::{Api, PostParams},
    Client,
};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

/// Which Lease, who we are, and how long a holder keeps it without renewing.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl Election {
    /// How often the Lease is read and, when held, renewed: well within its duration.
    fn period(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(100))
    }
}

/// The last Lease record seen, and when it was first seen as it is.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(Option<String>, Option<String>)>,
    since: Option<Instant>,
}

/// What one look at the Lease decides.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nobody holds it, it is ours, or its holder stopped renewing: write ourselves in.
    Take,
    /// Another replica holds it.
    Follow,
}

fn decide(lease: &Lease, me: &str, observed: &mut Observed, now: Instant) -> Step {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let record = (
        holder.clone(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
    );
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.since = Some(now);
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    match holder {
        None => Step::Take,
        Some(h) if h == me => Step::Take,
        Some(_)
            if observed
                .since
                .is_some_and(|s| now.duration_since(s) >= duration) =>
        {
            Step::Take
        }
        Some(_) => Step::Follow,
    }
}

/// Runs the election until `stop`; the receiver says whether this replica leads. On stop,
/// a leader gives the Lease up, so another takes over at once: await the handle before the
/// process exits.
pub fn spawn(
    client: Client,
    election: Election,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(client, election, tx, stop));
    (rx, task)
}

async fn run(
    client: Client,
    election: Election,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut observed = Observed::default();
    let mut last_renewal: Option<Instant> = None;
    let mut reported_error = false;
    loop {
        let now = Instant::now();
        let took = match api.get_opt(&election.name).await {
            Ok(None) => match api
                .create(&PostParams::default(), &record(&election, None, 0))
                .await
            {
                Ok(_) => true,
                // Another replica created it first: it leads.
                Err(kube::Error::Api(e)) if e.code == 409 => false,
                Err(e) => {
                    if !reported_error {
                        tracing::warn!(
                            "cannot create the leader election Lease {}/{}: {e}; no replica writes Ingress status or Events until it can (does the namespace exist? POD_NAMESPACE names it; RBAC: create leases)",
                            election.namespace,
                            election.name
                        );
                        reported_error = true;
                    }
                    false
                }
            },
            Ok(Some(lease)) => match decide(&lease, &election.identity, &mut observed, now) {
                Step::Take => {
                    let spec = lease.spec.clone().unwrap_or_default();
                    let ours = spec.holder_identity.as_deref() == Some(&election.identity);
                    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
                    let acquired = if ours { spec.acquire_time } else { None };
                    let mut next = record(&election, acquired, transitions);
                    next.metadata.resource_version = lease.metadata.resource_version.clone();
                    api.replace(&election.name, &PostParams::default(), &next)
                        .await
                        .is_ok()
                }
                Step::Follow => false,
            },
            Err(e) => {
                if !reported_error {
                    tracing::warn!(
                        "cannot read the leader election Lease {}/{}: {e}; retrying (check RBAC: get, create, update leases in coordination.k8s.io)",
                        election.namespace,
                        election.name
                    );
                    reported_error = true;
                }
                false
            }
        };
        if took {
            last_renewal = Some(now);
            reported_error = false;
        }
        // A leader that could not renew keeps leading until its Lease would expire.
        let leads = took || last_renewal.is_some_and(|r| now.duration_since(r) < election.duration);
        if leads != *leading.borrow() {
            match leads {
                true => tracing::info!(
                    "leading: this replica ({}) now writes Ingress status (Lease {}/{})",
                    election.identity,
                    election.namespace,
                    election.name
                ),
                false => tracing::info!(
                    "not leading: another replica holds Lease {}/{}",
                    election.namespace,
                    election.name
                ),
            }
            leading.send_replace(leads);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(election.period()) => {}
        }
    }
    if *leading.borrow() {
        release(&api, &election).await;
    }
}

/// Gives the Lease up (no holder), so another replica takes it without waiting.
async fn release(api: &Api<Lease>, election: &Election) {
    let Ok(Some(lease)) = api.get_opt(&election.name).await else {
        return;
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(&election.identity) {
        return;
    }
    spec.holder_identity = None;
    let released = Lease {
        metadata: lease.metadata.clone(),
        spec: Some(spec),
    };
    if api
        .replace(&election.name, &PostParams::default(), &released)
        .await
        .is_ok()
    {
        tracing::info!("gave up Lease {}/{}", election.namespace, election.name);
    }
}

/// The Lease as held by us, renewed now.
fn record(election: &Election, acquired: Option<MicroTime>, transitions: i32) -> Lease {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some(election.name.clone()),
            namespace: Some(election.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(election.identity.clone()),
            lease_duration_seconds: Some(election.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(10),
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_ours_or_unrenewed_for_its_duration() {
        let start = Instant::now();
        let mut seen = Observed::default();
        let a = lease(Some("a"), "2026-01-01T00:00:00Z");
        assert_eq!(decide(&a, "b", &mut seen, start), Step::Follow);
        assert_eq!(decide(&a, "a", &mut seen, start), Step::Take, "ours: renew");
        // The same record for 9 s: still a's; a renewal starts the count again.
        let later = start + Duration::from_secs(9);
        assert_eq!(decide(&a, "b", &mut seen, later), Step::Follow);
        let renewed = lease(Some("a"), "2026-01-01T00:00:09Z");
        assert_eq!(decide(&renewed, "b", &mut seen, later), Step::Follow);
        let much_later = later + Duration::from_secs(9);
        assert_eq!(decide(&renewed, "b", &mut seen, much_later), Step::Follow);
        // Not renewed for its 10 s: expired, whatever the clocks say.
        let expired = later + Duration::from_secs(10);
        assert_eq!(decide(&renewed, "b", &mut seen, expired), Step::Take);
        // Given up.
        assert_eq!(
            decide(&lease(None, "2026-01-01T00:00:09Z"), "b", &mut seen, later),
            Step::Take
        );
        assert_eq!(
            decide(
                &lease(Some(""), "2026-01-01T00:00:09Z"),
                "b",
                &mut seen,
                later
            ),
            Step::Take
        );
    }
}
