//! `oncelog controller`, `oncelog move-leader` and `oncelog cluster-status`: the controller
//! process of the TCP driver and the operator's two commands against it.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use oncelog::io::fs::RealStorage;
use oncelog::io::signals;
use oncelog::net::{
    CertPaths, ClusterFile, ClusterMetadata, ControllerClient, ControllerConfig, ControllerServer,
    Member, NetError, Security, TransportConfig,
};
use oncelog::replication::ReplicaId;
use oncelog::LogConfig;
use oncelog::SystemClock;

use super::{CliError, CliResult};

/// `--name VALUE` options and `--flag` switches, in any order; nothing positional.
pub(super) struct Options {
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Options {
    /// Parses the flags `help::COMMANDS` lists for `command` (and no others).
    pub(super) fn parse(command: &str, args: &[String]) -> Result<Self, CliError> {
        let (with_value, switches) = super::help::find(command)
            .map(super::help::Command::flag_names)
            .unwrap_or_default();
        let mut o = Options {
            values: Vec::new(),
            switches: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if with_value.contains(&a.as_str()) {
                let v = it
                    .next()
                    .ok_or_else(|| CliError::Usage(format!("{a} needs a value")))?;
                if o.values.iter().any(|(k, _)| k == a) {
                    return Err(CliError::Usage(format!("{a} given twice")));
                }
                o.values.push((a.clone(), v.clone()));
            } else if switches.contains(&a.as_str()) {
                o.switches.push(a.clone());
            } else if a.starts_with("--") {
                return Err(CliError::Usage(format!("unknown option '{a}'")));
            } else {
                return Err(CliError::Usage(format!("unexpected argument '{a}'")));
            }
        }
        Ok(o)
    }

    pub(super) fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn required(&self, command: &str, name: &str) -> Result<&str, CliError> {
        self.value(name)
            .ok_or_else(|| CliError::Usage(format!("{command} needs {name}")))
    }

    pub(super) fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, CliError> {
        self.value(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| CliError::Usage(format!("{name}: '{v}' is not a number")))
            })
            .transpose()
    }

    pub(super) fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}

/// The segment size of the logs `node` and `serve` run unless `--segment-bytes` says otherwise:
/// every log preallocates its active segment and the next one, so the library's 1 GiB default
/// would reserve 2 GiB per replica (8 GiB for a `serve` topic of 4 partitions).
pub(super) const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// `base` with `--segment-bytes` (or [`DEFAULT_SEGMENT_BYTES`]), validated.
pub(super) fn segment_bytes(o: &Options, base: LogConfig) -> Result<LogConfig, CliError> {
    let n = o
        .number::<u64>("--segment-bytes")?
        .unwrap_or(DEFAULT_SEGMENT_BYTES);
    let config = base.with_segment_bytes(n);
    config
        .validate()
        .map_err(|e| CliError::Usage(format!("--segment-bytes: {e}")))?;
    Ok(config)
}

