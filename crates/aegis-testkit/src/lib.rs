//! Real `nats-server` processes for Aegis integration tests and benchmarks.
//!
//! Aegis never mocks NATS: tests and `aegis bench` run against a real server
//! started by this crate, one per test so tests run in parallel. The modules:
//!
//! - [`binary`](crate::nats_server_binary) (`binary.rs`) finds a
//!   `nats-server` of version 2.11 or newer: `AEGIS_NATS_SERVER`, then the
//!   project tools folder (`AEGIS_TOOLS_DIR` or `<workspace>/.tools`), then
//!   `PATH`.
//! - [`server`](crate::NatsServer) (`server.rs`) runs one node on free ports
//!   with a temporary JetStream store, and can kill, stop and restart it;
//!   `builder.rs` holds its options ([`NatsServerBuilder`]).
//! - [`cluster`](crate::NatsCluster) (`cluster.rs`) starts an N-node
//!   JetStream cluster with routes between all nodes and waits for a
//!   meta leader that sees every node online.
//! - `config.rs` renders the server config file, `net.rs` picks free ports
//!   and probes the monitoring endpoint, `support.rs` retries port
//!   conflicts and names things, `error.rs` holds [`TestkitError`].
//! - [`wait`] awaits a condition in an async test ([`wait::eventually`],
//!   [`wait::until_some`]) instead of sleeping a fixed time; every crate's
//!   integration tests use it.
//! - [`leaders`] finds which node leads a JetStream stream and moves that
//!   leadership, for tests that kill a node.
//!
//! The servers' API is synchronous (`std::process`), so it works from plain
//! and from `#[tokio::test]` tests alike. Every process is killed and its temporary
//! directory removed on drop, also when a test panics.
//!
//! ```no_run
//! # fn main() -> Result<(), aegis_testkit::TestkitError> {
//! let server = aegis_testkit::NatsServer::start()?;
//! println!("connect to {}", server.url());
//! # Ok(())
//! # }
//! ```

mod binary;
mod builder;
mod cluster;
mod config;
mod error;
pub mod leaders;
mod net;
pub mod process;
mod server;
mod support;
pub mod wait;

pub use binary::{MIN_VERSION, nats_server_binary, server_version};
pub use builder::NatsServerBuilder;
pub use cluster::NatsCluster;
pub use error::TestkitError;
pub use server::NatsServer;
