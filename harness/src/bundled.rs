//! The bundled driver: with no endpoint given, the harness runs the project's own
//! driver in process, on a temporary socket, with its in-memory cloud (droplets 1, 2
//! and 3 in nyc3; this node is droplet 1).

use std::path::{Path, PathBuf};

/// A bundled driver, kept alive for the run; [`Bundled::stop`] shuts it down before
/// its temporary directory goes away.
pub struct Bundled {
    #[cfg(feature = "bundled")]
    driver: Option<csi_driver::RunningDriver>,
    dir: tempfile::TempDir,
    /// The endpoint clients dial.
    pub endpoint: String,
}

impl Bundled {
    /// The temporary directory everything of this driver lives under.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the bundled run puts target paths.
    pub fn mount_dir(&self) -> PathBuf {
        self.dir.path().join("mount")
    }

    /// Where the bundled run puts staging paths.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.path().join("staging")
    }

    /// Stop serving and wait for in-flight calls.
    pub async fn stop(mut self) {
        #[cfg(feature = "bundled")]
        if let Some(driver) = self.driver.take() {
            if let Err(e) = driver.stop().await {
                eprintln!("csi-sanity: warning: stopping the bundled driver: {e:#}");
            }
        }
        let _ = &mut self;
    }
}

/// Start the bundled driver under a fresh temporary directory.
#[cfg(feature = "bundled")]
pub async fn start() -> anyhow::Result<Bundled> {
    use anyhow::Context;
    use clap::Parser;
    let dir = tempfile::Builder::new().prefix("csi-sanity-").tempdir()?;
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let data_dir = dir.path().join("cloud");
    let device_dir = dir.path().join("by-id");
    std::fs::create_dir_all(&data_dir)?;
    std::fs::create_dir_all(&device_dir)?;
    let config = csi_driver::Config::try_parse_from([
        "csi-driver".to_string(),
        "--endpoint".to_string(),
        endpoint,
        "--data-dir".to_string(),
        data_dir.display().to_string(),
        "--device-dir".to_string(),
        device_dir.display().to_string(),
        "--log-level".to_string(),
        "warn".to_string(),
    ])?;
    let driver = csi_driver::start(config)
        .await
        .context("starting the bundled driver")?;
    Ok(Bundled {
        endpoint: driver.endpoint.clone(),
        driver: Some(driver),
        dir,
    })
}

/// Without the `bundled` feature there is nothing to start.
#[cfg(not(feature = "bundled"))]
pub async fn start() -> anyhow::Result<Bundled> {
    anyhow::bail!(
        "no --csi.endpoint given, and this build has no bundled driver (feature `bundled`)"
    )
}