/// The server limits given on the command line, over `base` (`docs/replication.md`,
/// "Connection limits").
fn limits(o: &Options, mut base: TransportConfig) -> Result<TransportConfig, CliError> {
    let positive = |name: &str, v: u64| {
        if v == 0 {
            Err(CliError::Usage(format!("{name} must be > 0")))
        } else {
            Ok(v)
        }
    };
    if let Some(n) = o.number::<u64>("--max-connections")? {
        let n = positive("--max-connections", n)?;
        base.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(ms) = o.number::<u64>("--idle-timeout-ms")? {
        base.idle_timeout = Some(Duration::from_millis(positive("--idle-timeout-ms", ms)?));
    }
    if let Some(ms) = o.number::<u64>("--frame-timeout-ms")? {
        base.frame_timeout = Duration::from_millis(positive("--frame-timeout-ms", ms)?);
    }
    if let Some(n) = o.number::<u32>("--max-request-bytes")? {
        if n < oncelog::net::wire::MIN_LENGTH {
            return Err(CliError::Usage(format!(
                "--max-request-bytes must be at least {}",
                oncelog::net::wire::MIN_LENGTH
            )));
        }
        base.max_request_bytes = n;
    }
    Ok(base)
}

/// Installs the SIGTERM/SIGINT handler (before anything slow, so a signal during start-up is
/// not lost).
pub(super) fn catch_termination() -> Result<(), CliError> {
    signals::install_termination_handler()
        .map_err(|e| CliError::Failed(format!("cannot install the SIGTERM/SIGINT handler: {e}")))
}

/// Blocks until SIGTERM or SIGINT, calling `every_50ms` meanwhile; returns its name.
pub(super) fn wait_for_termination(mut every_50ms: impl FnMut()) -> &'static str {
    loop {
        if let Some(s) = signals::termination_requested() {
            return signals::signal_name(s);
        }
        every_50ms();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `--cert FILE --key FILE` (both or neither).
fn identity(o: &Options) -> Result<Option<CertPaths>, CliError> {
    match (o.value("--cert"), o.value("--key")) {
        (Some(cert), Some(key)) => Ok(Some(CertPaths {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })),
        (None, None) => Ok(None),
        _ => Err(CliError::Usage("--cert and --key go together".into())),
    }
}

/// The TLS material `member` serves with, or `None` for plain TCP, which takes `--insecure`
/// and a cluster file without `tls_ca` (`docs/security.md`); plain TCP on an address other
/// than loopback is served with a warning.
fn member_security(
    cluster: &ClusterFile,
    member: Member,
    addr: std::net::SocketAddr,
    o: &Options,
) -> Result<Option<Security>, CliError> {
    let identity = identity(o)?;
    match (cluster.tls.enabled(), o.switch("--insecure")) {
        (true, true) => Err(CliError::Usage(
            "--insecure, but the cluster file turns security on (tls_ca): drop one of them".into(),
        )),
        (true, false) => Security::for_member(cluster, member, identity.as_ref())
            .map(Some)
            .map_err(|e| CliError::Failed(format!("{member}: TLS: {e}"))),
        (false, false) => Err(CliError::Failed(format!(
            "the cluster file has no 'tls_ca', so {member} would serve plain TCP that lets \
             anyone produce, read and change the cluster: add tls_ca, tls_cert and allow lines \
             (docs/security.md), or pass --insecure for loopback development"
        ))),
        (false, true) => {
            if identity.is_some() {
                return Err(CliError::Usage(
                    "--cert/--key need a cluster file with tls_ca".into(),
                ));
            }
            if !addr.ip().is_loopback() {
                eprintln!(
                    "WARNING: {member} serves plain TCP on {addr} (--insecure): no TLS, no \
                     authentication; anyone who reaches {addr} can produce, read, elect \
                     leaders and register as a replica"
                );
            }
            Ok(None)
        }
    }
}

/// A client's TLS material: none when the cluster file has no `tls_ca`.
pub(super) fn client_security(
    cluster: &ClusterFile,
    o: &Options,
) -> Result<Option<Security>, CliError> {
    Security::for_client(cluster, identity(o)?.as_ref())
        .map_err(|e| CliError::Failed(format!("TLS: {e}")))
}

pub(super) fn load_cluster(path: &str) -> Result<ClusterFile, CliError> {
    ClusterFile::load(Path::new(path)).map_err(|e| CliError::Failed(e.to_string()))
}

/// Where the controller keeps its state by default: `controller-data` beside the cluster file.
pub fn default_controller_dir(cluster_file: &Path) -> PathBuf {
    oncelog::io::parent_dir(cluster_file).join("controller-data")
}

/// `oncelog controller --cluster FILE [--dir DIR] [--session-timeout-ms N] [--etcd URLS]
/// [--etcd-prefix P] [--listen ADDR] [--election-ttl-ms N] [limits]`: serves until SIGTERM or
/// SIGINT, then stops serving, releases its directory (or resigns in etcd) and exits 0.
pub fn controller_main(args: &[String]) -> CliResult {
    let o = Options::parse("controller", args)?;
    catch_termination()?;
    let _metrics = super::metrics::start(o.value("--metrics"))?;
    let path = o.required("controller", "--cluster")?;
    let cluster = load_cluster(path)?;
    let mut config = ControllerConfig::new(PathBuf::new());
    config.verbose = true;
    let listen = match o.value("--listen") {
        Some(a) => a
            .parse::<SocketAddr>()
            .map_err(|_| CliError::Usage(format!("--listen: '{a}' is not an IP:PORT address")))?,
        None => cluster.controller,
    };
    config.security = member_security(&cluster, Member::Controller, listen, &o)?;
    config.transport = limits(&o, config.transport)?;
    if let Some(ms) = o.number::<u64>("--session-timeout-ms")? {
        if ms == 0 {
            return Err(CliError::Usage("--session-timeout-ms must be > 0".into()));
        }
        config.session_timeout_ms = ms;
        config.expiry_check_interval = Duration::from_millis((ms / 10).clamp(1, 100));
    }
    let etcd = super::etcd::endpoints(&o, &cluster);
    if etcd.is_empty() {
        for flag in ["--etcd-prefix", "--election-ttl-ms"] {
            if o.value(flag).is_some() {
                return Err(CliError::Usage(format!(
                    "{flag} needs --etcd (or an etcd line)"
                )));
            }
        }
        if !cluster.standby_controllers.is_empty() {
            return Err(CliError::Usage(
                "the cluster file names several controllers: they must share their state in \
                 etcd (--etcd URLS or an etcd line)"
                    .into(),
            ));
        }
        let dir = o
            .value("--dir")
            .map_or_else(|| default_controller_dir(Path::new(path)), PathBuf::from);
        config.dir = dir.clone();
        let listener = bind(listen)?;
        let (replicas, timeout) = (cluster.replicas.len(), config.session_timeout_ms);
        let secure = config.security.is_some();
        let server = ControllerServer::start(
            listener,
            cluster,
            config,
            Arc::new(SystemClock),
            Arc::new(RealStorage::new()),
        )?;
        announce(
            &server,
            secure,
            &format!(
                "{replicas} replicas, session timeout {timeout} ms, state in {}",
                dir.display()
            ),
        )?;
        let signal = wait_for_termination(|| {});
        eprintln!("oncelog controller: {signal} received, stopping");
        server.shutdown();
    } else {
        if o.value("--dir").is_some() {
            return Err(CliError::Usage(
                "--dir has no use with etcd: the state is in etcd".into(),
            ));
        }
        super::etcd::controller_on_etcd(&o, cluster, config, listen, etcd)?;
    }
    println!("oncelog controller stopped");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn bind(addr: SocketAddr) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr).map_err(|e| CliError::Failed(format!("cannot listen on {addr}: {e}")))
}

/// Prints the start-up line the tests and operators wait for (`secure`: it serves TLS).
pub(super) fn announce(
    server: &ControllerServer,
    secure: bool,
    what: &str,
) -> Result<(), CliError> {
    let tls = if secure {
        "TLS"
    } else {
        "plain TCP (--insecure)"
    };
    let addr = server
        .local_addr()
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "oncelog controller listening on {addr} ({tls}): {what}"
    )?;
    out.flush()?;
    Ok(())
}

