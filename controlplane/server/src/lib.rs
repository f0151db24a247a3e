//! The Skiff control plane in one process: the Kubernetes API server over
//! its embedded store (replicated with Raft when asked), the node gateway,
//! the scheduler and the controller manager. `skiff-controlplane serve` and
//! `skiff server` are two front ends to [`start`].

mod cluster;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_apiserver::pki;
use skiff_gateway::GatewayConfig;

/// Why the control plane did not start or did not stop cleanly; the
/// message names the flag, file or component at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

/// `member list` (`remove == None`) or `member remove ID`, as an admin of
/// the cluster whose member certificate is in `dir`, against `server`.
pub async fn member_cmd(dir: PathBuf, server: String, remove: Option<String>) -> Result<(), Error> {
    cluster::member_cmd(dir, server, remove)
        .await
        .map_err(Error)
}

/// How the control plane serves: the flags of `skiff-controlplane serve`
/// and `skiff server` beyond their directories.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    /// Kubernetes API (HTTPS) listen address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Node gateway (TLS, node protocol) listen address.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub node_listen: SocketAddr,
    /// Seconds without a lease renewal before a node is NotReady
    /// (kube's node-monitor-grace-period).
    #[arg(long, default_value_t = 40)]
    pub node_grace: u64,
    /// Days an issued node certificate is valid; nodes rotate it over their
    /// session at about 80 % of that, and a deleted Node gets no new one.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=365))]
    pub node_cert_days: u64,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub no_scheduler: bool,
    /// Do not run the controller manager in this process.
    #[arg(long)]
    pub no_controllers: bool,
    /// The pod network, cut into one subnet per node (`spec.podCIDR`) from
    /// which the node gives its pods addresses (kube's flag).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Prefix length of each node's pod subnet (kube's flag).
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Whether the controller manager gives Nodes pod CIDRs (kube's flag;
    /// `false` when something else sets `spec.podCIDR`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub allocate_node_cidrs: bool,
    /// Where compiled wasm images are cached (default: `<data>/images`).
    #[arg(long)]
    pub image_cache: Option<PathBuf>,
    /// A registry (`host[:port]`) to reach over plain HTTP; all others,
    /// loopback included, only over HTTPS. Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Wasm AOT compiles at once; more pulls wait for a slot.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_concurrent_compiles: u64,
    /// The store quota in bytes (etcd's flag): past it writes are refused
    /// until deletes and compaction free space. 0 = none.
    #[arg(long, default_value_t = 2 << 30)]
    pub quota_backend_bytes: u64,
    /// Read-only API requests in flight, beyond which 429 (kube's flag).
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Mutating API requests in flight, beyond which 429 (kube's flag).
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Objects one namespace may hold, all kinds together.
    #[arg(long, default_value_t = 50_000)]
    pub max_objects_per_namespace: usize,
    /// The longest a service account token from TokenRequest lives (kube's
    /// flag; `s`, `m`, `h` or `d`): longer requests are shortened to it.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub service_account_max_token_expiration: Duration,
    /// Start a replicated control plane with this member as its first
    /// (prints the join token other members use).
    #[arg(long, conflicts_with = "join")]
    pub cluster_init: bool,
    /// Join the replicated control plane a member of which serves this URL
    /// (`https://<member>:6443`); needs `--token`.
    #[arg(long, requires = "token")]
    pub join: Option<String>,
    /// The join token (`K10<CA hash>::<secret>`, in the first member's
    /// PKI directory as `join-token`).
    #[arg(long)]
    pub token: Option<String>,
    /// The URL other members reach this one at (default: from `--listen`).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Names for this member's serving certificate when joining (and for
    /// the one `skiff server` makes at its first start).
    #[arg(long)]
    pub san: Vec<String>,
    /// Applied Raft entries between snapshots, after which the log before
    /// the snapshot is dropped (etcd's flag).
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: u64,
}

/// `90s`, `30m`, `24h` (the Go duration units kube's flags use), `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: want a number with s, m, h or d");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    };
    secs.map(Duration::from_secs).ok_or_else(bad)
}

