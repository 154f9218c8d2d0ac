//! `oncelog controller`, `oncelog move-leader` and `oncelog cluster-status`: the controller
//! process of the TCP driver and the operator's two commands against it.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use oncelog::io::fs::RealStorage;
use oncelog::io::signals;
use oncelog::net::{
    ClusterFile, ControllerClient, ControllerConfig, ControllerServer, TransportConfig,
};
use oncelog::replication::ReplicaId;
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

    fn required(&self, command: &str, name: &str) -> Result<&str, CliError> {
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

    fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
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
fn catch_termination() -> Result<(), CliError> {
    signals::install_termination_handler()
        .map_err(|e| CliError::Failed(format!("cannot install the SIGTERM/SIGINT handler: {e}")))
}

/// Blocks until SIGTERM or SIGINT; returns its name.
fn wait_for_termination() -> &'static str {
    loop {
        if let Some(s) = signals::termination_requested() {
            return signals::signal_name(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn load_cluster(path: &str) -> Result<ClusterFile, CliError> {
    ClusterFile::load(Path::new(path)).map_err(|e| CliError::Failed(e.to_string()))
}

/// Where the controller keeps its state by default: `controller-data` beside the cluster file.
pub fn default_controller_dir(cluster_file: &Path) -> PathBuf {
    oncelog::io::parent_dir(cluster_file).join("controller-data")
}

/// `oncelog controller --cluster FILE [--dir DIR] [--session-timeout-ms N] [limits]`: serves
/// until SIGTERM or SIGINT, then stops serving, releases its directory and exits 0.
pub fn controller_main(args: &[String]) -> CliResult {
    let o = Options::parse("controller", args)?;
    catch_termination()?;
    let path = o.required("controller", "--cluster")?;
    let cluster = load_cluster(path)?;
    let dir = o
        .value("--dir")
        .map_or_else(|| default_controller_dir(Path::new(path)), PathBuf::from);
    let mut config = ControllerConfig::new(dir.clone());
    config.verbose = true;
    config.transport = limits(&o, config.transport)?;
    if let Some(ms) = o.number::<u64>("--session-timeout-ms")? {
        if ms == 0 {
            return Err(CliError::Usage("--session-timeout-ms must be > 0".into()));
        }
        config.session_timeout_ms = ms;
        config.expiry_check_interval = Duration::from_millis((ms / 10).clamp(1, 100));
    }
    let listener = TcpListener::bind(cluster.controller)
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", cluster.controller)))?;
    let replicas = cluster.replicas.len();
    let timeout = config.session_timeout_ms;
    let server = ControllerServer::start(
        listener,
        cluster,
        config,
        Arc::new(SystemClock),
        Arc::new(RealStorage::new()),
    )?;
    let addr = server
        .local_addr()
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "oncelog controller listening on {addr}: {replicas} replicas, session timeout {timeout} \
         ms, state in {}",
        dir.display()
    )?;
    out.flush()?;
    drop(out);
    let signal = wait_for_termination();
    eprintln!("oncelog controller: {signal} received, stopping");
    server.shutdown();
    println!("oncelog controller stopped");
    Ok(ExitCode::SUCCESS)
}

fn client(cluster: &ClusterFile, o: &Options) -> Result<ControllerClient, CliError> {
    let timeout = Duration::from_millis(o.number::<u64>("--timeout-ms")?.unwrap_or(5_000));
    Ok(ControllerClient::new(
        cluster.controller,
        oncelog::net::TransportConfig::default(),
        timeout,
    ))
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
    let mut c = client(&cluster, &o)?;
    let e = c
        .elect_leader(Some(ReplicaId(to)), o.switch("--unclean"))
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
    let mut c = client(&cluster, &o)?;
    let m = c
        .metadata()
        .map_err(|e| CliError::Failed(format!("cluster-status: {e}")))?;
    let s = &m.state;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut out = std::io::stdout().lock();
    writeln!(out, "controller {}", cluster.controller)?;
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

/// `oncelog node --cluster FILE --id N [--dir DIR] [--tick-ms N] [--lag-ms N] [limits]`: runs
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
    let mut opts = oncelog::node::NodeOptions::new(cluster, id, dir.clone());
    if let Some(ms) = o.number::<u64>("--tick-ms")? {
        opts.tick_ms = ms.max(1);
    }
    if let Some(ms) = o.number::<u64>("--lag-ms")? {
        opts.lag_ms = ms.max(1);
    }
    opts.transport = limits(&o, opts.transport)?;
    let node = oncelog::node::Node::start(opts).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "oncelog node {id} listening on {}, log in {}",
        entry.addr,
        dir.display()
    )?;
    out.flush()?;
    drop(out);
    let signal = wait_for_termination();
    eprintln!("oncelog node {id}: {signal} received, closing the log");
    node.shutdown()
        .map_err(|e| CliError::Failed(format!("node {id}: closing the log: {e}")))?;
    println!("oncelog node {id}: log closed cleanly");
    Ok(ExitCode::SUCCESS)
}
