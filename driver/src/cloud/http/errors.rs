//! How a failed exchange with the cloud API becomes a [`CloudError`]: a passed deadline,
//! an unreachable endpoint, or an error body's message (the wire's own text, which
//! [`CloudError::from_api`] classifies).

use reqwest::StatusCode;

use super::wire::ErrorBody;
use crate::cloud::{CloudError, Deadline};

pub(super) fn timeout(call: &str) -> CloudError {
    CloudError::Timeout {
        what: format!("the request's deadline passed during the cloud API call {call}"),
    }
}

pub(super) fn transport(call: &str, e: &reqwest::Error, deadline: Deadline) -> CloudError {
    if deadline.passed() {
        return timeout(call);
    }
    CloudError::Transport {
        message: format!("{call}: {}", describe(e)),
    }
}

/// An HTTP error with its causes, which reqwest's Display leaves out.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `message` of an error body, or the status's reason.
pub(super) fn error_message(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string())
}
