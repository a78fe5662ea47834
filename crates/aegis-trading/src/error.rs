//! [`TradingError`]: why an example service could not start or stop cleanly.
//! Errors a *caller* sees travel as [`WireError`](aegis_sdk::rpc::WireError)
//! codes instead.

use aegis_sdk::{events::EventError, rpc::server::ServiceError};

/// Why a trading service could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum TradingError {
    /// The options cannot work (e.g. a zero interval, a negative limit);
    /// nothing was started.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The RPC service could not start or stop.
    #[error("the RPC service failed")]
    Service(#[from] ServiceError),
    /// An event subscription could not start.
    #[error("cannot subscribe to events")]
    Events(#[from] EventError),
    /// A KV bucket the service keeps its state in could not be opened or
    /// watched.
    #[error("cannot use the KV bucket {bucket}")]
    Store {
        /// The bucket.
        bucket: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}
