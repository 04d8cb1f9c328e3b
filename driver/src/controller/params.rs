//! What the Controller accepts: required fields and size limits, volume capabilities,
//! StorageClass parameters, mutable parameters, capacity ranges and topology.
//!
//! Parameters (CreateVolume, GetCapacity, ValidateVolumeCapabilities):
//! - `csi.storage.k8s.io/fstype`: `ext4` or `xfs`, the filesystem NodeStage makes;
//! - any other `csi.storage.k8s.io/*` key the external-provisioner passes (with
//!   `--extra-create-metadata`, the PVC and PV names are kept in the volume's description);
//! - `region`: the region slug to create in (must agree with the requested topology);
//! - `tags`: comma-separated DigitalOcean tags for the new volume.
//!
//! Mutable parameters (CreateVolume, ControllerModifyVolume): `tags`, comma-separated; on
//! modify they replace the volume's tags (empty clears them). Snapshot parameters: `tags`
//! and `csi.storage.k8s.io/*`. Every other key is refused with INVALID_ARGUMENT naming it.

use std::collections::HashMap;

use super::error::ControllerError;
use crate::cloud::{GIB, MAX_VOLUME_GIB, MIN_VOLUME_GIB};
use crate::config::TOPOLOGY_REGION_KEY;
pub use crate::status::shown;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::AccessType;
use csi_proto::v1::{CapacityRange, Topology, TopologyRequirement, VolumeCapability};

/// Longest string field the spec requires a plugin to accept, and the most it must.
pub const MAX_STRING_BYTES: usize = 128;
/// Largest map field (keys and values together).
pub const MAX_MAP_BYTES: usize = 4096;

/// Parameter: the filesystem NodeStage makes.
pub const PARAM_FSTYPE: &str = "csi.storage.k8s.io/fstype";
/// Prefix of the keys the Kubernetes sidecars add.
pub const PARAM_K8S_PREFIX: &str = "csi.storage.k8s.io/";
/// Parameters added by `--extra-create-metadata`.
pub const PARAM_PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const PARAM_PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
pub const PARAM_PV_NAME: &str = "csi.storage.k8s.io/pv/name";
/// Parameter: the region to create in.
pub const PARAM_REGION: &str = "region";
/// Parameter and mutable parameter: comma-separated tags.
pub const PARAM_TAGS: &str = "tags";

/// Filesystems NodeStage can make.
pub const SUPPORTED_FS_TYPES: [&str; 2] = ["ext4", "xfs"];

/// A string field that must be present, within the size limit.
pub fn require(value: &str, field: &'static str) -> Result<(), ControllerError> {
    if value.is_empty() {
        return Err(ControllerError::Missing { field });
    }
    check_length(value, field)
}

/// An optional string field within the size limit.
pub fn check_length(value: &str, field: &'static str) -> Result<(), ControllerError> {
    if value.len() > MAX_STRING_BYTES {
        return Err(ControllerError::TooLong {
            field,
            len: value.len(),
        });
    }
    Ok(())
}

/// A map field within the size limit.
pub fn check_map_size(
    map: &HashMap<String, String>,
    field: &'static str,
) -> Result<(), ControllerError> {
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_MAP_BYTES {
        return Err(ControllerError::MapTooLarge { field, size });
    }
    Ok(())
}

/// Why a volume capability can't be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("access_mode is required")]
    NoAccessMode,
    /// Any MULTI_NODE mode: a volume attaches to one droplet.
    #[error(
        "access mode {} is not supported: a block storage volume attaches to one droplet at a \
         time",
        mode.as_str_name()
    )]
    MultiNode { mode: Mode },
    #[error("access mode {mode} is not a known mode")]
    UnknownMode { mode: i32 },
    #[error("access_type is required: block or mount")]
    NoAccessType,
    #[error(
        "fs_type {} is not supported; use one of {}",
        shown(fs_type),
        SUPPORTED_FS_TYPES.join(", ")
    )]
    UnsupportedFs { fs_type: String },
}

