//! What the bus says, exported for systems outside the process: the Prometheus exporter
//! (feature `prometheus`).

#[cfg(feature = "prometheus")]
mod prometheus;

#[cfg(feature = "prometheus")]
pub use prometheus::{PrometheusExporter, PrometheusExporterBuilder};
/// The Prometheus client library the exporter registers into, at the version it was built with.
#[cfg(feature = "prometheus")]
pub use prometheus_client;
