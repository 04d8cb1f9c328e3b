//! Request parsing that answers in the DigitalOcean error shape: JSON bodies,
//! query strings, numeric path ids, and the `links` of a page.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, Uri};
use serde::de::DeserializeOwned;

use super::wire::{Links, PageLinks};
use super::ApiError;
use crate::error::CloudError;
use crate::model::{Page, DEFAULT_PER_PAGE};

/// A JSON request body. Malformed JSON is a 400 `bad_request`; well-formed
/// JSON with unknown fields, missing fields or values of the wrong type or
/// range is a 422 `unprocessable_entity`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError(CloudError::bad_request(format!(
                "cannot read the request body: {e}"
            )))
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(match e.classify() {
            serde_json::error::Category::Data => {
                CloudError::unprocessable(format!("invalid request body: {e}"))
            }
            _ => CloudError::bad_request(format!("malformed JSON body: {e}")),
        })
    })
}

/// A query string's parameters, percent-decoded.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Params { pairs }
    }

    /// The first value of `key`; an empty value counts as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `page` (default 1) and `per_page` (default 20); 400 if not numbers.
    /// Ranges are checked by [`Page::of`].
    pub fn paging(&self) -> Result<(u32, u32), ApiError> {
        let number = |key: &str, default: u32| -> Result<u32, ApiError> {
            match self.get(key) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    ApiError(CloudError::bad_request(format!(
                        "{key} must be a positive integer, got {v:?}"
                    )))
                }),
            }
        };
        Ok((number("page", 1)?, number("per_page", DEFAULT_PER_PAGE)?))
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push(hi * 16 + lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A numeric path id; anything else is a 404, as no such resource exists.
pub fn numeric_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError(CloudError::resource_not_found()))
}

/// `links.pages` for `page`, as absolute URLs on the host the client used,
/// keeping the request's other query parameters.
pub fn page_links<T>(page: &Page<T>, uri: &Uri, headers: &HeaderMap) -> Links {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page=") && !p.starts_with("per_page="))
        .collect();
    let prefix = if kept.is_empty() {
        String::new()
    } else {
        format!("{}&", kept.join("&"))
    };
    let url = |n: u32| {
        format!(
            "http://{host}{}?{prefix}page={n}&per_page={}",
            uri.path(),
            page.per_page
        )
    };
    let last = page.last_page();
    let mut pages = PageLinks::default();
    if page.page > 1 {
        pages.first = Some(url(1));
        pages.prev = Some(url(page.page - 1));
    }
    if page.page < last {
        pages.next = Some(url(page.page + 1));
        pages.last = Some(url(last));
    }
    Links { pages }
}
