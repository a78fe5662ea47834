//! Request/reply between services.
//!
//! - [`server`]: a service declares typed handlers ([`ServiceBuilder`]); each
//!   method listens on `rpc.{service}.{method}` (queue group `rpc.{service}`,
//!   so instances share the load) and on `rpc.{service}.{instance}.{method}`
//!   (that one instance). In a single-active service only the leader is in
//!   the queue group of a leader-only method, so a plain NATS request
//!   reaches the leader (`leader_gate`); standbys answer only their
//!   instance-directed subjects, with NOT_ACTIVE. The started [`Service`]
//!   registers itself in the [registry](crate::registry) and heart-beats
//!   until it stops.
//! - [`describe`](mod@describe): what each method of a service takes and returns (JSON
//!   Schemas its instances publish in `$SRV.INFO`).
//! - `endpoint`: the request path (decode, run, answer, count).
//! - `micro`: the NATS services protocol (`$SRV.PING`, `$SRV.INFO`,
//!   `$SRV.STATS`): one endpoint per method in declaration order, and a
//!   single-active instance's role, group, leader and epoch in its metadata.
//! - [`client`]: [`RpcClient`] calls with a deadline and maps wire errors to
//!   [`RpcError`]. `call` routes through [discovery](crate::discovery) to one
//!   registered ACTIVE instance (instance-directed subject), failing over to
//!   another when it has vanished; `call_balanced` uses the queue group.
//! - `route`: the one retry loop of `call` and `call_active`: a picker
//!   chooses each attempt's instance (discovery, or the election key's
//!   holder), one classification says what a failed attempt means.
//! - [`codec`]: JSON on the wire by default, MessagePack when the request
//!   carries `Aegis-Encoding: msgpack`.
//! - `headers`: the header names as constants, and a reply's headers read
//!   in one pass.
//!
//! Errors travel as a [`WireError`] with a stable [`ErrorCode`] in the
//! `Aegis-Error-Code` header, next to the services protocol's standard
//! `Nats-Service-Error` / `Nats-Service-Error-Code` headers.

pub mod client;
pub mod codec;
pub mod describe;
mod endpoint;
mod headers;
mod leader_gate;
mod micro;
mod route;
mod schema;
pub mod server;

use std::time::Duration;

pub use aegis_contracts::wire::{ErrorCode, WireError};
pub use client::{CallOptions, Reply, RpcClient};
pub use codec::CodecError;
pub use codec::Encoding;
pub use describe::{MethodDescription, ServiceDescription, describe};
pub use server::{RequestContext, Service, ServiceBuilder};

use aegis_contracts::names::NameError;

use crate::discovery::DiscoveryError;

/// A reply a deposed leader sent; see [`RpcError::DeposedLeader`].
#[derive(Debug, Clone)]
pub struct DeposedReply {
    /// The service called.
    pub service: String,
    /// The sticky group.
    pub group: String,
    /// The instance that ran the call.
    pub instance_id: String,
    /// The fencing epoch its reply carried.
    pub epoch: u64,
    /// The newest epoch the group's election key had shown this process.
    pub current_epoch: Option<u64>,
    pub(crate) payload: bytes::Bytes,
    pub(crate) encoding: Encoding,
}

impl DeposedReply {
    /// The answer the deposed leader sent, decoded.
    ///
    /// # Errors
    /// [`codec::CodecError`] when it is not a `T`.
    pub fn value<T: serde::de::DeserializeOwned>(&self) -> Result<T, codec::CodecError> {
        self.encoding.decode(&self.payload)
    }
}

