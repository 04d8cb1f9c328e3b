//! Input rules, as DigitalOcean applies them. Each returns a 422 whose message
//! says which rule was broken.

use crate::error::CloudError;

/// Largest volume, in GiB.
pub const MAX_VOLUME_SIZE_GIB: u64 = 16384;
/// Smallest volume, in GiB.
pub const MIN_VOLUME_SIZE_GIB: u64 = 1;
/// Longest volume name.
pub const MAX_VOLUME_NAME_LEN: usize = 64;
/// Longest snapshot name, description or tag.
const MAX_TEXT_LEN: usize = 255;
/// Longest volume description.
const MAX_DESCRIPTION_LEN: usize = 1024;

/// A volume name: lowercase letters, digits and '-', starting with a letter,
/// at most 64 characters.
pub fn volume_name(name: &str) -> Result<(), CloudError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if starts_with_letter && rest_ok && name.len() <= MAX_VOLUME_NAME_LEN {
        Ok(())
    } else {
        Err(CloudError::unprocessable(format!(
            "invalid volume name {name:?}: a name must start with a lowercase letter, contain only \
             lowercase letters, numbers and '-', and be at most {MAX_VOLUME_NAME_LEN} characters"
        )))
    }
}

/// A volume size in GiB: 1..=16384.
pub fn volume_size(size_gib: u64) -> Result<(), CloudError> {
    if (MIN_VOLUME_SIZE_GIB..=MAX_VOLUME_SIZE_GIB).contains(&size_gib) {
        Ok(())
    } else {
        Err(CloudError::unprocessable(format!(
            "size_gigabytes must be between {MIN_VOLUME_SIZE_GIB} and {MAX_VOLUME_SIZE_GIB}, got {size_gib}"
        )))
    }
}

/// A snapshot name: 1 to 255 printable characters.
pub fn snapshot_name(name: &str) -> Result<(), CloudError> {
    if name.is_empty() || name.chars().count() > MAX_TEXT_LEN || name.chars().any(char::is_control)
    {
        Err(CloudError::unprocessable(format!(
            "invalid snapshot name {name:?}: must be 1 to {MAX_TEXT_LEN} printable characters"
        )))
    } else {
        Ok(())
    }
}

/// Tags: letters, digits, ':', '-' and '_', 1 to 255 characters each.
pub fn tags(tags: &[String]) -> Result<(), CloudError> {
    for tag in tags {
        let ok = !tag.is_empty()
            && tag.len() <= MAX_TEXT_LEN
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_'));
        if !ok {
            return Err(CloudError::unprocessable(format!(
                "invalid tag {tag:?}: tags may contain letters, numbers, colons, dashes and \
                 underscores, and be at most {MAX_TEXT_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// A description of at most 1024 characters.
pub fn description(text: &str) -> Result<(), CloudError> {
    if text.chars().count() > MAX_DESCRIPTION_LEN {
        Err(CloudError::unprocessable(format!(
            "description must be at most {MAX_DESCRIPTION_LEN} characters"
        )))
    } else {
        Ok(())
    }
}

/// A filesystem type: empty (unformatted), "ext4" or "xfs".
pub fn filesystem_type(fs: &str) -> Result<(), CloudError> {
    match fs {
        "" | "ext4" | "xfs" => Ok(()),
        other => Err(CloudError::unprocessable(format!(
            "filesystem_type must be \"ext4\" or \"xfs\", got {other:?}"
        ))),
    }
}

/// A region slug: lowercase letters and digits.
pub fn region_slug(slug: &str) -> Result<(), CloudError> {
    if !slug.is_empty()
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(CloudError::unprocessable(format!(
            "invalid region slug {slug:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_digitalocean_rules() {
        for good in ["a", "pvc-1234", "x1-2-3", &"a".repeat(64)] {
            assert!(volume_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "-abc",
            "Abc",
            "a_b",
            "a.b",
            "a b",
            &"a".repeat(65),
            "é",
        ] {
            assert_eq!(volume_name(bad).map_err(|e| e.status), Err(422), "{bad}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(volume_size(0).is_err());
        assert!(volume_size(1).is_ok());
        assert!(volume_size(16384).is_ok());
        assert!(volume_size(16385).is_err());
    }

    #[test]
    fn tags_follow_digitalocean_rules() {
        assert!(tags(&["k8s:cluster-1".into(), "a_b".into()]).is_ok());
        assert!(tags(&["".into()]).is_err());
        assert!(tags(&["has space".into()]).is_err());
    }
}
