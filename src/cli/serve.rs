//! `oncelog serve`: the Kafka wire protocol over a broker directory (`docs/kafka-wire.md`).

use super::{CliError, CliResult};

#[cfg(not(feature = "kafka"))]
pub fn main(_args: &[String]) -> CliResult {
    Err(CliError::Failed(
        "this oncelog was built without the `kafka` feature (cargo build --features kafka)".into(),
    ))
}

#[cfg(feature = "kafka")]
pub fn main(args: &[String]) -> CliResult {
    use std::io::Write;
    use std::net::SocketAddr;
    use std::process::ExitCode;

    use oncelog::broker::{Broker, BrokerConfig};
    use oncelog::io::signals;
    use std::time::Duration;

    use oncelog::kafka::{ServeConfig, ServeSasl, ServeTls, Server};
    use oncelog::net::CertPaths;

    use super::cluster::Options;

    let o = Options::parse("serve", args)?;
    let mut config = ServeConfig::default();
    let dir = o.value("--data").unwrap_or("oncelog-data").to_string();
    if let Some(a) = o.value("--listen") {
        config.listen = a
            .parse::<SocketAddr>()
            .map_err(|_| CliError::Usage(format!("--listen: '{a}' is not an IP:PORT address")))?;
    }
    if let Some(a) = o.value("--advertise") {
        let (host, port) = a
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| CliError::Usage(format!("--advertise: '{a}' is not HOST:PORT")))?;
        config.advertised = Some((host.to_string(), port));
    }
    if let Some(n) = o.number::<u32>("--partitions")? {
        if n == 0 {
            return Err(CliError::Usage("--partitions must be > 0".into()));
        }
        config.default_partitions = n;
    }
    if let Some(n) = o.number::<usize>("--max-request-bytes")? {
        if n < 8 {
            return Err(CliError::Usage(
                "--max-request-bytes must be at least 8".into(),
            ));
        }
        config.max_frame_bytes = n;
    }
    if let Some(n) = o.number::<u64>("--test-drop-after-append")? {
        if n == 0 {
            return Err(CliError::Usage(
                "--test-drop-after-append must be > 0".into(),
            ));
        }
        eprintln!(
            "oncelog serve: TEST FAULT: dropping the connection after every N-th append, N = {n}"
        );
        config.test_drop_after_append = Some(n);
    }
    if o.switch("--test-ack-without-storing") {
        eprintln!(
            "oncelog serve: TEST MODE: Produce is acknowledged WITHOUT STORING anything \
             (--test-ack-without-storing, for the protocol-cost bench only)"
        );
        config.test_ack_without_storing = true;
    }
    match (o.value("--tls-cert"), o.value("--tls-key")) {
        (Some(cert), Some(key)) => {
            config.tls = Some(ServeTls {
                identity: CertPaths {
                    cert: cert.into(),
                    key: key.into(),
                },
                client_ca: o.value("--tls-client-ca").map(Into::into),
            })
        }
        (None, None) if o.value("--tls-client-ca").is_none() => {}
        _ => {
            return Err(CliError::Usage(
                "--tls-cert and --tls-key go together (and --tls-client-ca needs them)".into(),
            ))
        }
    }
    match o.value("--sasl-users") {
        Some(users) => {
            config.sasl = Some(ServeSasl {
                users: users.into(),
                allow_plaintext: o.switch("--sasl-allow-plaintext"),
            })
        }
        None if o.switch("--sasl-allow-plaintext") => {
            return Err(CliError::Usage(
                "--sasl-allow-plaintext needs --sasl-users".into(),
            ))
        }
        None => {}
    }
    config.acl = o.value("--acl").map(Into::into);
    if let Some(n) = o.number::<usize>("--max-connections")? {
        config.max_connections = n;
    }
    if let Some(n) = o.number::<u64>("--frame-deadline-ms")? {
        config.frame_deadline = Duration::from_millis(n);
    }
    if let Some(n) = o.number::<u64>("--idle-timeout-ms")? {
        config.idle_timeout = Duration::from_millis(n);
    }
    config
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut broker_config = BrokerConfig::default();
    broker_config.log = super::cluster::segment_bytes(&o, broker_config.log)?;
    signals::install_termination_handler()
        .map_err(|e| CliError::Failed(format!("cannot install the SIGTERM/SIGINT handler: {e}")))?;
    // Before the broker opens its logs (a log registers its metrics at open).
    let _metrics = super::metrics::start(o.value("--metrics"))?;
    let broker = Broker::open(&dir, broker_config)
        .map_err(|e| CliError::Failed(format!("opening {dir}: {e}")))?;
    let (tls, sasl) = (config.tls.clone(), config.sasl.is_some());
    let server = Server::bind(broker, config).map_err(|e| CliError::Failed(e.to_string()))?;
    // One line a script can wait for and parse (the tests read the port from it).
    println!(
        "oncelog serve: listening on {} (data {dir}){}",
        server.local_addr(),
        match (&tls, sasl) {
            (Some(_), true) => ", SASL_SSL",
            (Some(_), false) => ", SSL",
            (None, true) => ", SASL_PLAINTEXT",
            (None, false) => "",
        }
    );
    std::io::stdout().flush()?;
    server
        .run_until(|| signals::termination_requested().is_some())
        .map_err(|e| CliError::Failed(format!("closing {dir}: {e}")))?;
    eprintln!("oncelog serve: stopped, {dir} closed cleanly");
    Ok(ExitCode::SUCCESS)
}