/// Why a capability is not supported, or Ok.
pub fn capability_support(cap: &VolumeCapability) -> Result<(), CapabilityError> {
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or(CapabilityError::NoAccessMode)?;
    match Mode::try_from(mode.mode) {
        Ok(
            Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter,
        ) => {}
        Ok(
            mode @ (Mode::MultiNodeReaderOnly
            | Mode::MultiNodeSingleWriter
            | Mode::MultiNodeMultiWriter),
        ) => return Err(CapabilityError::MultiNode { mode }),
        Ok(Mode::Unknown) | Err(_) => {
            return Err(CapabilityError::UnknownMode { mode: mode.mode });
        }
    }
    match &cap.access_type {
        None => Err(CapabilityError::NoAccessType),
        Some(AccessType::Block(_)) => Ok(()),
        Some(AccessType::Mount(m)) => {
            if m.fs_type.is_empty() || SUPPORTED_FS_TYPES.contains(&m.fs_type.as_str()) {
                Ok(())
            } else {
                Err(CapabilityError::UnsupportedFs {
                    fs_type: m.fs_type.clone(),
                })
            }
        }
    }
}

/// The first unsupported capability of a list, named by its index in `field`.
pub fn first_unsupported(caps: &[VolumeCapability], field: &str) -> Option<ControllerError> {
    caps.iter().enumerate().find_map(|(i, cap)| {
        capability_support(cap)
            .err()
            .map(|why| ControllerError::UnsupportedCapability {
                field: format!("{field}[{i}]"),
                why,
            })
    })
}

/// A required list of capabilities, each supported.
pub fn check_capabilities(
    caps: &[VolumeCapability],
    field: &'static str,
) -> Result<(), ControllerError> {
    if caps.is_empty() {
        return Err(ControllerError::Missing { field });
    }
    first_unsupported(caps, field).map_or(Ok(()), Err)
}

/// A required single capability, supported.
pub fn check_capability(
    cap: Option<&VolumeCapability>,
    field: &'static str,
) -> Result<(), ControllerError> {
    let cap = cap.ok_or(ControllerError::Missing { field })?;
    capability_support(cap).map_err(|why| ControllerError::UnsupportedCapability {
        field: field.to_string(),
        why,
    })
}

/// Parsed CreateVolume parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateParams {
    pub fs_type: Option<String>,
    pub region: Option<String>,
    pub tags: Vec<String>,
    /// `namespace/name` of the claim.
    pub pvc: Option<String>,
    pub pv: Option<String>,
}

/// Why a parameter map is refused; each names the offending key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{field}: unknown key {}; accepted keys are {accepted}", shown(key))]
    UnknownKey {
        field: &'static str,
        key: String,
        accepted: &'static str,
    },
    #[error(
        "parameters: {} {} is not supported; use one of {}",
        PARAM_FSTYPE,
        shown(value),
        SUPPORTED_FS_TYPES.join(", ")
    )]
    UnsupportedFsType { value: String },
    #[error("parameters: region {} is not a region slug (e.g. nyc3)", shown(value))]
    BadRegion { value: String },
    #[error(
        "{field}: tag {} is invalid; tags hold letters, digits, ':', '-' and '_', at most 255 \
         characters",
        shown(tag)
    )]
    BadTag { field: &'static str, tag: String },
}

fn unknown_key(key: &str, field: &'static str, accepted: &'static str) -> ParamError {
    ParamError::UnknownKey {
        field,
        key: key.to_string(),
        accepted,
    }
}

/// CreateVolume's `parameters`; the error names the offending key.
pub fn parse_create_params(map: &HashMap<String, String>) -> Result<CreateParams, ParamError> {
    let mut params = CreateParams::default();
    for (key, value) in map {
        match key.as_str() {
            PARAM_FSTYPE => {
                if !SUPPORTED_FS_TYPES.contains(&value.as_str()) {
                    return Err(ParamError::UnsupportedFsType {
                        value: value.clone(),
                    });
                }
                params.fs_type = Some(value.clone());
            }
            PARAM_REGION => {
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    return Err(ParamError::BadRegion {
                        value: value.clone(),
                    });
                }
                params.region = Some(value.clone());
            }
            PARAM_TAGS => params.tags = parse_tags(value, "parameters")?,
            PARAM_PV_NAME => params.pv = Some(value.clone()),
            PARAM_PVC_NAME | PARAM_PVC_NAMESPACE => {}
            k if k.starts_with(PARAM_K8S_PREFIX) => {}
            other => {
                return Err(unknown_key(
                    other,
                    "parameters",
                    "csi.storage.k8s.io/fstype, csi.storage.k8s.io/*, region and tags",
                ))
            }
        }
    }
    if let Some(name) = map.get(PARAM_PVC_NAME) {
        params.pvc = Some(match map.get(PARAM_PVC_NAMESPACE) {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        });
    }
    Ok(params)
}

