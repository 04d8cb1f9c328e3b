//! The one error type of the model and the server: an HTTP status, the
//! DigitalOcean error id and a message whose text clients match on.

use std::fmt;

/// An error as the DigitalOcean v2 API reports it: `status` is the HTTP status,
/// `id` the machine-readable kind (`not_found`, `unprocessable_entity`,
/// `conflict`, `forbidden`, `too_many_requests`, `server_error`,
/// `unauthorized`, `bad_request`), `message` the human text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CloudError {
    /// HTTP status code.
    pub status: u16,
    /// DigitalOcean error id.
    pub id: String,
    /// Message text; clients match on substrings of it.
    pub message: String,
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.id, self.message)
    }
}

/// The message DigitalOcean answers for any unknown resource.
pub const NOT_FOUND_MESSAGE: &str = "The resource you were accessing could not be found.";

impl CloudError {
    /// An error with the given status, id and message.
    pub fn new(status: u16, id: &str, message: impl Into<String>) -> CloudError {
        CloudError {
            status,
            id: id.to_string(),
            message: message.into(),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> CloudError {
        CloudError::new(404, "not_found", message)
    }

    /// 404 `not_found` with DigitalOcean's standard text.
    pub fn resource_not_found() -> CloudError {
        CloudError::not_found(NOT_FOUND_MESSAGE)
    }

    /// 422 `unprocessable_entity`.
    pub fn unprocessable(message: impl Into<String>) -> CloudError {
        CloudError::new(422, "unprocessable_entity", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> CloudError {
        CloudError::new(409, "conflict", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> CloudError {
        CloudError::new(403, "forbidden", message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> CloudError {
        CloudError::new(400, "bad_request", message)
    }

    /// 401 `unauthorized` with DigitalOcean's text.
    pub fn unauthorized() -> CloudError {
        CloudError::new(401, "unauthorized", "Unable to authenticate you.")
    }

    /// 429 `too_many_requests` with DigitalOcean's text.
    pub fn too_many_requests() -> CloudError {
        CloudError::new(429, "too_many_requests", "API rate limit exceeded.")
    }

    /// 500 `server_error`.
    pub fn server_error(message: impl Into<String>) -> CloudError {
        CloudError::new(500, "server_error", message)
    }

    /// A storage (file system) failure, reported as a 500.
    pub(crate) fn io(context: &str, err: std::io::Error) -> CloudError {
        CloudError::server_error(format!("{context}: {err}"))
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }

    /// True for a 409.
    pub fn is_conflict(&self) -> bool {
        self.status == 409
    }

    /// True for a 422.
    pub fn is_unprocessable(&self) -> bool {
        self.status == 422
    }

    /// True for a 403.
    pub fn is_forbidden(&self) -> bool {
        self.status == 403
    }

    /// True for a 429.
    pub fn is_too_many_requests(&self) -> bool {
        self.status == 429
    }

    /// True for any 5xx.
    pub fn is_server_error(&self) -> bool {
        self.status >= 500
    }

    /// True when the message says a droplet or volume already has an action in
    /// flight (DigitalOcean's "pending event"); drivers answer ABORTED to it.
    pub fn is_pending_event(&self) -> bool {
        self.status == 422 && self.message.contains("pending")
    }
}
