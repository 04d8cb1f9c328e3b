//! The one error type of the model and the server: what kind of refusal it is, and the
//! HTTP status, DigitalOcean error id and message the server answers with. In-process
//! callers decide on the [`ErrorKind`]; HTTP clients see only the status, id and message.

use std::fmt;

/// What the model refused, or why a call failed: the distinctions a client acts on.
/// Several kinds share one HTTP status (every 422 but [`ErrorKind::Invalid`] says
/// more than "bad input"), which is why the kind travels beside the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No such resource (404).
    NotFound,
    /// A volume or snapshot with that name, or a droplet with that id, exists (409).
    NameTaken,
    /// The volume is attached, or being resized, so it cannot be deleted (409).
    VolumeInUse,
    /// The droplet or volume already has an action in flight (422).
    PendingEvent,
    /// The volume is already attached to a droplet (422).
    AlreadyAttached,
    /// The volume is not attached to that droplet (422).
    AttachmentNotFound,
    /// The droplet holds as many volumes as it may (422).
    DropletFull,
    /// The account's storage quota would be exceeded (403).
    QuotaExceeded,
    /// The request's contents are wrong (400 or 422).
    Invalid,
    /// The API token was refused (401, or another 403).
    Unauthorized,
    /// Too many requests (429).
    RateLimited,
    /// The cloud failed (5xx): storage trouble or an injected fault.
    Server,
    /// Any other HTTP-level refusal (405, 413, 415, ...); the model never makes one.
    Other,
}

impl ErrorKind {
    /// The kind an HTTP status implies when nothing more specific is known: for
    /// errors the HTTP layer makes rather than the model.
    pub fn of_status(status: u16) -> ErrorKind {
        match status {
            400 | 422 => ErrorKind::Invalid,
            401 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimited,
            s if s >= 500 => ErrorKind::Server,
            _ => ErrorKind::Other,
        }
    }
}

/// An error as the DigitalOcean v2 API reports it, with its [`ErrorKind`]: `status` is
/// the HTTP status, `id` the machine-readable kind (`not_found`,
/// `unprocessable_entity`, `conflict`, `forbidden`, `too_many_requests`,
/// `server_error`, `unauthorized`, `bad_request`), `message` the human text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CloudError {
    /// What was refused; never sent on the wire.
    pub kind: ErrorKind,
    /// HTTP status code.
    pub status: u16,
    /// DigitalOcean error id.
    pub id: String,
    /// Message text; HTTP clients match on substrings of it.
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
    /// An error with the given status, id and message, of the kind the status implies
    /// ([`ErrorKind::of_status`]).
    pub fn new(status: u16, id: &str, message: impl Into<String>) -> CloudError {
        CloudError::of_kind(ErrorKind::of_status(status), status, id, message)
    }

    fn of_kind(kind: ErrorKind, status: u16, id: &str, message: impl Into<String>) -> CloudError {
        CloudError {
            kind,
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

    /// 422 `unprocessable_entity`: the request's contents are wrong.
    pub fn unprocessable(message: impl Into<String>) -> CloudError {
        CloudError::new(422, "unprocessable_entity", message)
    }

    /// 422 `unprocessable_entity` of a kind more specific than [`ErrorKind::Invalid`].
    fn unprocessable_as(kind: ErrorKind, message: impl Into<String>) -> CloudError {
        CloudError::of_kind(kind, 422, "unprocessable_entity", message)
    }

    /// 409 `conflict`: a resource with that name (or id) exists.
    pub fn name_taken(message: impl Into<String>) -> CloudError {
        CloudError::of_kind(ErrorKind::NameTaken, 409, "conflict", message)
    }

    /// 409 `conflict`: the volume is attached or being resized, so it stays.
    pub fn volume_in_use(message: impl Into<String>) -> CloudError {
        CloudError::of_kind(ErrorKind::VolumeInUse, 409, "conflict", message)
    }

    /// 422 `unprocessable_entity`: the droplet or volume has an action in flight.
    pub fn pending_event(message: impl Into<String>) -> CloudError {
        CloudError::unprocessable_as(ErrorKind::PendingEvent, message)
    }

    /// 422 `unprocessable_entity` with DigitalOcean's text for a volume attached already.
    pub fn already_attached() -> CloudError {
        CloudError::unprocessable_as(
            ErrorKind::AlreadyAttached,
            "This volume is already attached",
        )
    }

    /// 422 `unprocessable_entity` with DigitalOcean's text for a detach from a droplet
    /// the volume is not attached to.
    pub fn attachment_not_found() -> CloudError {
        CloudError::unprocessable_as(ErrorKind::AttachmentNotFound, "Attachment not found")
    }

    /// 422 `unprocessable_entity`: the droplet holds `limit` volumes already.
    pub fn droplet_full(limit: u32) -> CloudError {
        CloudError::unprocessable_as(
            ErrorKind::DropletFull,
            format!("cannot attach more volumes to the Droplet: the limit is {limit}"),
        )
    }

    /// 403 `forbidden`: the account's storage quota would be exceeded.
    pub fn quota_exceeded(message: impl Into<String>) -> CloudError {
        CloudError::of_kind(ErrorKind::QuotaExceeded, 403, "forbidden", message)
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
        self.kind == ErrorKind::NotFound
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

    /// True when a droplet or volume already has an action in flight (DigitalOcean's
    /// "pending event"); drivers answer ABORTED to it.
    pub fn is_pending_event(&self) -> bool {
        self.kind == ErrorKind::PendingEvent
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind::*;
    use super::*;

    /// What the kind adds, and what the wire carries.
    fn kind_and_wire(e: CloudError) -> (ErrorKind, u16, String) {
        (e.kind, e.status, e.id)
    }

    #[test]
    fn each_refusal_keeps_the_status_and_id_digitalocean_answers_with() {
        let k = kind_and_wire;
        let unprocessable = |kind| (kind, 422, "unprocessable_entity".to_string());
        let conflict = |kind| (kind, 409, "conflict".to_string());
        let missing = (NotFound, 404, "not_found".to_string());
        assert_eq!(k(CloudError::resource_not_found()), missing);
        assert_eq!(k(CloudError::name_taken("n")), conflict(NameTaken));
        assert_eq!(k(CloudError::volume_in_use("v")), conflict(VolumeInUse));
        assert_eq!(
            k(CloudError::pending_event("p")),
            unprocessable(PendingEvent)
        );
        assert_eq!(
            k(CloudError::already_attached()),
            unprocessable(AlreadyAttached)
        );
        let detach = CloudError::attachment_not_found();
        assert_eq!(k(detach), unprocessable(AttachmentNotFound));
        assert_eq!(k(CloudError::droplet_full(7)), unprocessable(DropletFull));
        assert_eq!(k(CloudError::unprocessable("u")), unprocessable(Invalid));
        let quota = CloudError::quota_exceeded("q");
        assert_eq!(k(quota), (QuotaExceeded, 403, "forbidden".to_string()));
        assert_eq!(k(CloudError::bad_request("b")).0, Invalid);
        assert_eq!(k(CloudError::unauthorized()).0, Unauthorized);
        assert_eq!(k(CloudError::too_many_requests()).0, RateLimited);
        assert_eq!(k(CloudError::server_error("s")).0, Server);
        assert_eq!(k(CloudError::new(405, "method_not_allowed", "m")).0, Other);
        assert_eq!(
            CloudError::droplet_full(7).message,
            "cannot attach more volumes to the Droplet: the limit is 7"
        );
    }
}
