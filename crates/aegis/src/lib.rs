//! The `aegis` command-line tool, as a library.
//!
//! - [`cli`]: the argument parser and dispatch (`up`, `api`, `service`,
//!   `call`, `command`, `events`, `consumers`, `status`, `traffic`, `bench`, `chaos`, `init`,
//!   `nats-config`); installs
//!   tracing and signal handling.
//! - [`bench`](mod@bench): side-by-side benchmarks of raw async-nats and the SDK, run in
//!   one process against one nats-server, with ratios.
//! - [`up`]: the local showcase: NATS, the services and the monitor as child
//!   processes.
//! - [`service`]: `aegis service <order|pricing|risk|echo>`, one instance.
//! - [`call`]: `aegis call`, one RPC through discovery.
//! - [`command`](mod@command): `aegis command`, one command to a service's
//!   workers, followed to its result.
//! - [`events`]: `aegis events tail`, the `EVENTS` stream followed on an
//!   ephemeral consumer.
//! - [`consumers`]: `aegis consumers list|rm`, the durable consumers of
//!   `EVENTS` and `COMMANDS`, and deleting one no program uses.
//! - [`status`]: the registry as a terminal table.
//! - [`chaos`]: kill instances and NATS nodes of a running showcase.
//! - [`traffic`]: a steady order flow into a running showcase, checked for
//!   lost orders at the end.
//! - [`permissions`]: the NATS users per role and the subjects each may use.
//! - [`nats_config`]: `aegis nats-config`, those users as a nats-server
//!   config block and as the Helm chart's generated user table.
//! - [`shutdown`]: the root cancellation token, cancelled on Ctrl-C / SIGTERM.

pub mod bench;
pub mod call;
pub mod chaos;
pub mod cli;
pub mod command;
pub mod consumers;
pub mod events;
pub mod init;
pub mod nats_config;
pub mod permissions;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod traffic;
pub mod up;