/// Starts the API server over the embedded store (replicated when the
/// options or the data directory say so), the node gateway, and unless
/// turned off the scheduler and the controller manager. `dir` is the PKI
/// directory (`pki init`), `data` the store's.
pub async fn start(dir: PathBuf, data: PathBuf, args: ServeOptions) -> Result<Running, Error> {
    let pod_network = if args.allocate_node_cidrs {
        let network =
            skiff_controllers::PodNetwork::new(&args.cluster_cidr, args.node_cidr_mask_size)
                .map_err(|e| format!("--cluster-cidr/--node-cidr-mask-size: {e}"))?;
        Some(network)
    } else {
        None
    };
    survive_file_size_limit()?;
    let image_cache = args
        .image_cache
        .clone()
        .unwrap_or_else(|| data.join("images"));
    raise_open_file_limit();
    let mut cfg = skiff_apiserver::ServeConfig::new(dir.clone(), data, args.listen);
    cfg.store.quota_bytes = args.quota_backend_bytes;
    cfg.limits.max_requests_inflight = args.max_requests_inflight;
    cfg.limits.max_mutating_requests_inflight = args.max_mutating_requests_inflight;
    cfg.limits.max_objects_per_namespace = args.max_objects_per_namespace;
    cfg.limits.service_account_max_token_expiration = args.service_account_max_token_expiration;
    // A member restarts as one without the flags: its data says so.
    let replicated =
        args.cluster_init || args.join.is_some() || cfg.data_dir.join("raft-log.redb").exists();
    let api = if replicated {
        let advertise = args
            .advertise
            .clone()
            .unwrap_or_else(|| local_url(args.listen));
        let id = cluster::member_id(&cfg.data_dir)?;
        if let (Some(join), Some(token)) = (&args.join, &args.token)
            && !dir.join(pki::CA_KEY).exists()
        {
            let mut sans = args.san.clone();
            sans.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
            sans.push(args.listen.ip().to_string());
            cluster::fetch_pki(join, token, &dir, &sans, id).await?;
        }
        if !dir.join(pki::MEMBER_CERT).exists() {
            pki::issue_member(&dir, id, None).map_err(|e| e.to_string())?;
        }
        if args.cluster_init {
            let token = pki::join_token(&dir).map_err(|e| e.to_string())?;
            println!("join token: {token}");
        }
        let http = cluster::client(&dir, pki::MEMBER_CERT, pki::MEMBER_KEY)?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| format!("{}: {e}", cfg.data_dir.display()))?;
        let mut raft = skiff_store::RaftOptions::new(
            id,
            advertise.clone(),
            cfg.data_dir.join("raft-log.redb"),
        );
        raft.snapshot_every = args.snapshot_count;
        let store = skiff_store::Store::open_replicated(
            cfg.data_dir.join("store.redb"),
            cfg.store.clone(),
            raft,
            Arc::new(cluster::Https(http.clone())),
        )
        .await
        .map_err(|e| e.to_string())?;
        if args.cluster_init {
            store
                .initialize_cluster()
                .await
                .map_err(|e| e.to_string())?;
        }
        if let Some(join) = &args.join
            && store.cluster().is_some_and(|c| c.members.is_empty())
        {
            tokio::spawn(cluster::request_add(http, join.clone(), id, advertise));
        }
        tracing::info!(id = format!("{id:x}"), "control-plane member");
        skiff_apiserver::start_with_store(&cfg, store).await
    } else {
        skiff_apiserver::start(&cfg).await
    }
    .map_err(|e| e.to_string())?;
    tracing::info!(addr = %api.addr, "serving the Kubernetes API");
    let mut gw_cfg = GatewayConfig::new(dir.clone(), args.node_listen);
    gw_cfg.node_grace = Duration::from_secs(args.node_grace);
    gw_cfg.cert_validity = Duration::from_secs(args.node_cert_days * 24 * 3600);
    let mut img_cfg = skiff_images::Config::new(image_cache);
    img_cfg.insecure_registries = args.insecure_registries.clone();
    img_cfg.max_concurrent_compiles = args.max_concurrent_compiles as usize;
    let images = skiff_images::ImageService::new(img_cfg).map_err(|e| e.to_string())?;
    gw_cfg.images = Some(skiff_gateway::Images(images));
    let gateway = skiff_gateway::start(gw_cfg, api.state.clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(addr = %gateway.addr, "serving the node gateway");
    // The scheduler is an ordinary API client with its own credentials,
    // dialing this server's actual address (not the kubeconfig's URL).
    let scheduler = if args.no_scheduler {
        None
    } else {
        let kubeconfig = dir.join(pki::SCHEDULER_KUBECONFIG);
        let client =
            skiff_scheduler::client_from_kubeconfig(&kubeconfig, Some(&local_url(api.addr)))
                .await
                .map_err(|e| e.to_string())?;
        let config = skiff_scheduler::SchedulerConfig::default();
        api.state
            .metrics
            .register_collector(Box::new(metrics::SchedulerCollector(config.stats.clone())));
        Some(tokio::spawn(async move {
            if let Err(e) = skiff_scheduler::run(client, config).await {
                tracing::error!(error = %e, "the scheduler stopped");
            }
        }))
    };

    // The controller manager likewise, with `controller-manager.kubeconfig`;
    // `--node-grace` is its node-monitor-grace-period too.
    let controllers = if args.no_controllers {
        None
    } else {
        let kubeconfig = dir.join(pki::CONTROLLER_MANAGER_KUBECONFIG);
        let client =
            skiff_controllers::client_from_kubeconfig(&kubeconfig, Some(&local_url(api.addr)))
                .await
                .map_err(|e| e.to_string())?;
        let cfg = skiff_controllers::Config {
            node_monitor_grace_period: Duration::from_secs(args.node_grace),
            pod_network,
            ..Default::default()
        };
        api.state
            .metrics
            .register_collector(Box::new(metrics::ControllersCollector(cfg.stats.clone())));
        Some(tokio::spawn(skiff_controllers::run(client, cfg)))
    };

    Ok(Running {
        api,
        gateway,
        scheduler,
        controllers,
    })
}