/// Why an RPC call failed, as seen by the caller.
///
/// ```
/// use aegis_sdk::rpc::{ErrorCode, RpcError};
///
/// fn describe(err: &RpcError) -> &'static str {
///     match err.code() {
///         ErrorCode::NotFound => "no such thing",
///         ErrorCode::Timeout => "too slow",
///         _ => "other",
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The service, instance or method name is not valid; nothing was sent.
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    /// The request could not be encoded; nothing was sent.
    #[error("cannot encode the request: {0}")]
    Encode(#[source] codec::CodecError),
    /// The response could not be decoded into the expected type.
    #[error("cannot decode the response from {subject}: {source}")]
    Decode {
        /// The subject called.
        subject: String,
        /// The decoding error.
        #[source]
        source: codec::CodecError,
    },
    /// No answer within the deadline.
    #[error("no answer from {subject} within {timeout:?}")]
    Timeout {
        /// The subject called.
        subject: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The connection dropped while the call waited for its reply: the
    /// reply cannot come, and the call may have run. An idempotent call is
    /// retried once reconnected; any other is returned at once instead of
    /// at its deadline.
    #[error("the NATS connection dropped while {subject} was in flight; it may have run")]
    ConnectionLost {
        /// The subject called.
        subject: String,
    },
    /// Nobody listens on the subject: the instance (or, for
    /// [`RpcClient::call_balanced`], every instance) is gone.
    #[error("no instance is serving {subject}")]
    NoResponders {
        /// The subject called.
        subject: String,
    },
    /// Discovery knows no ACTIVE instance of the service; nothing was sent.
    #[error("no ACTIVE instance of {service} is registered")]
    NoInstances {
        /// The service called.
        service: String,
    },
    /// ACTIVE instances of the service are registered, but none lists this
    /// method among its endpoints; nothing was sent.
    #[error("no ACTIVE instance of {service} serves {method}")]
    NoSuchMethod {
        /// The service called.
        service: String,
        /// The method asked for.
        method: String,
    },
    /// The registry view behind discovery is unavailable, or the call's
    /// routing options are inconsistent; nothing was sent.
    #[error("cannot route the call")]
    Discovery(#[source] DiscoveryError),
    /// The service answered with an error (its code says which).
    #[error("{subject} answered {error}")]
    Remote {
        /// The subject called.
        subject: String,
        /// The error the service sent.
        error: WireError,
    },
    /// [`RpcClient::call_active`]: the call **ran**, on a leader that had
    /// been deposed by the time it answered (its reply carries an older
    /// fencing epoch than the group's election key). What it did may be
    /// refused downstream, or superseded by the new leader; its answer is
    /// in [`DeposedReply::value`]. Returned for calls that are not
    /// idempotent, which are never run twice; idempotent calls are retried
    /// on the new leader instead.
    #[error(
        "{}/{}: {} answered at epoch {}, but a newer leader holds the group (epoch {}); the call ran on the deposed leader",
        .0.service, .0.group, .0.instance_id, .0.epoch,
        .0.current_epoch.map_or_else(|| "unknown".to_owned(), |e| e.to_string())
    )]
    DeposedLeader(Box<DeposedReply>),
    /// The election keys [`RpcClient::call_active`] routes by are
    /// unavailable; nothing was sent.
    #[error("cannot read the election keys")]
    Election(#[source] crate::election::ElectionError),
    /// The NATS client failed to send or receive.
    #[error("NATS request on {subject} failed")]
    Transport {
        /// The subject called.
        subject: String,
        /// The client's error.
        #[source]
        source: async_nats::RequestError,
    },
}

impl RpcError {
    /// The stable error code this failure corresponds to.
    pub fn code(&self) -> ErrorCode {
        match self {
            RpcError::InvalidName(_) | RpcError::Encode(_) => ErrorCode::InvalidRequest,
            RpcError::Decode { .. } | RpcError::Transport { .. } => ErrorCode::Internal,
            // Either way nobody knows whether it ran.
            RpcError::Timeout { .. } | RpcError::ConnectionLost { .. } => ErrorCode::Timeout,
            // It ran: not NOT_ACTIVE, which tells callers to retry freely.
            RpcError::DeposedLeader(_) => ErrorCode::Conflict,
            RpcError::Election(_) => ErrorCode::ServiceUnavailable,
            RpcError::NoSuchMethod { .. } => ErrorCode::NotFound,
            RpcError::NoResponders { .. } | RpcError::NoInstances { .. } => {
                ErrorCode::ServiceUnavailable
            }
            RpcError::Discovery(DiscoveryError::MissingStickyKey) => ErrorCode::InvalidRequest,
            RpcError::Discovery(DiscoveryError::InvalidName(_)) => ErrorCode::InvalidRequest,
            RpcError::Discovery(DiscoveryError::Registry(_)) => ErrorCode::ServiceUnavailable,
            RpcError::Remote { error, .. } => error.code,
        }
    }

    /// The wire error when the service answered with one.
    pub fn remote(&self) -> Option<&WireError> {
        match self {
            RpcError::Remote { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Printed with its causes (as `anyhow`'s `{:#}` does), an error says
    /// each thing once: either its message holds the inner one's, or the
    /// inner one is its source, never both.
    #[test]
    fn errors_do_not_repeat_their_cause() {
        let name = aegis_contracts::names::validate_service_name("a b").unwrap_err();
        let encode = Encoding::Json.decode::<u8>(b"x").expect_err("not JSON");
        let decode = Encoding::Json.decode::<u8>(b"y").expect_err("not JSON");
        for err in [
            RpcError::from(name),
            RpcError::Encode(encode),
            RpcError::Decode {
                subject: "rpc.s.m".into(),
                source: decode,
            },
        ] {
            let top = err.to_string();
            if let Some(cause) = err.source() {
                let cause = cause.to_string();
                assert!(
                    !top.contains(&cause),
                    "`{top}` repeats its source `{cause}`"
                );
            }
        }
    }
}
