//! The cloud the controller talks to: one trait, two backends (in-process fake, HTTP).

use std::sync::Arc;

use crate::config::{CloudKind, Config};

/// A failure talking to the cloud.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("cloud backend {0} is not built yet")]
    Unavailable(String),
}

/// What the controller needs from a block-storage cloud.
#[async_trait::async_trait]
pub trait CloudApi: Send + Sync {
    /// Cheap reachability check, for Probe.
    async fn ping(&self) -> Result<(), CloudError>;
}

struct Placeholder;

#[async_trait::async_trait]
impl CloudApi for Placeholder {
    async fn ping(&self) -> Result<(), CloudError> {
        Ok(())
    }
}

/// Open the backend chosen by `--cloud`.
pub fn open(config: &Config, _node_id: Option<&str>) -> anyhow::Result<Arc<dyn CloudApi>> {
    match config.cloud {
        CloudKind::Memory | CloudKind::Http => Ok(Arc::new(Placeholder)),
    }
}
