//! How CSI identities live in the cloud: CSI names (up to 128 bytes of anything) mapped to
//! DigitalOcean names (at most 64 of `[a-z][a-z0-9-]`), and the facts the driver keeps in a
//! volume's description so that lookups by name are exact and stateless.

use serde::{Deserialize, Serialize};

/// Longest DigitalOcean volume name.
pub const MAX_CLOUD_NAME_LEN: usize = 64;

/// Longest volume description the driver writes.
const MAX_DESCRIPTION_LEN: usize = 1024;

/// Hex digits of the hash appended to a changed name.
const HASH_HEX_LEN: usize = 12;

/// The DigitalOcean name for a CSI volume name. A name that already follows the rules is
/// kept as is; any other is lowercased, its invalid characters replaced by '-', prefixed
/// with "v-" if it does not start with a letter, truncated, and suffixed with a hash of the
/// original, so that two CSI names never share a cloud name in practice.
pub fn cloud_volume_name(csi_name: &str) -> String {
    if is_valid_cloud_name(csi_name) {
        return csi_name.to_string();
    }
    let mut base: String = csi_name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "v-");
    }
    base.truncate(MAX_CLOUD_NAME_LEN - HASH_HEX_LEN - 1);
    let hash = format!("{:016x}", fnv1a64(csi_name.as_bytes()));
    format!("{base}-{}", &hash[..HASH_HEX_LEN])
}

/// The cloud name for a CSI snapshot name: DigitalOcean snapshot names are free text, so
/// the CSI name is kept unless it holds control characters.
pub fn cloud_snapshot_name(csi_name: &str) -> String {
    if csi_name.chars().any(char::is_control) {
        cloud_volume_name(csi_name)
    } else {
        csi_name.to_string()
    }
}

/// The name of the temporary snapshot a clone goes through (HTTP backend).
pub fn clone_snapshot_name(new_volume_name: &str) -> String {
    format!("csi-clone-for-{new_volume_name}")
}

/// Whether `name` is a valid DigitalOcean volume name.
pub fn is_valid_cloud_name(name: &str) -> bool {
    name.len() <= MAX_CLOUD_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// 64-bit FNV-1a: small, and stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What the driver records in a volume's description, as a small JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The CSI name the volume was created under.
    #[serde(rename = "csi-name")]
    pub csi_name: String,
    /// The snapshot it was restored from.
    #[serde(
        rename = "source-snapshot",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_snapshot: Option<String>,
    /// The volume it was cloned from.
    #[serde(
        rename = "source-volume",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_volume: Option<String>,
    /// `namespace/name` of the PersistentVolumeClaim, when the provisioner says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// The PersistentVolume name, when the provisioner says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pv: Option<String>,
}

impl VolumeRecord {
    /// The description text; the optional Kubernetes facts are dropped if it would be too long.
    pub fn to_description(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() <= MAX_DESCRIPTION_LEN {
            return text;
        }
        let essential = VolumeRecord {
            pvc: None,
            pv: None,
            ..self.clone()
        };
        serde_json::to_string(&essential).unwrap_or_default()
    }

    /// The record of a volume: parsed from its description, or, for a volume this driver
    /// did not create, its cloud name as the CSI name and no source.
    pub fn of(cloud_name: &str, description: &str) -> VolumeRecord {
        serde_json::from_str::<VolumeRecord>(description)
            .ok()
            .filter(|r| !r.csi_name.is_empty())
            .unwrap_or_else(|| VolumeRecord {
                csi_name: cloud_name.to_string(),
                ..VolumeRecord::default()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept_and_others_mapped_deterministically() {
        assert_eq!(cloud_volume_name("pvc-1234"), "pvc-1234");
        let long = "a".repeat(64);
        assert_eq!(cloud_volume_name(&long), long);

        for csi in [
            "PVC-1234",
            "1abc",
            "with space/and_underscores.dots",
            &"x".repeat(128),
            "é",
            "-",
        ] {
            let mapped = cloud_volume_name(csi);
            assert!(is_valid_cloud_name(&mapped), "{csi:?} → {mapped:?}");
            assert_eq!(mapped, cloud_volume_name(csi), "deterministic");
        }
        // Names that differ only in what the mapping erases still differ.
        assert_ne!(cloud_volume_name("PVC-1"), cloud_volume_name("pvc-1"));
        assert_ne!(cloud_volume_name("a_b"), cloud_volume_name("a.b"));
        let a = format!("{}a", "x".repeat(127));
        let b = format!("{}b", "x".repeat(127));
        assert_ne!(cloud_volume_name(&a), cloud_volume_name(&b));
    }

    #[test]
    fn records_round_trip_and_foreign_volumes_use_their_cloud_name() {
        let record = VolumeRecord {
            csi_name: "Name \"with\" quotes\n".into(),
            source_volume: Some("v1".into()),
            ..VolumeRecord::default()
        };
        assert_eq!(VolumeRecord::of("x", &record.to_description()), record);
        assert_eq!(
            VolumeRecord::of("manual-volume", "made in the console"),
            VolumeRecord {
                csi_name: "manual-volume".into(),
                ..VolumeRecord::default()
            }
        );
    }

    #[test]
    fn an_oversized_record_drops_the_kubernetes_facts() {
        let record = VolumeRecord {
            csi_name: "n".into(),
            pvc: Some("p".repeat(2000)),
            ..VolumeRecord::default()
        };
        let text = record.to_description();
        assert!(text.len() <= MAX_DESCRIPTION_LEN);
        assert_eq!(VolumeRecord::of("x", &text).csi_name, "n");
    }
}
