//! The `gatehouse` binary: command line, logging, signals; everything else is in the crates.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use gatehouse::kubernetes::{self as kube, KubeOptions};
use gatehouse_config::{Config, TlsEntry, TlsSource, Workers};
use gatehouse_discovery::kubernetes::ConfigMapRef;
use gatehouse_discovery::{load_file, FileWatcher};
use gatehouse_proxy::{demo, ApplyError, Gatehouse, Metrics};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Notify,
};
use tokio_util::sync::CancellationToken;

/// Gatehouse: an edge proxy and Kubernetes ingress data plane.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve traffic: from --config FILE (reloaded on change and SIGHUP), or the built-in demo.
    Run {
        /// The configuration file (YAML). Without it, the embedded demo runs.
        #[arg(long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
        /// Route Ingresses of our class, and discover endpoints from EndpointSlices (for
        /// them and for services with `kubernetes:` in the file).
        #[arg(long, env = "GATEHOUSE_KUBERNETES")]
        kubernetes: bool,
        /// Kubeconfig files, one per cluster whose endpoints are merged (default: in-cluster
        /// credentials). Repeat the flag, or separate with commas in the variable.
        #[arg(long, env = "GATEHOUSE_KUBECONFIG", value_delimiter = ',')]
        kubeconfig: Vec<PathBuf>,
        /// Namespaces to watch (default: all). Repeatable.
        #[arg(long, env = "GATEHOUSE_NAMESPACE", value_delimiter = ',')]
        namespace: Vec<String>,
        /// An Ingress class name that is ours, besides the IngressClasses whose controller
        /// is `gatehouse.io/ingress`.
        #[arg(long, env = "GATEHOUSE_INGRESS_CLASS")]
        ingress_class: Option<String>,
        /// A ConfigMap (NAMESPACE/NAME) of TCP ports to expose, in ingress-nginx's format:
        /// "5432": "db/postgres:5432[:PROXY[:PROXY]]".
        #[arg(long, env = "GATEHOUSE_TCP_SERVICES_CONFIGMAP", value_parser = kube::config_map_ref, requires = "kubernetes")]
        tcp_services_configmap: Option<ConfigMapRef>,
        /// A ConfigMap (NAMESPACE/NAME) of UDP ports to expose: "53": "kube-system/dns:53".
        #[arg(long, env = "GATEHOUSE_UDP_SERVICES_CONFIGMAP", value_parser = kube::config_map_ref, requires = "kubernetes")]
        udp_services_configmap: Option<ConfigMapRef>,
        /// Let Ingresses with `ssl-passthrough: "true"` take TLS unterminated to their pods
        /// (without it such Ingresses answer 503, as they cannot be served as asked).
        #[arg(
            long,
            env = "GATEHOUSE_ENABLE_SSL_PASSTHROUGH",
            requires = "kubernetes"
        )]
        enable_ssl_passthrough: bool,
        /// The ingress-nginx controller ConfigMap (NAMESPACE/NAME) whose global keys apply,
        /// live: hsts*, ssl-redirect, ssl-protocols, proxy-body-size, custom-http-errors,
        /// whitelist/denylist-source-range, block-cidrs, timeouts, keep-alives, forwarded
        /// headers, limit status codes (docs/kubernetes.md); other keys are reported.
        #[arg(long, env = "GATEHOUSE_CONFIGMAP", value_parser = kube::config_map_ref, requires = "kubernetes")]
        configmap: Option<ConfigMapRef>,
        /// Write this Service's load-balancer addresses (NAMESPACE/NAME) into the status of
        /// every Ingress of our class.
        #[arg(long, env = "GATEHOUSE_PUBLISH_SERVICE", value_parser = kube::config_map_ref, requires = "kubernetes", conflicts_with = "publish_status_address")]
        publish_service: Option<ConfigMapRef>,
        /// Write these addresses (IPs or host names, comma-separated: the ones DNS points
        /// at) into the status of every Ingress of our class.
        #[arg(
            long,
            env = "GATEHOUSE_PUBLISH_STATUS_ADDRESS",
            value_delimiter = ',',
            requires = "kubernetes"
        )]
        publish_status_address: Vec<String>,
        /// The Lease (in POD_NAMESPACE) whose holder writes Ingress status.
        #[arg(
            long,
            env = "GATEHOUSE_ELECTION_ID",
            default_value = "gatehouse-leader"
        )]
        election_id: String,
        /// How long a leader that stopped renewing keeps the Lease (e.g. 15s).
        #[arg(long, env = "GATEHOUSE_ELECTION_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
        election_ttl: std::time::Duration,
        /// The admin listener's address (ADDRESS:PORT), over the file's `listen.admin`: in
        /// the host network, the pod's own address (`$(POD_IP):9901`) keeps it off the
        /// node's other addresses.
        #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN")]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Judge Ingresses before moving them from ingress-nginx: for each, `ok` (served as
    /// ingress-nginx serves it), `differs` (served, each difference named) or `refused`
    /// (answers 503, and why). Exits 1 when any is refused, 2 when the input is unreadable.
    Audit {
        /// Ingresses: `kubectl get ingress -A -o json` output, or YAML documents (v1, or
        /// the old v1beta1 forms); `-` reads standard input.
        #[arg(
            long,
            required_unless_present = "kubernetes",
            conflicts_with = "kubernetes"
        )]
        ingresses: Option<PathBuf>,
        /// Read the Ingresses of a live cluster instead.
        #[arg(long)]
        kubernetes: bool,
        /// The cluster's kubeconfig (default: in-cluster credentials).
        #[arg(long, requires = "kubernetes")]
        kubeconfig: Option<PathBuf>,
        /// Judge only Ingresses of this class (as `run --ingress-class`); default: all.
        #[arg(long)]
        ingress_class: Option<String>,
        /// Judge as `run --enable-ssl-passthrough` would serve.
        #[arg(long)]
        enable_ssl_passthrough: bool,
        /// The controller ConfigMap (`kubectl get configmap -n ingress-nginx
        /// ingress-nginx-controller -o yaml`): its keys Gatehouse does not apply are listed,
        /// and an access list that cannot be read refuses every Ingress.
        #[arg(long)]
        configmap: Option<PathBuf>,
        /// `table` (default) or `json`: [{namespace, name, verdict, notes}].
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Validate a configuration file and exit: 0 and `ok`, or 2 and every error.
    Check {
        /// The configuration file (YAML).
        #[arg(long, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
        /// Check it as `run --kubernetes` would use it.
        #[arg(long, env = "GATEHOUSE_KUBERNETES")]
        kubernetes: bool,
    },
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    raise_open_files_limit();
    match cli.command {
        Command::Check { config, kubernetes } => match load_file(&config) {
            Ok(loaded) => match gatehouse_proxy::check_files(&loaded)
                .and_then(|_| kube::check(&loaded, kubernetes).map_err(|e| vec![e]))
            {
                Ok(_) => {
                    // Valid, but a rule no request can reach is almost certainly a mistake.
                    if let Ok(table) = gatehouse_config::RoutingTable::compile(&loaded.routes) {
                        for u in table.unreachable(&loaded.routes) {
                            let message = gatehouse_proxy::unreachable_message(&loaded.routes, &u);
                            eprintln!("warning: {message}");
                        }
                    }
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    eprintln!("{} error(s) in {}", errors.len(), config.display());
                    ExitCode::from(EXIT_CONFIG)
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} error(s) in {}", errors.0.len(), config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Audit {
            ingresses,
            kubernetes,
            kubeconfig,
            ingress_class,
            enable_ssl_passthrough,
            configmap,
            output,
        } => {
            let options = gatehouse::audit::AuditOptions {
                ingresses: ingresses.as_deref(),
                kubeconfig: kubeconfig.as_deref(),
                live: kubernetes,
                class: ingress_class.as_deref(),
                ssl_passthrough: enable_ssl_passthrough,
                json: output == "json",
                configmap: configmap.as_deref(),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("gatehouse: cannot start the async runtime: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            match runtime.block_on(gatehouse::audit::run(&options)) {
                Ok((text, refused)) => {
                    print!("{text}");
                    ExitCode::from(u8::from(refused))
                }
                Err(e) => {
                    eprintln!("gatehouse audit: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Run {
            config: path,
            kubernetes,
            kubeconfig,
            namespace,
            ingress_class,
            tcp_services_configmap,
            udp_services_configmap,
            enable_ssl_passthrough,
            configmap,
            publish_service,
            publish_status_address,
            election_id,
            election_ttl,
            admin_listen,
        } => {
            let pod = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty());
            let namespace_of_pod =
                std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "gatehouse".to_owned());
            let status = match (publish_service, publish_status_address.is_empty(), pod) {
                (Some(service), _, _) => Some(kube::StatusOptions::Service(service)),
                (None, false, _) => Some(kube::StatusOptions::Addresses(publish_status_address)),
                (None, true, Some(pod)) => Some(kube::StatusOptions::Nodes {
                    namespace: namespace_of_pod.clone(),
                    pod,
                }),
                (None, true, None) => None,
            };
            let election = gatehouse_discovery::kubernetes::lease::Election {
                namespace: std::env::var("POD_NAMESPACE")
                    .unwrap_or_else(|_| "gatehouse".to_owned()),
                name: election_id,
                identity: replica_identity(),
                duration: election_ttl,
            };
            // The watcher notes the file before it is loaded, so no change slips between.
            let watcher = path.as_ref().map(FileWatcher::new);
            let config = match &path {
                Some(p) => match load_file(p) {
                    Ok(c) => Some(c),
                    Err(errors) => {
                        eprintln!("{errors}");
                        eprintln!("gatehouse: not starting; fix the configuration and run again");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
                None => None,
            };
            let workers = config.as_ref().map_or(Workers::Auto, |c| c.workers);
            let runtime = match build_runtime(workers) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("gatehouse: cannot start the async runtime: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            let kube = kubernetes.then_some(KubeOptions {
                kubeconfigs: kubeconfig,
                namespaces: namespace,
                ingress_class,
                tcp_services: tcp_services_configmap,
                udp_services: udp_services_configmap,
                ssl_passthrough: enable_ssl_passthrough,
                status,
                election,
                controller_config: configmap,
            });
            if let Some(c) = &config {
                if let Err(e) = kube::check(c, kube.is_some()) {
                    eprintln!("gatehouse: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            runtime.block_on(run(config, watcher, kube, admin_listen))
        }
    }
}

/// This replica's name in the leader election: the pod's (POD_NAME), else the host's, with
/// the process id so two on one host differ.
fn replica_identity() -> String {
    let host = std::env::var("POD_NAME").ok().or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
    });
    match host {
        Some(h) if std::env::var("POD_NAME").is_ok() => h,
        Some(h) => format!("{h}-{}", std::process::id()),
        None => format!("gatehouse-{}", std::process::id()),
    }
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("GATEHOUSE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Every client and upstream connection is a file descriptor, and distributions start
/// processes with a soft limit of 1,024: take the hard limit, as nginx's
/// `worker_rlimit_nofile` does.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(
            "cannot raise the open files limit ({e}); connections beyond it will be refused"
        ),
    }
}

fn build_runtime(workers: Workers) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match workers {
        Workers::Count(n) => n,
        Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder = if threads == 1 {
        // One worker: a current-thread runtime has no work-stealing overhead.
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build()
}

async fn run(
    config: Option<Config>,
    watcher: Option<FileWatcher>,
    kube: Option<KubeOptions>,
    admin_listen: Option<std::net::SocketAddr>,
) -> ExitCode {
    // Signal handlers first: until they are installed, SIGHUP's default action ends the
    // process, so a reload asked for while the listeners start would kill the proxy.
    let (terms, ints) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot listen for SIGTERM/SIGINT: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let hangups = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); reloads happen on file change only");
            None
        }
    };
    let demo = config.is_none();
    let config = match config {
        Some(c) => c,
        None => match demo_config().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("gatehouse: cannot start the demo: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
    };
    let mut config = config;
    if let Some(admin) = admin_listen {
        config.listen.admin = Some(admin);
    }
    let gatehouse = match Gatehouse::start(config, Metrics::new()).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            let code = match e {
                ApplyError::Snapshot(_) => EXIT_CONFIG,
                ApplyError::Bind { .. } => EXIT_RUNTIME,
            };
            return ExitCode::from(code);
        }
    };
    if demo {
        let port = |a: Option<std::net::SocketAddr>, default| a.map_or(default, |a| a.port());
        let http = port(gatehouse.http_addr().await, 8080);
        let https = port(gatehouse.https_addr().await, 8443);
        let admin = port(gatehouse.admin_addr().await, 9901);
        eprintln!(
            "Gatehouse demo is running. Try: curl -s http://localhost:{http}/hello  or  curl -sk https://localhost:{https}/hello  (metrics: curl -s http://127.0.0.1:{admin}/metrics)"
        );
    }

    // The first SIGTERM/SIGINT ends the loop and starts the drain; a second one during the
    // drain exits at once. SIGHUP reloads the file.
    let stop = CancellationToken::new();
    let now = CancellationToken::new();
    let reload = watcher.as_ref().map(FileWatcher::reload_handle);
    tokio::spawn(handle_signals(
        terms,
        ints,
        hangups,
        reload,
        stop.clone(),
        now.clone(),
    ));
    let sources = gatehouse::Sources {
        file: watcher,
        kubernetes: kube,
        admin_listen,
    };
    if let Err(e) = gatehouse::reconcile(&gatehouse, sources, stop).await {
        tracing::error!("{e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    let clean = tokio::select! {
        clean = gatehouse.shutdown() => clean,
        _ = now.cancelled() => { tracing::warn!("second signal: exiting now"); return ExitCode::from(EXIT_RUNTIME) }
    };
    tracing::info!(clean, "stopped");
    ExitCode::SUCCESS
}

/// Turns signals into the loop's controls: `stop` on the first SIGTERM/SIGINT, `now` on
/// the second; SIGHUP asks the file watcher to reload.
async fn handle_signals(
    mut terms: tokio::signal::unix::Signal,
    mut ints: tokio::signal::unix::Signal,
    mut hangups: Option<tokio::signal::unix::Signal>,
    reload: Option<Arc<Notify>>,
    stop: CancellationToken,
    now: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = terms.recv() => {}
            _ = ints.recv() => {}
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                match &reload {
                    Some(reload) => reload.notify_one(),
                    None => tracing::info!("SIGHUP ignored: running the embedded demo, there is no file to reload"),
                }
                continue;
            }
        }
        if stop.is_cancelled() {
            now.cancel();
            return;
        }
        stop.cancel();
    }
}

async fn demo_config() -> Result<Config, String> {
    let upstream = demo::start_echo(([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| format!("demo upstream: {e}"))?;
    let text = include_str!("demo.yaml").replace("DEMO_UPSTREAM", &upstream.to_string());
    let mut config =
        gatehouse_config::parse(&text, "<embedded demo>").map_err(|e| e.to_string())?;
    // The HTTPS listener serves a certificate made at start-up, so it exists only in memory.
    let (cert, key) = gatehouse_proxy::tls::self_signed_localhost()
        .map_err(|e| format!("demo certificate: {e}"))?;
    config.listen.https = Some(([127, 0, 0, 1], 8443).into());
    config.tls.push(TlsEntry {
        source: TlsSource::Inline {
            name: "demo certificate".to_owned(),
            cert,
            key,
        },
        hosts: None,
        default: true,
        strict: true,
        location: gatehouse_config::Location {
            file: "<embedded demo>".into(),
            line: 1,
            column: 1,
        },
    });
    Ok(config)
}
