//! Logging: tracing set-up, and the one gRPC layer that sees every RPC. It logs each
//! failed RPC once, with its method, code, message and the request with secret fields
//! redacted; on the way it bounds what a client can make the server hold or send back
//! (the request body it buffers, the status message it answers with).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::config::LogFormat;

/// Install the global tracing subscriber (text or JSON). Safe to call more than once.
pub fn init(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `/csi.v1.Controller/CreateVolume` → (`Controller`, `CreateVolume`).
fn split_method(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or(("", path));
    (service.rsplit('.').next().unwrap_or(service), method)
}

/// Render a unary request body (one gRPC frame) with secrets redacted.
fn redacted_request(method: &str, body: &Bytes) -> String {
    // A gRPC frame: 1 byte compression flag, 4 bytes length, then the message.
    if body.len() < 5 || body[0] != 0 {
        return "<unreadable>".to_string();
    }
    let message = &body[5..];
    let name = format!("csi.v1.{method}Request");
    csi_proto::redact::redact_secrets(&name, message).unwrap_or_else(|| "<unreadable>".to_string())
}

/// The largest request body buffered: tonic's own limit on a decoded message (4 MiB) plus
/// the 5-byte gRPC frame header. A larger one is answered RESOURCE_EXHAUSTED unread.
pub const MAX_REQUEST_BYTES: usize = (4 << 20) + 5;

/// The longest status message sent back, in bytes before percent-encoding. It travels in
/// a header, and clients refuse header blocks past 16 KiB (tearing the whole connection
/// down), so a message that echoes a huge request field must be cut.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;

/// `status` with its message cut to [`MAX_STATUS_MESSAGE_BYTES`], or `None` if it fits.
fn bounded(status: &tonic::Status) -> Option<tonic::Status> {
    let message = status.message();
    if message.len() <= MAX_STATUS_MESSAGE_BYTES {
        return None;
    }
    let mut end = MAX_STATUS_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Some(tonic::Status::new(
        status.code(),
        format!(
            "{}… (message cut from {} bytes)",
            &message[..end],
            message.len()
        ),
    ))
}

/// A trailers-only gRPC response carrying `status`.
fn status_response<B: Default>(status: &tonic::Status) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    // Only fails for a status with invalid details; ours have none.
    let _ = status.add_header(response.headers_mut());
    response
}

/// The tower layer that logs failed RPCs; add it once, to the server builder.
#[derive(Debug, Clone, Default)]
pub struct RpcLogLayer;

impl RpcLogLayer {
    pub fn new() -> Self {
        RpcLogLayer
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;
    fn layer(&self, inner: S) -> RpcLog<S> {
        RpcLog { inner }
    }
}

/// The service made by [`RpcLogLayer`].
#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ResBody> Service<http::Request<Body>> for RpcLog<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone may not be ready; swap so the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let started = Instant::now();
            let (parts, body) = request.into_parts();
            let path = parts.uri.path().to_string();
            let (service, method) = split_method(&path);
            let bytes = match http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    let status = tonic::Status::resource_exhausted(format!(
                        "the request is over {MAX_REQUEST_BYTES} bytes"
                    ));
                    crate::metrics::record_rpc(method, status.code(), started.elapsed());
                    tracing::warn!(service, method, code = ?status.code(), message = status.message(), "RPC failed");
                    return Ok(status_response(&status));
                }
                Err(e) => return Err(e),
            };
            let request = http::Request::from_parts(parts, Body::new(Full::new(bytes.clone())));
            let mut response = inner.call(request).await.map_err(Into::into)?;
            let mut status = tonic::Status::from_header_map(response.headers());
            if let Some(short) = status.as_ref().and_then(bounded) {
                let _ = short.add_header(response.headers_mut());
                status = Some(short);
            }
            let code = status.as_ref().map(|s| s.code()).unwrap_or(tonic::Code::Ok);
            crate::metrics::record_rpc(method, code, started.elapsed());
            if let Some(status) = status.filter(|s| s.code() != tonic::Code::Ok) {
                tracing::warn!(
                    service,
                    method,
                    code = ?status.code(),
                    message = status.message(),
                    request = %redacted_request(method, &bytes),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "RPC failed"
                );
            } else {
                tracing::debug!(
                    service,
                    method,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "RPC ok"
                );
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{bounded, split_method, MAX_STATUS_MESSAGE_BYTES};

    #[test]
    fn long_status_messages_are_cut_at_a_char_boundary() {
        let short = tonic::Status::invalid_argument("fs_type \"btrfs\" is invalid");
        assert!(bounded(&short).is_none());
        let long = tonic::Status::invalid_argument("é".repeat(20_000));
        let cut = bounded(&long).expect("cut");
        assert_eq!(cut.code(), tonic::Code::InvalidArgument);
        assert!(cut.message().len() < MAX_STATUS_MESSAGE_BYTES + 64);
        assert!(cut.message().ends_with("(message cut from 40000 bytes)"));
    }

    #[test]
    fn methods_split_into_service_and_rpc() {
        assert_eq!(
            split_method("/csi.v1.Controller/CreateVolume"),
            ("Controller", "CreateVolume")
        );
        assert_eq!(
            split_method("/csi.v1.Identity/Probe"),
            ("Identity", "Probe")
        );
    }
}
