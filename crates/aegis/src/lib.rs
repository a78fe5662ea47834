//! The `aegis` command-line tool, as a library.
//!
//! - [`cli`]: the argument parser and dispatch (`up`, `api`, `service`,
//!   `call`, `status`, `bench`, `chaos`); installs tracing and signal handling.
//! - [`bench`]: side-by-side benchmarks of raw async-nats and the SDK, run in
//!   one process against one nats-server, with ratios.
//! - [`up`]: the local showcase: NATS, the services and the monitor as child
//!   processes.
//! - [`shutdown`]: the root cancellation token, cancelled on Ctrl-C / SIGTERM.

pub mod bench;
pub mod cli;
pub mod shutdown;
pub mod up;
