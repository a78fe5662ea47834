//! The Aegis SDK: what a service author uses to build trading services on NATS.
//!
//! - [`config`]: [`AegisConfig`] and [`ConfigLoader`] (file, environment and
//!   program values, validated before any I/O).
//! - [`connection`]: [`Connection`], the shared NATS + JetStream handle; checks
//!   the server version (2.11+) and JetStream at connect.
//! - [`rpc`]: typed request/reply — [`rpc::ServiceBuilder`] declares handlers,
//!   [`rpc::RpcClient`] calls them; errors travel as [`rpc::WireError`] with a
//!   stable code. Every service also answers `$SRV.PING/INFO/STATS`.
//! - `control` (internal): each service's operator control subject
//!   `aegis.control.{service}.{instance}` (drills: unhealthy, healthy,
//!   slow) and the health → leadership link.
//! - [`registry`]: each started service writes its [`contracts::ServiceInstance`]
//!   record to the `service_registry` KV bucket (on change, and every few
//!   seconds to renew its per-key TTL) and sends a liveness beat each
//!   second; the connection's registry view (one KV watch, scoped to the
//!   services it uses) keeps records and change events;
//!   [`registry::RegistryReader`] lists and watches instances.
//! - [`discovery`]: what RPC calls route with, built on the registry view
//!   (discovery depends on the registry, never the reverse) — strategies
//!   round-robin, random, sticky and latency-aware, local evictions of
//!   vanished instances. `rpc::route` is the one retry loop of calls.
//! - [`events`]: publish with dedup ids to the `EVENTS` stream; subscribe in
//!   compete or broadcast mode, acknowledged after the handler succeeds.
//! - [`commands`]: long-running work queued on `COMMANDS`, with progress and a
//!   result sent back to the caller.
//! - [`dead_letter`]: the `DEAD_LETTER` stream of messages subscriptions and
//!   workers gave up on, and [`dead_letter::recent`] to read them.
//! - [`feed`]: a stream's messages on an ephemeral consumer of the
//!   process's own that ends as soon as it may have lost its place (missed
//!   heartbeats, a reconnect, a skipped delivery), to be opened again at
//!   once: current again within about half a second of JetStream after a
//!   NATS node died.
//! - [`kv`]: [`kv::follow`], a KV bucket's entries for as long as the
//!   process runs, the watch opened again whenever it breaks; the loop
//!   under it, [`kv::reopening`], for any stream that can be opened again
//!   from where it broke, and [`kv::reopening_woken`], the same loop that
//!   a signal (such as a stream advisory) wakes from its pause.
//! - `kv_watch` (internal): the one KV watch under the registry and
//!   election views, re-opened with a full load whenever it breaks; while
//!   JetStream cannot open it (a cluster electing leaders after a node
//!   died), a view not loaded yet loads from the bucket's replicas in one
//!   batched direct get (`kv_watch/snapshot.rs`), and a view whose watch
//!   broke reads them every half second for what is newer; both views
//!   start the same way, their bucket's lookup bounded
//!   (`kv_watch/start.rs`). [`kv::mirror`] offers the same watch for any
//!   bucket (the monitor's election keys run on it).
//! - [`metrics`]: per-endpoint latency histograms and counters.
//! - [`startup`]: [`startup::retry`], a start tried again while NATS or
//!   JetStream is not ready yet (what `aegis service` and the monitor do),
//!   and [`startup::error_line`], an error with each cause said once.
//! - [`streams`]: creating the streams Aegis uses, bounded by the configured
//!   [`StreamLimits`].
//! - `pull` (internal): the durable pull loop events and commands share,
//!   which recreates a vanished consumer with back-off.
//! - `probes` (feature `probes`): `/healthz` and `/readyz` over HTTP for
//!   orchestrators such as Kubernetes.
//! - [`shutdown`]: [`shutdown_signal`], Ctrl-C or SIGTERM, what
//!   [`rpc::Service::run_until_signal`] stops on.
//! - [`telemetry`]: metrics snapshots, lifecycle events and the live
//!   configuration an instance publishes for the monitor;
//!   [`telemetry::init`], a binary's logging in one call.
//! - [`clock`]: [`clock::LONGEST_PERIOD`], the longest period or lifetime
//!   any option may name (thirty days; binaries bound their duration flags
//!   by it too); internally, deadlines from caller-given durations, a wait
//!   too long for the clocks cut to a century instead of a panic.
//! - `task` (internal): the one handle for a component's background tasks
//!   (stop and wait, or cancel on drop).
//!
//! Every component follows one shape: a builder, `start()`, and a handle that
//! stops gracefully with `shutdown().await` (or at once on drop).
//!
//! A complete service: logging (`RUST_LOG`, warnings also to the monitor),
//! the connection from `AEGIS_NATS_*`, one typed method, and a graceful
//! stop (deregistered) on Ctrl-C or SIGTERM. A handler's `?` turns
//! [`rpc::RpcError`] and [`events::EventError`] into a [`rpc::WireError`];
//! `main`'s `anyhow::Result` prints an error that ends it with its causes.
//!
//! ```no_run
//! use aegis_sdk::{Connection, schemars::JsonSchema};
//! use serde::{Deserialize, Serialize};
//!
//! /// Whom to greet.
//! #[derive(Deserialize, JsonSchema)]
//! #[schemars(crate = "aegis_sdk::schemars")]
//! struct Hello { name: String }
//!
//! #[derive(Serialize, JsonSchema)]
//! #[schemars(crate = "aegis_sdk::schemars")]
//! struct Greeting { text: String }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     aegis_sdk::telemetry::init()?;
//!     let conn = Connection::from_env().await?;
//!     conn.service("greeter", "1.0.0")
//!         .handler("hello", |req: Hello| async move {
//!             Ok(Greeting { text: format!("Hello, {}!", req.name) })
//!         })
//!         .run()
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! Calling it from another process:
//!
//! ```no_run
//! # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::{Value, json};
//!
//! let reply: Value = conn.rpc().call("greeter", "hello", &json!({"name": "desk"})).await?;
//! assert_eq!(reply["text"], "Hello, desk!");
//! # Ok(()) }
//! ```