/// Parsed mutable parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MutableParams {
    /// The volume's tags, when given.
    pub tags: Option<Vec<String>>,
}

/// `mutable_parameters`, of CreateVolume and ControllerModifyVolume.
pub fn parse_mutable_params(map: &HashMap<String, String>) -> Result<MutableParams, ParamError> {
    let mut params = MutableParams::default();
    for (key, value) in map {
        match key.as_str() {
            PARAM_TAGS => params.tags = Some(parse_tags(value, "mutable_parameters")?),
            other => {
                return Err(unknown_key(
                    other,
                    "mutable_parameters",
                    "tags (the only parameter this driver can change on a volume)",
                ))
            }
        }
    }
    Ok(params)
}

/// CreateSnapshot's `parameters`: the tags.
pub fn parse_snapshot_params(map: &HashMap<String, String>) -> Result<Vec<String>, ParamError> {
    let mut tags = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            PARAM_TAGS => tags = parse_tags(value, "parameters")?,
            k if k.starts_with(PARAM_K8S_PREFIX) => {}
            other => {
                return Err(unknown_key(
                    other,
                    "parameters",
                    "tags and csi.storage.k8s.io/*",
                ))
            }
        }
    }
    Ok(tags)
}

/// Comma-separated DigitalOcean tags: letters, digits, ':', '-' and '_', at most 255 each.
pub fn parse_tags(value: &str, field: &'static str) -> Result<Vec<String>, ParamError> {
    let mut tags: Vec<String> = Vec::new();
    for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let valid = tag.len() <= 255
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_'));
        if !valid {
            return Err(ParamError::BadTag {
                field,
                tag: tag.to_string(),
            });
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    Ok(tags)
}

/// The size to create for a capacity range: the required bytes rounded up to whole GiB,
/// 1 GiB when nothing is required. OUT_OF_RANGE when no size fits the range.
pub fn size_for_range(range: Option<&CapacityRange>) -> Result<u64, ControllerError> {
    let Some(range) = range else {
        return Ok(MIN_VOLUME_GIB);
    };
    let (required, limit) = (range.required_bytes, range.limit_bytes);
    if required < 0 || limit < 0 {
        return Err(ControllerError::NegativeCapacity);
    }
    if limit > 0 && required > limit {
        return Err(ControllerError::RequiredOverLimit { required, limit });
    }
    if limit > 0 && limit < GIB {
        return Err(ControllerError::LimitBelowSmallest { limit });
    }
    let max_bytes = MAX_VOLUME_GIB as i64 * GIB;
    if required > max_bytes {
        return Err(ControllerError::OverLargest { required });
    }
    let gib = (required as u64).div_ceil(GIB as u64).max(MIN_VOLUME_GIB);
    if limit > 0 && gib as i64 * GIB > limit {
        return Err(ControllerError::NoWholeGib { required, limit });
    }
    Ok(gib)
}

/// Grow `gib` to at least `min_gib` (a source's size), within the range's limit.
pub fn fit_to_source(
    range: Option<&CapacityRange>,
    gib: u64,
    min_gib: u64,
    source: &str,
) -> Result<u64, ControllerError> {
    if gib >= min_gib {
        return Ok(gib);
    }
    let limit = range.map_or(0, |r| r.limit_bytes);
    if limit > 0 && (min_gib as i64) * GIB > limit {
        return Err(ControllerError::SourceOverLimit {
            origin: source.to_string(),
            min_gib,
            limit,
        });
    }
    Ok(min_gib)
}

/// Whether an existing volume of `gib` satisfies the range.
pub fn range_allows(range: Option<&CapacityRange>, gib: u64) -> bool {
    let Some(range) = range else {
        return true;
    };
    let bytes = gib as i64 * GIB;
    bytes >= range.required_bytes && (range.limit_bytes == 0 || bytes <= range.limit_bytes)
}

/// The region of a topology term, or None when it has keys this driver does not know.
pub fn term_region(term: &Topology) -> Option<&str> {
    if term.segments.keys().any(|k| k != TOPOLOGY_REGION_KEY) {
        return None;
    }
    term.segments.get(TOPOLOGY_REGION_KEY).map(String::as_str)
}

/// The single-region topology of a volume.
pub fn region_topology(region: &str) -> Topology {
    Topology {
        segments: [(TOPOLOGY_REGION_KEY.to_string(), region.to_string())]
            .into_iter()
            .collect(),
    }
}

/// Where a new volume may go, and where it should.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub requirement: Option<&'a TopologyRequirement>,
    /// The `region` parameter.
    pub parameter: Option<&'a str>,
    /// The region of the snapshot or volume it is made from.
    pub source: Option<&'a str>,
    /// `--region`, when nothing else decides.
    pub default: &'a str,
}

