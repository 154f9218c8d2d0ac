//! `oncelog controller` with its state in etcd (`--etcd URLS` or the cluster file's `etcd`
//! line): several such processes, one per controller address, serve the same partition; the
//! one etcd's election picks acts (expires sessions). Without the `etcd` cargo feature the
//! binary says so.

use std::net::SocketAddr;

use oncelog::net::{ClusterFile, ControllerConfig};

use super::cluster::Options;
use super::{CliError, CliResult};

/// The etcd client URLs: `--etcd` (comma-separated) or the cluster file's `etcd` line; empty
/// for a controller in memory.
pub(super) fn endpoints(o: &Options, cluster: &ClusterFile) -> Vec<String> {
    match o.value("--etcd") {
        Some(urls) => urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect(),
        None => cluster.etcd.clone(),
    }
}

#[cfg(not(feature = "etcd"))]
pub(super) fn status_from_etcd(
    _o: &Options,
    _cluster: &ClusterFile,
    _endpoints: Vec<String>,
) -> CliResult {
    Err(CliError::Failed(
        "this oncelog was built without the `etcd` feature: rebuild with the default features"
            .into(),
    ))
}

/// `oncelog cluster-status` with etcd: the record, the sessions and the acting controller, as
/// etcd holds them (no controller process needs to be running).
#[cfg(feature = "etcd")]
pub(super) fn status_from_etcd(
    o: &Options,
    cluster: &ClusterFile,
    endpoints: Vec<String>,
) -> CliResult {
    use oncelog::etcd::EtcdStore;
    use oncelog::net::{ClusterMetadata, ControllerStore, ReplicaStatus};
    use oncelog::replication::Controller;

    let mut config = etcd_config(o, endpoints)?;
    if let Some(ms) = o.number::<u64>("--timeout-ms")? {
        config.request_timeout = std::time::Duration::from_millis(ms.max(1));
    }
    let (urls, prefix) = (config.endpoints.join(","), config.prefix.clone());
    let failed = |e: oncelog::net::StoreError| {
        CliError::Failed(format!("cluster-status: {e} (etcd at {urls})"))
    };
    let store = EtcdStore::connect(config).map_err(failed)?;
    let acting = store.acting_candidate().map_err(failed)?;
    let sessions = store.sessions().map_err(failed)?;
    let Some((c, revision)) = store.load().map_err(failed)? else {
        println!("etcd {urls} prefix {prefix}: no partition record yet (no controller ran)");
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let replicas = cluster
        .replicas
        .iter()
        .map(|r| ReplicaStatus {
            replica: r.id,
            addr: r.addr,
            alive: c.is_alive(r.id),
            needs_catch_up: c.needs_catch_up(r.id),
            incarnation: c.incarnation(r.id),
            log_end: None,
            last_seen_ms_ago: None,
        })
        .collect();
    let m = ClusterMetadata {
        state: c.leader_and_isr(),
        min_insync_replicas: cluster.min_insync_replicas,
        replicas,
    };
    let sessions: Vec<String> = sessions
        .iter()
        .map(|(r, i)| format!("{r} as incarnation {i}"))
        .collect();
    super::cluster::print_status(
        &format!(
            "etcd {urls} prefix {prefix} revision {revision}; acting controller {}; sessions: {}",
            acting.as_deref().unwrap_or("none"),
            if sessions.is_empty() {
                "none".to_string()
            } else {
                sessions.join(", ")
            }
        ),
        &m,
    )
}

#[cfg(not(feature = "etcd"))]
pub(super) fn controller_on_etcd(
    _o: &Options,
    _cluster: ClusterFile,
    _config: ControllerConfig,
    _listen: SocketAddr,
    _endpoints: Vec<String>,
) -> Result<(), CliError> {
    Err(CliError::Failed(
        "this oncelog was built without the `etcd` feature: rebuild with the default features"
            .into(),
    ))
}

/// The etcd settings the flags give.
#[cfg(feature = "etcd")]
fn etcd_config(o: &Options, endpoints: Vec<String>) -> Result<oncelog::etcd::EtcdConfig, CliError> {
    let mut config = oncelog::etcd::EtcdConfig::new(endpoints);
    if let Some(p) = o.value("--etcd-prefix") {
        let p = p.trim_end_matches('/');
        if !p.starts_with('/') {
            return Err(CliError::Usage(format!(
                "--etcd-prefix: '{p}' must start with '/' (like /oncelog)"
            )));
        }
        config.prefix = p.to_string();
    }
    Ok(config)
}

#[cfg(feature = "etcd")]
pub(super) fn controller_on_etcd(
    o: &Options,
    cluster: ClusterFile,
    config: ControllerConfig,
    listen: SocketAddr,
    endpoints: Vec<String>,
) -> Result<(), CliError> {
    use std::sync::Arc;

    use oncelog::etcd::EtcdStore;
    use oncelog::net::{ControllerServer, ControllerService, ControllerStore};
    use oncelog::SystemClock;

    let etcd = etcd_config(o, endpoints)?;
    let ttl_ms = o.number::<u64>("--election-ttl-ms")?.unwrap_or(2_000);
    if ttl_ms == 0 {
        return Err(CliError::Usage("--election-ttl-ms must be > 0".into()));
    }
    let ttl_s = i64::try_from(ttl_ms.div_ceil(1000)).unwrap_or(i64::MAX);
    let listener = super::cluster::bind(listen)?;
    let urls = etcd.endpoints.join(",");
    let prefix = etcd.prefix.clone();
    let store = Arc::new(
        EtcdStore::connect(etcd)
            .map_err(|e| CliError::Failed(format!("{e} (is etcd running at {urls}?)")))?,
    );
    store.campaign(&listen.to_string(), ttl_s);
    let replicas = cluster.replicas.len();
    let timeout = config.session_timeout_ms;
    let service = ControllerService::with_store(
        cluster,
        &config,
        Arc::new(SystemClock),
        Arc::clone(&store) as Arc<dyn ControllerStore>,
    );
    let server = ControllerServer::serve(listener, service, &config)?;
    super::cluster::announce(
        &server,
        config.security.is_some(),
        &format!(
            "{replicas} replicas, session timeout {timeout} ms, state in etcd at {urls} under \
             {prefix}"
        ),
    )?;
    let mut acting = false;
    let signal = super::cluster::wait_for_termination(|| {
        let now = store.is_acting();
        if now != acting {
            acting = now;
            eprintln!(
                "oncelog controller {listen}: {}",
                if now {
                    "acting controller now"
                } else {
                    "no longer the acting controller"
                }
            );
        }
    });
    eprintln!("oncelog controller: {signal} received, stopping");
    server.shutdown();
    // The last reference: dropping it resigns, so another controller acts at once.
    drop(store);
    Ok(())
}