pub mod clock;
pub mod commands;
pub mod config;
pub mod connection;
mod control;
pub mod dead_letter;
pub mod discovery;
pub mod election;
pub mod events;
pub mod feed;
pub mod kv;
mod kv_watch;
pub mod metrics;
#[cfg(feature = "probes")]
pub mod probes;
mod pull;
pub mod registry;
pub mod rpc;
pub mod shutdown;
pub mod startup;
pub mod streams;
mod task;
pub mod telemetry;

pub use aegis_contracts as contracts;
pub use config::{
    AegisConfig, ConfigError, ConfigLoader, NatsConfig, ReconnectPolicy, Secret, StreamLimits,
    StreamsConfig,
};
pub use connection::{ConnectError, Connection, ConnectionDropped, MIN_SERVER_VERSION};
pub use discovery::{Discovery, Strategy};
pub use registry::{RegistryChange, RegistryReader};
/// Derive `JsonSchema` on handler request and response types; the SDK
/// publishes their schemas with each endpoint. Re-exported so a service uses
/// the SDK's version (`#[schemars(crate = "aegis_sdk::schemars")]` when
/// deriving through this path).
pub use schemars;
pub use shutdown::shutdown_signal;

/// The SDK's version, published in instance metadata.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A fresh instance id: the host name plus a short random suffix, e.g.
/// `trading-host-3f9a1c`. Kubernetes deployments pass the pod name instead.
pub fn default_instance_id() -> String {
    use rand::Rng;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .unwrap_or_else(|| "aegis".to_owned());
    let mut clean: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        clean.insert(0, 'i');
    }
    let suffix: u32 = rand::rng().random_range(0..0x100_0000);
    format!("{clean}-{suffix:06x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_instance_ids_are_valid_and_distinct() {
        let a = super::default_instance_id();
        let b = super::default_instance_id();
        aegis_contracts::names::validate_instance_id(&a).unwrap();
        assert_ne!(a, b);
    }
}

/// The README's example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
