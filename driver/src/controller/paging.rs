//! Opaque list tokens for ListVolumes and ListSnapshots.
//!
//! Items are listed oldest first, by (creation time, id). A token says where the last page
//! ended: that creation time, and the ids already returned at exactly that time (the API
//! reports times to the second, so several items may share one). The next page is every
//! item after that point, so items created between pages appear on a later page and a
//! token stays valid when the item it ended on is deleted. A token is base64 of a small
//! JSON object; anything this driver did not issue is refused with ABORTED.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ControllerError;

/// Where a page ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    /// What is listed ("volumes" or "snapshots"), so a token is not used for the other.
    #[serde(rename = "k")]
    kind: String,
    /// Creation time of the page's last item.
    #[serde(rename = "t")]
    after: DateTime<Utc>,
    /// Ids already returned whose creation time is exactly `after`.
    #[serde(rename = "s")]
    seen: Vec<String>,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str, kind: &'static str) -> Result<Cursor, ControllerError> {
        let refused = || ControllerError::ForeignToken {
            token: token.to_string(),
            kind,
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| refused())?;
        if cursor.kind != kind {
            return Err(refused());
        }
        Ok(cursor)
    }

    fn is_before(&self, time: DateTime<Utc>, id: &str) -> bool {
        time > self.after || (time == self.after && !self.seen.iter().any(|s| s == id))
    }
}

/// Check `starting_token` and `max_entries` before any work is done.
pub fn validate(
    starting_token: &str,
    kind: &'static str,
    max_entries: i32,
) -> Result<(), ControllerError> {
    if max_entries < 0 {
        return Err(ControllerError::NegativeMaxEntries { max_entries });
    }
    if !starting_token.is_empty() {
        Cursor::decode(starting_token, kind)?;
    }
    Ok(())
}

/// One page and the token of the next ("" on the last page).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: String,
}

/// The page of `items` after `starting_token`, at most `max_entries` long (0: no limit).
/// Refused for a negative `max_entries`, or a token not issued here.
pub fn page<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> (DateTime<Utc>, &str),
    kind: &'static str,
    starting_token: &str,
    max_entries: i32,
) -> Result<Page<T>, ControllerError> {
    validate(starting_token, kind, max_entries)?;
    let cursor = if starting_token.is_empty() {
        None
    } else {
        Some(Cursor::decode(starting_token, kind)?)
    };
    items.sort_by(|a, b| key(a).cmp(&key(b)));
    if let Some(c) = &cursor {
        items.retain(|item| {
            let (time, id) = key(item);
            c.is_before(time, id)
        });
    }
    let max = usize::try_from(max_entries).unwrap_or(0);
    if max == 0 || items.len() <= max {
        return Ok(Page {
            items,
            next_token: String::new(),
        });
    }
    items.truncate(max);
    let next_token = match items.last() {
        Some(last) => {
            let (after, _) = key(last);
            let mut seen: Vec<String> = match &cursor {
                Some(c) if c.after == after => c.seen.clone(),
                _ => Vec::new(),
            };
            seen.extend(
                items
                    .iter()
                    .map(&key)
                    .filter(|(t, _)| *t == after)
                    .map(|(_, id)| id.to_string()),
            );
            Cursor {
                kind: kind.to_string(),
                after,
                seen,
            }
            .encode()
        }
        None => String::new(),
    };
    Ok(Page { items, next_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Item = (DateTime<Utc>, String);

    fn item(second: i64, id: &str) -> Item {
        (DateTime::from_timestamp(second, 0).unwrap(), id.to_string())
    }

    fn ids(page: &Page<Item>) -> Vec<&str> {
        page.items.iter().map(|(_, id)| id.as_str()).collect()
    }

    fn list(items: &[Item], token: &str, max: i32) -> Result<Page<Item>, ControllerError> {
        page(
            items.to_vec(),
            |(t, id)| (*t, id.as_str()),
            "volumes",
            token,
            max,
        )
    }

    #[test]
    fn pages_cover_every_item_once_even_when_times_tie() {
        let items = [
            item(1, "c"),
            item(1, "a"),
            item(2, "b"),
            item(1, "b"),
            item(3, "z"),
        ];
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let p = list(&items, &token, 2).unwrap();
            seen.extend(ids(&p).into_iter().map(String::from));
            if p.next_token.is_empty() {
                break;
            }
            token = p.next_token;
        }
        assert_eq!(seen, ["a", "b", "c", "b", "z"]);
    }

    #[test]
    fn items_added_between_pages_appear_and_a_deleted_last_item_keeps_the_token_valid() {
        let first = [item(1, "a"), item(2, "b"), item(3, "c")];
        let p = list(&first, "", 2).unwrap();
        assert_eq!(ids(&p), ["a", "b"]);
        // "b" is deleted and "d" created before the next page is asked for.
        let now = [item(1, "a"), item(3, "c"), item(4, "d")];
        let rest = list(&now, &p.next_token, 0).unwrap();
        assert_eq!(ids(&rest), ["c", "d"]);
        assert!(rest.next_token.is_empty());
    }

    #[test]
    fn foreign_tokens_are_aborted_and_negative_limits_invalid() {
        for bad in ["abcdefg", "invalid-token", "e30", "!!"] {
            assert!(
                matches!(
                    list(&[], bad, 0).unwrap_err(),
                    ControllerError::ForeignToken { .. }
                ),
                "{bad}"
            );
        }
        let p = list(&[item(1, "a"), item(2, "b")], "", 1).unwrap();
        let wrong_kind = page(
            Vec::<Item>::new(),
            |(t, id)| (*t, id.as_str()),
            "snapshots",
            &p.next_token,
            0,
        );
        assert!(matches!(
            wrong_kind.unwrap_err(),
            ControllerError::ForeignToken { .. }
        ));
        assert_eq!(
            list(&[], "", -1).unwrap_err(),
            ControllerError::NegativeMaxEntries { max_entries: -1 }
        );
    }
}
