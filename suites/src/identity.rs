//! Identity: every plugin answers who it is, what it can do, and whether it is ready.

use csi_proto::v1::plugin_capability;
use csi_proto::v1::{GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest};

use crate::check::ensure;
use crate::{call, spec, Spec};

const GROUP: &str = "Identity";

/// Whether a plugin name is valid per the spec: at most 63 characters, reverse
/// domain-name notation, alphanumerics with `-` and `.` inside.
pub fn valid_plugin_name(name: &str) -> bool {
    let b = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && name.contains('.')
        && !name.contains("..")
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec!(
            GROUP,
            "GetPluginInfo returns a valid name and a non-empty version",
            "spec GetPluginInfo: name MUST follow reverse domain name notation, at most 63 characters; vendor_version is REQUIRED",
            [],
            |ctx: crate::Ctx| async move {
                const RULE: &str = "GetPluginInfo: name is REQUIRED, <= 63 chars, reverse domain name notation; vendor_version is REQUIRED";
                for (at, identity) in ctx.identities() {
                    let info = call!(identity, get_plugin_info, "GetPluginInfo", GetPluginInfoRequest {}).ok(RULE)?;
                    ensure(valid_plugin_name(&info.name), "GetPluginInfo", format!("a name like block.csi.example.com (<= 63 chars) from {at}"), &info.name, RULE)?;
                    ensure(!info.vendor_version.is_empty(), "GetPluginInfo", format!("a non-empty vendor_version from {at}"), &info.vendor_version, RULE)?;
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "GetPluginCapabilities returns only known capability values",
            "spec GetPluginCapabilities: each capability is a PluginCapability.Service or VolumeExpansion value of the spec",
            [],
            |ctx: crate::Ctx| async move {
                const RULE: &str = "GetPluginCapabilities: capabilities are values defined by the spec (not UNKNOWN)";
                for (at, identity) in ctx.identities() {
                let resp = call!(identity, get_plugin_capabilities, "GetPluginCapabilities", GetPluginCapabilitiesRequest {}).ok(RULE)?;
                for cap in &resp.capabilities {
                    let known = match &cap.r#type {
                        Some(plugin_capability::Type::Service(s)) => matches!(
                            plugin_capability::service::Type::try_from(s.r#type),
                            Ok(t) if t != plugin_capability::service::Type::Unknown
                        ),
                        Some(plugin_capability::Type::VolumeExpansion(v)) => matches!(
                            plugin_capability::volume_expansion::Type::try_from(v.r#type),
                            Ok(t) if t != plugin_capability::volume_expansion::Type::Unknown
                        ),
                        None => false,
                    };
                    ensure(known, "GetPluginCapabilities", format!("a known Service or VolumeExpansion value from {at}"), cap, RULE)?;
                }
                }
                Ok(())
            }
        ),
        spec!(
            GROUP,
            "Probe answers, and a ready value when given is a boolean",
            "spec Probe: the plugin answers OK when healthy; FAILED_PRECONDITION when a dependency is missing",
            [],
            |ctx: crate::Ctx| async move {
                const RULE: &str = "Probe: a healthy plugin answers OK";
                for (_, identity) in ctx.identities() {
                    call!(identity, probe, "Probe", ProbeRequest {}).ok(RULE)?;
                }
                Ok(())
            }
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::valid_plugin_name;

    #[test]
    fn plugin_names() {
        assert!(valid_plugin_name("csi.example.com"));
        assert!(!valid_plugin_name("example"));
        assert!(!valid_plugin_name(&"a.".repeat(40)));
    }
}
