//! Prometheus metrics: operation counts and latencies per RPC and per cloud call, and
//! cloud actions in flight. [`serve`] exposes them with `/healthz` on `--http-address`.
//!
//! The metrics are process-wide, like the logger: one driver per process is the norm,
//! and several in one test process simply share counters.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::Driver;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    operations: Family<Labels, Counter>,
    operation_seconds: HistogramFamily,
    cloud_requests: Family<Labels, Counter>,
    cloud_request_seconds: HistogramFamily,
    actions_in_flight: Gauge<i64, AtomicI64>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let operations = Family::<Labels, Counter>::default();
        let operation_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let cloud_requests = Family::<Labels, Counter>::default();
        let cloud_request_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let actions_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "csi_operations",
            "CSI RPCs served, by method and gRPC code",
            operations.clone(),
        );
        registry.register(
            "csi_operation_duration_seconds",
            "CSI RPC latency, by method",
            operation_seconds.clone(),
        );
        registry.register(
            "cloud_requests",
            "Cloud API calls, by call and outcome",
            cloud_requests.clone(),
        );
        registry.register(
            "cloud_request_duration_seconds",
            "Cloud API call latency, by call",
            cloud_request_seconds.clone(),
        );
        registry.register(
            "cloud_actions_in_flight",
            "Cloud actions (attach, detach, resize) being waited on",
            actions_in_flight.clone(),
        );
        Metrics {
            registry,
            operations,
            operation_seconds,
            cloud_requests,
            cloud_request_seconds,
            actions_in_flight,
        }
    })
}

/// Record one finished RPC.
pub fn record_rpc(method: &str, code: tonic::Code, elapsed: Duration) {
    let m = metrics();
    m.operations
        .get_or_create(&vec![
            ("method", method.to_string()),
            ("code", format!("{code:?}")),
        ])
        .inc();
    m.operation_seconds
        .get_or_create(&vec![("method", method.to_string())])
        .observe(elapsed.as_secs_f64());
}

/// Record one finished cloud call (`call` like "create_volume"; `status` the HTTP status or "error").
pub fn record_cloud_call(call: &str, status: &str, elapsed: Duration) {
    let m = metrics();
    m.cloud_requests
        .get_or_create(&vec![
            ("call", call.to_string()),
            ("status", status.to_string()),
        ])
        .inc();
    m.cloud_request_seconds
        .get_or_create(&vec![("call", call.to_string())])
        .observe(elapsed.as_secs_f64());
}

/// One more (`+1`) or one fewer (`-1`) cloud action being waited on.
pub fn actions_in_flight_add(delta: i64) {
    metrics().actions_in_flight.inc_by(delta);
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &metrics().registry);
    out
}

async fn healthz(State(driver): State<Arc<Driver>>) -> impl IntoResponse {
    match driver.readiness().await {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(),
    )
}

/// The HTTP routes: `/healthz` (200 "ok" when Probe would be ready) and `/metrics`.
pub fn router(driver: Arc<Driver>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(driver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_carry_rpc_and_cloud_series() {
        record_rpc("CreateVolume", tonic::Code::Ok, Duration::from_millis(3));
        record_cloud_call("create_volume", "201", Duration::from_millis(2));
        actions_in_flight_add(1);
        actions_in_flight_add(-1);
        let text = render();
        assert!(
            text.contains("csi_operations_total{method=\"CreateVolume\",code=\"Ok\"}"),
            "{text}"
        );
        assert!(
            text.contains("csi_operation_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("cloud_requests_total{call=\"create_volume\",status=\"201\"}"),
            "{text}"
        );
        assert!(text.contains("cloud_actions_in_flight"), "{text}");
    }
}