/// Runs `call` with a client of the cluster's controllers (`ControllerClient::call` skips one
/// that cannot be reached: with controllers on etcd, a dead one).
fn ask<T>(
    cluster: &ClusterFile,
    o: &Options,
    mut call: impl FnMut(&mut ControllerClient) -> Result<T, NetError>,
) -> Result<Result<T, NetError>, CliError> {
    let timeout = Duration::from_millis(o.number::<u64>("--timeout-ms")?.unwrap_or(5_000));
    let mut c =
        ControllerClient::for_cluster(cluster, oncelog::net::TransportConfig::default(), timeout)
            .with_security(client_security(cluster, o)?);
    Ok(call(&mut c))
}

fn isr_text(isr: &[ReplicaId]) -> String {
    let v: Vec<String> = isr.iter().map(ToString::to_string).collect();
    v.join(",")
}

/// `oncelog move-leader --cluster FILE --to N [--unclean] [--timeout-ms N]`.
pub fn move_leader_main(args: &[String]) -> CliResult {
    let o = Options::parse("move-leader", args)?;
    let cluster = load_cluster(o.required("move-leader", "--cluster")?)?;
    let to = o
        .number::<u32>("--to")?
        .ok_or_else(|| CliError::Usage("move-leader needs --to N".into()))?;
    let e = ask(&cluster, &o, |c| {
        c.elect_leader(Some(ReplicaId(to)), o.switch("--unclean"))
    })?
    .map_err(|e| CliError::Failed(format!("move-leader to {to}: {e}")))?;
    let s = &e.state;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "leader {} leader_epoch {} partition_epoch {} isr {}",
        s.leader.map_or("none".to_string(), |l| l.to_string()),
        s.leader_epoch,
        s.partition_epoch,
        isr_text(&s.isr)
    )?;
    if e.unclean {
        writeln!(
            out,
            "WARNING: unclean election: replica {to} was not in sync; committed records may be lost"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `oncelog cluster-status --cluster FILE [--timeout-ms N]`.
pub fn cluster_status_main(args: &[String]) -> CliResult {
    let o = Options::parse("cluster-status", args)?;
    let cluster = load_cluster(o.required("cluster-status", "--cluster")?)?;
    let etcd = super::etcd::endpoints(&o, &cluster);
    if !etcd.is_empty() {
        return super::etcd::status_from_etcd(&o, &cluster, etcd);
    }
    let m = ask(&cluster, &o, ControllerClient::metadata)?
        .map_err(|e| CliError::Failed(format!("cluster-status: {e}")))?;
    print_status(&format!("controller {}", cluster.controller), &m)
}

/// The `cluster-status` report of `m` under the line `source`.
pub(super) fn print_status(source: &str, m: &ClusterMetadata) -> CliResult {
    let s = &m.state;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{source}")?;
    writeln!(
        out,
        "leader {} leader_epoch {} partition_epoch {} isr {} min_insync_replicas {}",
        s.leader.map_or("none".to_string(), |l| l.to_string()),
        s.leader_epoch,
        s.partition_epoch,
        isr_text(&s.isr),
        m.min_insync_replicas
    )?;
    writeln!(
        out,
        "{:<8} {:<22} {:<6} {:<7} {:<9} {:<21} {:<12} last seen",
        "replica", "address", "alive", "in isr", "catch-up", "incarnation", "log end"
    )?;
    for r in &m.replicas {
        writeln!(
            out,
            "{:<8} {:<22} {:<6} {:<7} {:<9} {:<21} {:<12} {}",
            r.replica.to_string(),
            r.addr.to_string(),
            yes(r.alive),
            yes(s.isr.contains(&r.replica)),
            yes(r.needs_catch_up),
            opt(r.incarnation.map(|i| i.to_string())),
            opt(r.log_end.map(|o| o.to_string())),
            opt(r.last_seen_ms_ago.map(|ms| format!("{ms} ms ago"))),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `oncelog node --cluster FILE --id N [--dir DIR] [--segment-bytes N] [--tick-ms N] [--lag-ms N] [limits]`: runs
/// replica N of the cluster until SIGTERM or SIGINT, then closes its log cleanly (the next
/// start scans nothing) and exits 0. DIR defaults to the replica's directory in the cluster
/// file.
pub fn node_main(args: &[String]) -> CliResult {
    let o = Options::parse("node", args)?;
    catch_termination()?;
    let cluster = load_cluster(o.required("node", "--cluster")?)?;
    let id = ReplicaId(
        o.number::<u32>("--id")?
            .ok_or_else(|| CliError::Usage("node needs --id N".into()))?,
    );
    let entry = cluster
        .replica(id)
        .cloned()
        .ok_or_else(|| CliError::Usage(format!("replica {id} is not in the cluster file")))?;
    let dir = match (o.value("--dir"), entry.dir) {
        (Some(d), _) => PathBuf::from(d),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(CliError::Usage(format!(
                "replica {id} has no directory in the cluster file: pass --dir"
            )))
        }
    };
    // Before the node opens its log (a log registers its metrics at open).
    let _metrics = super::metrics::start(o.value("--metrics"))?;
    let mut opts = oncelog::node::NodeOptions::new(cluster, id, dir.clone());
    opts.log = segment_bytes(&o, opts.log)?;
    if let Some(ms) = o.number::<u64>("--tick-ms")? {
        opts.tick_ms = ms.max(1);
    }
    if let Some(ms) = o.number::<u64>("--lag-ms")? {
        opts.lag_ms = ms.max(1);
    }
    opts.transport = limits(&o, opts.transport)?;
    opts.security = member_security(&opts.cluster, Member::Replica(id), entry.addr, &o)?;
    opts.log_refusals = true;
    let tls = if opts.security.is_some() {
        "TLS"
    } else {
        "plain TCP (--insecure)"
    };
    let node = oncelog::node::Node::start(opts).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "oncelog node {id} listening on {} ({tls}), log in {}",
        entry.addr,
        dir.display()
    )?;
    out.flush()?;
    drop(out);
    let signal = wait_for_termination(|| {});
    eprintln!("oncelog node {id}: {signal} received, closing the log");
    node.shutdown()
        .map_err(|e| CliError::Failed(format!("node {id}: closing the log: {e}")))?;
    println!("oncelog node {id}: log closed cleanly");
    Ok(ExitCode::SUCCESS)
}
