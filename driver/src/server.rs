//! Serving: endpoint parsing, the listening socket, the gRPC server and graceful shutdown.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use csi_proto::v1::controller_server::ControllerServer;
use csi_proto::v1::identity_server::IdentityServer;
use csi_proto::v1::node_server::NodeServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;

use crate::controller::ControllerService;
use crate::identity::IdentityService;
use crate::logging::RpcLogLayer;
use crate::node::NodeService;
use crate::{Config, Driver};

/// How long a graceful stop waits for open connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the driver listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket file.
    Unix(PathBuf),
    /// A TCP address, for remote testing.
    Tcp(String),
}

impl Endpoint {
    /// Parse `unix:///path`, `unix:/path`, a bare absolute path, or `tcp://host:port`.
    pub fn parse(s: &str) -> anyhow::Result<Endpoint> {
        if let Some(rest) = s.strip_prefix("unix://") {
            return Self::unix(rest, s);
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            return Self::unix(rest, s);
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            if rest.is_empty() || !rest.contains(':') {
                bail!("endpoint {s:?}: expected tcp://host:port");
            }
            return Ok(Endpoint::Tcp(rest.to_string()));
        }
        if s.starts_with('/') {
            return Self::unix(s, s);
        }
        bail!("endpoint {s:?}: expected unix:///path/to/csi.sock or tcp://host:port")
    }

    fn unix(path: &str, original: &str) -> anyhow::Result<Endpoint> {
        if !path.starts_with('/') {
            bail!("endpoint {original:?}: the socket path must be absolute");
        }
        Ok(Endpoint::Unix(PathBuf::from(path)))
    }
}

/// Remove a stale socket file, refusing one that a live process still serves and
/// refusing anything that is not a socket.
fn prepare_socket_path(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
        Ok(meta) if !meta.file_type().is_socket() => {
            bail!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            )
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "{} is served by a live process; stop it first or choose another endpoint",
                path.display()
            ),
            Err(_) => {
                tracing::info!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path)
                    .with_context(|| format!("removing stale socket {}", path.display()))?;
            }
        },
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// A driver serving in the background; [`RunningDriver::stop`] shuts it down cleanly.
pub struct RunningDriver {
    /// The endpoint in the form clients dial (`unix:///…` or `http://host:port` for TCP).
    pub endpoint: String,
    /// The shared state, for tests and tools that want to look inside.
    pub driver: Arc<Driver>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningDriver {
    /// Stop serving, wait for in-flight calls, and remove the socket.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner().await
    }

    async fn stop_inner(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.context("driver task panicked")??;
        }
        Ok(())
    }

    /// Wait until the server stops by itself (it only does on error).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        if let Some(task) = self.task.take() {
            task.await.context("driver task panicked")??;
        }
        Ok(())
    }
}

impl Drop for RunningDriver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Bind the endpoint and serve in a background task.
pub async fn start(config: Config) -> anyhow::Result<RunningDriver> {
    let endpoint = Endpoint::parse(&config.endpoint)?;
    let driver = Arc::new(Driver::from_config(config)?);
    let (tx, rx) = oneshot::channel::<()>();
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        let _ = rx.await;
        let _ = stop_http.send(true);
    };
    if let Some(addr) = &driver.config.http_address {
        serve_http(addr, driver.clone(), http_stopped).await?;
    }

    let router = {
        let mut builder = Server::builder().layer(RpcLogLayer::new());
        let mut router =
            builder.add_service(IdentityServer::new(IdentityService::new(driver.clone())));
        if driver.serves_controller() {
            router = router.add_service(ControllerServer::new(ControllerService::new(
                driver.clone(),
            )));
        }
        if driver.serves_node() {
            router = router.add_service(NodeServer::new(NodeService::new(driver.clone())));
        }
        router
    };

    let (dial, task) = match endpoint {
        Endpoint::Unix(path) => {
            prepare_socket_path(&path)?;
            // Only the owner (and its group, for sidecars running as another user) may
            // connect. The umask makes the socket so from its first moment; the chmod
            // below pins the mode whatever the umask was.
            let listener = {
                use nix::sys::stat::{umask, Mode};
                let previous = umask(Mode::from_bits_truncate(0o117));
                let bound = tokio::net::UnixListener::bind(&path);
                umask(previous);
                bound.with_context(|| format!("binding {}", path.display()))?
            };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
                .with_context(|| format!("restricting permissions of {}", path.display()))?;
            tracing::info!(endpoint = %path.display(), "serving CSI");
            let incoming = UnixListenerStream::new(listener);
            let socket = path.clone();
            let task = tokio::spawn(async move {
                let result = router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await;
                let _ = std::fs::remove_file(&socket);
                result.context("gRPC server failed")
            });
            (format!("unix://{}", path.display()), task)
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding tcp://{addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(endpoint = %local, "serving CSI over TCP");
            let incoming = TcpListenerStream::new(listener);
            let task = tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .context("gRPC server failed")
            });
            (format!("http://{local}"), task)
        }
    };

    Ok(RunningDriver {
        endpoint: dial,
        driver,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Serve /healthz and /metrics on `addr` until `stopped` turns true.
async fn serve_http(
    addr: &str,
    driver: Arc<Driver>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--http-address {addr}: cannot listen"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz and /metrics");
    let app = crate::metrics::router(driver);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(())
}

/// Run until SIGTERM or SIGINT, then stop gracefully and remove the socket.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut running = start(config).await?;
    let task = running.task.take();
    let Some(mut task) = task else {
        return Ok(());
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        result = &mut task => return result.context("driver task panicked")?,
    }
    if let Some(tx) = running.shutdown.take() {
        let _ = tx.send(());
    }
    // In-flight calls get a grace period; a client that never hangs up must not keep a
    // node from draining.
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
        Ok(result) => result.context("driver task panicked")??,
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; stopping anyway");
            task.abort();
            if let Ok(Endpoint::Unix(path)) = Endpoint::parse(&running.driver.config.endpoint) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_unix_and_tcp_forms() {
        assert_eq!(
            Endpoint::parse("unix:///tmp/csi.sock").unwrap(),
            Endpoint::Unix("/tmp/csi.sock".into())
        );
        assert_eq!(
            Endpoint::parse("/tmp/csi.sock").unwrap(),
            Endpoint::Unix("/tmp/csi.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:10000").unwrap(),
            Endpoint::Tcp("127.0.0.1:10000".into())
        );
        assert!(Endpoint::parse("unix://relative.sock").is_err());
        assert!(Endpoint::parse("tcp://nohost").is_err());
        assert!(Endpoint::parse("http://x").is_err());
    }

    #[test]
    fn a_regular_file_at_the_socket_path_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        std::fs::write(&path, b"data").unwrap();
        let err = prepare_socket_path(&path).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(path.exists());
    }

    #[test]
    fn a_live_socket_is_refused_and_a_stale_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = prepare_socket_path(&path).unwrap_err();
        assert!(err.to_string().contains("live process"), "{err}");
        drop(live);
        // The file remains after the listener closes: it is now stale.
        assert!(path.exists());
        prepare_socket_path(&path).unwrap();
        assert!(!path.exists());
    }
}
