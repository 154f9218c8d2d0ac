//! `--metrics ADDR` of `node`, `controller` and `serve`: installs the Prometheus recorder as the process's
//! `metrics` recorder and serves it over HTTP (docs/operations.md, "Observability").

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use oncelog::observe::http::MetricsServer;
use oncelog::observe::prometheus::PrometheusRecorder;

use super::CliError;

/// `ADDR` is `IP:PORT`, or a bare `PORT` meaning `127.0.0.1:PORT` (loopback by default).
pub fn parse_addr(a: &str) -> Result<SocketAddr, CliError> {
    if let Ok(port) = a.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    a.parse::<SocketAddr>()
        .map_err(|_| CliError::Usage(format!("--metrics: '{a}' is not PORT or IP:PORT")))
}

/// Installs the recorder and starts the endpoint when `addr` is given. Call it before opening
/// any log: a log registers its metrics at open.
pub fn start(addr: Option<&str>) -> Result<Option<MetricsServer>, CliError> {
    let Some(a) = addr else {
        return Ok(None);
    };
    let addr = parse_addr(a)?;
    let recorder = PrometheusRecorder::new();
    metrics::set_global_recorder(recorder.clone())
        .map_err(|e| CliError::Failed(format!("cannot install the metrics recorder: {e}")))?;
    let server = MetricsServer::start(addr, recorder)
        .map_err(|e| CliError::Failed(format!("--metrics {addr}: {e}")))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "the metrics endpoint on {} is not on loopback and has no authentication",
            server.local_addr()
        );
    }
    tracing::info!(
        "metrics in the Prometheus text format at http://{}/metrics",
        server.local_addr()
    );
    Ok(Some(server))
}
