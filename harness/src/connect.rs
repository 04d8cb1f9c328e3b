//! Dialing CSI endpoints: unix sockets and TCP, with a connect timeout so a dead
//! endpoint fails fast instead of hanging.

use std::time::Duration;

use anyhow::{bail, Context};
use tonic::transport::{Channel, Endpoint};

/// Turn a csi-sanity endpoint (`unix:///path`, `/path`, `tcp://host:port`, `host:port`,
/// `dns:///host:port`) into what tonic dials.
pub fn normalize(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim();
    if e.is_empty() {
        bail!("endpoint is empty");
    }
    if let Some(path) = e.strip_prefix("unix://") {
        if !path.starts_with('/') {
            bail!("endpoint {e:?}: a unix socket path must be absolute (unix:///path/to/csi.sock)");
        }
        return Ok(format!("unix://{path}"));
    }
    if let Some(path) = e.strip_prefix("unix:") {
        return Ok(format!("unix://{path}"));
    }
    if e.starts_with('/') {
        return Ok(format!("unix://{e}"));
    }
    if let Some(addr) = e
        .strip_prefix("tcp://")
        .or_else(|| e.strip_prefix("dns:///"))
    {
        return Ok(format!("http://{addr}"));
    }
    if e.starts_with("http://") || e.starts_with("https://") {
        return Ok(e.to_string());
    }
    if e.contains(':') {
        return Ok(format!("http://{e}"));
    }
    bail!("endpoint {e:?}: expected unix:///path/to/csi.sock or tcp://host:port")
}

/// Connect to `endpoint`, failing within `timeout` when nothing answers.
pub async fn connect(endpoint: &str, timeout: Duration) -> anyhow::Result<Channel> {
    connect_with(endpoint, timeout, Duration::from_secs(60)).await
}

/// Connect to `endpoint`, failing within `connect_timeout` when nothing answers; every
/// RPC on the channel gets `rpc_timeout` as its deadline, so a stuck driver fails a
/// spec instead of hanging the run.
pub async fn connect_with(
    endpoint: &str,
    connect_timeout: Duration,
    rpc_timeout: Duration,
) -> anyhow::Result<Channel> {
    let timeout = connect_timeout;
    let uri = normalize(endpoint)?;
    if let Some(path) = uri.strip_prefix("unix://") {
        if !std::path::Path::new(path).exists() {
            bail!("endpoint {endpoint}: no socket at {path}");
        }
    }
    let ep = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("endpoint {endpoint:?} is not a valid address"))?
        .connect_timeout(timeout)
        .timeout(rpc_timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(timeout, ep.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => bail!("cannot connect to {endpoint}: {e} ({})", source_chain(&e)),
        Err(_) => bail!("cannot connect to {endpoint}: no answer within {timeout:?}"),
    }
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn endpoints_normalize() {
        assert_eq!(
            normalize("unix:///tmp/x.sock").unwrap(),
            "unix:///tmp/x.sock"
        );
        assert_eq!(normalize("/tmp/x.sock").unwrap(), "unix:///tmp/x.sock");
        assert_eq!(
            normalize("tcp://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            normalize("localhost:9000").unwrap(),
            "http://localhost:9000"
        );
        assert!(normalize("").is_err());
        assert!(normalize("unix://rel").is_err());
        assert!(normalize("nonsense").is_err());
    }
}