impl Placement<'_> {
    /// The requisite regions, when the requirement names any terms.
    fn requisite(&self) -> Option<Vec<&str>> {
        let terms = &self.requirement?.requisite;
        (!terms.is_empty()).then(|| terms.iter().filter_map(term_region).collect())
    }

    fn preferred(&self) -> Vec<&str> {
        self.requirement
            .map(|r| r.preferred.iter().filter_map(term_region).collect())
            .unwrap_or_default()
    }

    /// Whether a volume in `region` meets the request (for a volume that already exists).
    pub fn allows(&self, region: &str) -> bool {
        self.parameter.is_none_or(|p| p == region)
            && self.source.is_none_or(|s| s == region)
            && self.requisite().is_none_or(|r| r.contains(&region))
    }

    /// The region to create in, among `available`; an error says why the requested
    /// topology can't be met.
    pub fn choose(&self, available: &[String]) -> Result<String, ControllerError> {
        let is_available = |r: &str| available.iter().any(|a| a == r);
        let requisite = self.requisite();
        if requisite.as_ref().is_some_and(|r| r.is_empty()) {
            return Err(ControllerError::NoKnownTopology);
        }
        if let (Some(p), Some(s)) = (self.parameter, self.source) {
            if p != s {
                return Err(ControllerError::RegionDiffersFromSource {
                    parameter: p.to_string(),
                    origin: s.to_string(),
                });
            }
        }
        if let Some(fixed) = self.parameter.or(self.source) {
            if !self.allows(fixed) {
                return Err(ControllerError::RegionOutsideRequisite {
                    region: fixed.to_string(),
                });
            }
            if !is_available(fixed) {
                return Err(ControllerError::RegionUnavailable {
                    region: fixed.to_string(),
                    available: available.to_vec(),
                });
            }
            return Ok(fixed.to_string());
        }
        let mut candidates: Vec<&str> = self
            .preferred()
            .into_iter()
            .filter(|p| requisite.as_ref().is_none_or(|r| r.contains(p)))
            .collect();
        match &requisite {
            Some(r) => candidates.extend(r.iter().copied()),
            None => candidates.push(self.default),
        }
        candidates
            .into_iter()
            .find(|r| is_available(r))
            .map(str::to_string)
            .ok_or_else(|| ControllerError::TopologyUnavailable {
                available: available.to_vec(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(mode: Mode, fs: Option<&str>) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(match fs {
                None => AccessType::Block(BlockVolume {}),
                Some(fs) => AccessType::Mount(MountVolume {
                    fs_type: fs.into(),
                    ..Default::default()
                }),
            }),
        }
    }

    #[test]
    fn echoed_input_is_cut_short() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = "é".repeat(10_000);
        let text = shown(&long);
        assert!(text.len() < 200, "{text}");
        assert!(text.ends_with("(20000 bytes)"), "{text}");
    }

    #[test]
    fn single_node_modes_and_both_access_types_are_supported() {
        for mode in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            assert!(capability_support(&cap(mode, None)).is_ok());
            assert!(capability_support(&cap(mode, Some("xfs"))).is_ok());
        }
        for mode in [
            Mode::MultiNodeReaderOnly,
            Mode::MultiNodeSingleWriter,
            Mode::MultiNodeMultiWriter,
            Mode::Unknown,
        ] {
            assert!(capability_support(&cap(mode, None)).is_err());
        }
        assert!(capability_support(&cap(Mode::SingleNodeWriter, Some("ntfs"))).is_err());
        let no_type = VolumeCapability {
            access_type: None,
            ..cap(Mode::SingleNodeWriter, None)
        };
        assert_eq!(
            capability_support(&no_type),
            Err(CapabilityError::NoAccessType)
        );
    }

    fn range(required: i64, limit: i64) -> Option<CapacityRange> {
        Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        })
    }

    #[test]
    fn capacity_rounds_up_to_whole_gib_within_the_range() {
        assert_eq!(size_for_range(None).unwrap(), 1);
        assert_eq!(size_for_range(range(0, 0).as_ref()).unwrap(), 1);
        assert_eq!(size_for_range(range(1, 0).as_ref()).unwrap(), 1);
        assert_eq!(size_for_range(range(GIB + 1, 0).as_ref()).unwrap(), 2);
        assert_eq!(size_for_range(range(0, 5 * GIB).as_ref()).unwrap(), 1);
        let out = |r: Option<CapacityRange>| size_for_range(r.as_ref()).unwrap_err();
        assert!(matches!(
            out(range(2 * GIB, GIB)),
            ControllerError::RequiredOverLimit { .. }
        ));
        assert!(matches!(
            out(range(0, GIB / 2)),
            ControllerError::LimitBelowSmallest { .. }
        ));
        assert!(matches!(
            out(range(16385 * GIB, 0)),
            ControllerError::OverLargest { .. }
        ));
        assert!(matches!(
            out(range(GIB + 1, GIB + 100)),
            ControllerError::NoWholeGib { .. }
        ));
        assert_eq!(out(range(-1, 0)), ControllerError::NegativeCapacity);
    }

    #[test]
    fn parameters_accept_the_documented_keys_and_name_an_unknown_one() {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let p = parse_create_params(&map(&[
            (PARAM_FSTYPE, "xfs"),
            (PARAM_REGION, "sfo3"),
            (PARAM_TAGS, "a, b:c,a"),
            (PARAM_PVC_NAME, "data"),
            (PARAM_PVC_NAMESPACE, "prod"),
            ("csi.storage.k8s.io/pvc/uid", "x"),
        ]))
        .unwrap();
        assert_eq!(p.fs_type.as_deref(), Some("xfs"));
        assert_eq!(p.region.as_deref(), Some("sfo3"));
        assert_eq!(p.tags, ["a", "b:c"]);
        assert_eq!(p.pvc.as_deref(), Some("prod/data"));
        let err = parse_create_params(&map(&[("iops", "3000")])).unwrap_err();
        assert!(err.to_string().contains("\"iops\""), "{err}");
        assert!(parse_create_params(&map(&[(PARAM_FSTYPE, "ntfs")])).is_err());
        assert!(parse_create_params(&map(&[(PARAM_TAGS, "bad tag")])).is_err());
        assert!(parse_mutable_params(&map(&[("region", "x")])).is_err());
        assert_eq!(
            parse_mutable_params(&map(&[(PARAM_TAGS, "")]))
                .unwrap()
                .tags,
            Some(vec![])
        );
    }

    fn requirement(requisite: &[&str], preferred: &[&str]) -> TopologyRequirement {
        TopologyRequirement {
            requisite: requisite.iter().map(|r| region_topology(r)).collect(),
            preferred: preferred.iter().map(|r| region_topology(r)).collect(),
        }
    }

    #[test]
    fn placement_honours_preferred_then_requisite_and_fails_when_unmet() {
        let available: Vec<String> = ["nyc3", "sfo3"].map(String::from).to_vec();
        fn place<'a>(
            req: Option<&'a TopologyRequirement>,
            param: Option<&'a str>,
        ) -> Placement<'a> {
            Placement {
                requirement: req,
                parameter: param,
                source: None,
                default: "nyc3",
            }
        }
        assert_eq!(place(None, None).choose(&available).unwrap(), "nyc3");
        let r = requirement(&["nyc3", "sfo3"], &["sfo3"]);
        assert_eq!(place(Some(&r), None).choose(&available).unwrap(), "sfo3");
        let r = requirement(&["ams3", "sfo3"], &[]);
        assert_eq!(place(Some(&r), None).choose(&available).unwrap(), "sfo3");
        let r = requirement(&["ams3"], &[]);
        let err = place(Some(&r), None).choose(&available).unwrap_err();
        assert!(matches!(err, ControllerError::TopologyUnavailable { .. }));
        let r = requirement(&["nyc3"], &[]);
        let err = place(Some(&r), Some("sfo3"))
            .choose(&available)
            .unwrap_err();
        assert!(matches!(
            err,
            ControllerError::RegionOutsideRequisite { .. }
        ));
        let foreign = TopologyRequirement {
            requisite: vec![Topology {
                segments: [("zone".to_string(), "a".to_string())]
                    .into_iter()
                    .collect(),
            }],
            preferred: vec![],
        };
        let err = place(Some(&foreign), None).choose(&available).unwrap_err();
        assert_eq!(err, ControllerError::NoKnownTopology);
    }
}
