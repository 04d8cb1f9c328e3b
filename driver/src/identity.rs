//! The Identity service: who the plugin is, what it can do, and whether it is ready.

use std::sync::Arc;

use csi_proto::v1::identity_server::Identity;
use csi_proto::v1::plugin_capability::{self, service, volume_expansion};
use csi_proto::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use tonic::{Request, Response, Status};

use crate::Driver;

/// Checks a plugin name against the spec: at most 63 characters, reverse domain-name
/// notation, alphanumerics with `-` and `.` between them, starting and ending alphanumeric.
pub fn validate_driver_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("driver name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "driver name {name:?} is {} characters; the spec allows at most 63",
            name.len()
        ));
    }
    if !name.contains('.') {
        return Err(format!(
            "driver name {name:?} is not in reverse domain-name notation (e.g. block.csi.example.com)"
        ));
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(format!(
            "driver name {name:?} must begin and end with a letter or digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "driver name {name:?} holds {c:?}; only letters, digits, '-' and '.' are allowed"
        ));
    }
    if name.contains("..") {
        return Err(format!("driver name {name:?} has an empty label"));
    }
    Ok(())
}

/// Serves Identity for every mode.
pub struct IdentityService {
    driver: Arc<Driver>,
}

impl IdentityService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

fn service_capability(kind: service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        let config = &self.driver.config;
        Ok(Response::new(GetPluginInfoResponse {
            name: config.driver_name.clone(),
            vendor_version: config.driver_version.clone(),
            manifest: [
                (
                    "cloud".to_string(),
                    format!("{:?}", config.cloud).to_lowercase(),
                ),
                (
                    "mode".to_string(),
                    format!("{:?}", config.mode).to_lowercase(),
                ),
            ]
            .into_iter()
            .collect(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = Vec::new();
        if self.driver.serves_controller() {
            capabilities.push(service_capability(service::Type::ControllerService));
            capabilities.push(PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    },
                )),
            });
        }
        // Topology is by region, and both halves of the plugin report it.
        capabilities.push(service_capability(
            service::Type::VolumeAccessibilityConstraints,
        ));
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        match self.driver.readiness().await {
            Ok(()) => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Err(reason) => Err(IdentityError::NotReady { reason }.into()),
        }
    }
}

/// Why an Identity RPC failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Probe found the plugin unable to serve (its cloud unreachable, say).
    #[error("plugin is not ready: {reason}")]
    NotReady { reason: String },
}

#[cfg(test)]
mod tests {
    use super::validate_driver_name;

    #[test]
    fn driver_names_follow_the_spec() {
        assert!(validate_driver_name("dobs.csi.rustcsi.dev").is_ok());
        assert!(validate_driver_name("a.b").is_ok());
        assert!(validate_driver_name("").is_err());
        assert!(validate_driver_name("nodots").is_err());
        assert!(validate_driver_name(&format!("{}.com", "a".repeat(60))).is_err());
        assert!(validate_driver_name("-bad.start").is_err());
        assert!(validate_driver_name("bad.end-").is_err());
        assert!(validate_driver_name("under_score.com").is_err());
        assert!(validate_driver_name("a..b").is_err());
    }
}