/// A running control plane.
pub struct Running {
    api: skiff_apiserver::Running,
    gateway: skiff_gateway::Gateway,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    controllers: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The Kubernetes API's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api.addr
    }

    /// The node gateway's address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway.addr
    }

    /// Serves until SIGINT or SIGTERM (or this member's removal from its
    /// cluster), then stops taking nodes and requests and closes the store.
    pub async fn serve_until_stopped(self) -> Result<(), Error> {
        let Running {
            api,
            gateway,
            scheduler,
            controllers,
        } = self;
        tokio::select! {
            r = shutdown_signal() => r?,
            () = removed(api.state.store.clone()) => {
                tracing::warn!("this member was removed from the cluster: stopping");
            }
        }
        if let Some(c) = controllers {
            c.abort();
        }
        if let Some(s) = scheduler {
            s.abort();
        }
        // Stop taking nodes and requests, then let the store finish queued writes
        // and release its file.
        drop(gateway);
        api.abort();
        let store = api.state.store.clone();
        drop(api);
        store.close().await.map_err(|e| Error(e.to_string()))
    }
}

/// Returns once this member learns it was removed from its cluster.
async fn removed(store: skiff_store::Store) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if store.removed() {
            return;
        }
    }
}

/// How in-process clients reach the API server: loopback when it listens
/// on all addresses.
pub fn local_url(addr: SocketAddr) -> String {
    format!("https://{}", local_addr(addr))
}

/// Where a client on this machine dials a listener on `addr`: loopback
/// when it listens on all addresses.
pub fn local_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Ctrl-C or SIGTERM (how service managers and tests stop us).
async fn shutdown_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
        _ = term.recv() => Ok(()),
    }
}

/// Raises the soft limit on open files to the hard one (as Go programs,
/// kube-apiserver among them, do at start): the listeners' connection caps
/// are what should turn clients away, not EMFILE at accept, which would
/// refuse the plane's own components too.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open file limit"),
            Err(e) => tracing::warn!(error = %e, soft, "could not raise the open file limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "reading the open file limit"),
    }
}

/// A file-size limit (`ulimit -f`) must fail the write that crosses it
/// (EFBIG, which the store reports and logs), not kill the whole plane with
/// SIGXFSZ's default action: catching the signal is enough for that.
fn survive_file_size_limit() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    const SIGXFSZ: i32 = 25;
    let mut xfsz = signal(SignalKind::from_raw(SIGXFSZ)).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while xfsz.recv().await.is_some() {
            tracing::error!("a write crossed the file size limit (SIGXFSZ)");
        }
    });
    Ok(())
}
