//! Logging: tracing set-up, and the one gRPC layer that logs every failed RPC once,
//! with its method, code, message and the request with secret fields redacted.

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
    ResBody: Send + 'static,
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
            let bytes = body
                .collect()
                .await
                .map_err(Into::<BoxError>::into)?
                .to_bytes();
            let request = http::Request::from_parts(parts, Body::new(Full::new(bytes.clone())));
            let response = inner.call(request).await.map_err(Into::into)?;
            let (service, method) = split_method(&path);
            let status = tonic::Status::from_header_map(response.headers());
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
    use super::split_method;

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
