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
mod slips;

use std::time::Duration;

pub use aegis_contracts::wire::{ErrorCode, WireError};
pub use client::{CallOptions, Reply, RpcClient};
pub use codec::CodecError;
pub use codec::Encoding;
pub use describe::{
    CommandDescription, MethodDescription, ServiceDescription, describe, describe_all,
    describe_each,
};
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
    /// Its message is the name error's own (which says which name).
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The request could not be encoded; nothing was sent.
    #[error("cannot encode the request")]
    Encode(#[source] codec::CodecError),
    /// The response could not be decoded into the expected type.
    #[error("cannot decode the response from {subject}")]
    Decode {
        /// The subject called.
        subject: String,
        /// The decoding error.
        #[source]
        source: codec::CodecError,
    },
    /// A call option is out of range (a zero `timeout` or
    /// `attempt_timeout`: no call can be answered in no time; a
    /// `request_id` with a carriage return or line feed, which no header
    /// can carry); nothing was sent, whichever the call style.
    #[error("invalid call options: `{option}` {reason}")]
    InvalidOptions {
        /// The [`CallOptions`] field at fault.
        option: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// No answer within the deadline.
    #[error("no answer from {subject} within {timeout:?}")]
    Timeout {
        /// The subject called.
        subject: String,
        /// How long the call waited: its deadline, or less when it gave up
        /// early (an idempotent call whose attempt timed out with no other
        /// instance left to try).
        timeout: Duration,
    },
    /// The server refused this NATS user publishing to `subject` (its
    /// permissions do not name the service called): the request never
    /// reached the service, and nothing ran. Told when the call's wait ends
    /// (the server drops a refused request without an answer); not retried.
    #[error(
        "NATS refused this user calling {subject} ({violation}); nothing ran: grant the user \
         that permission"
    )]
    Refused {
        /// The subject called.
        subject: String,
        /// The server's text, e.g. `Permissions Violation for Publish to "..."`.
        violation: String,
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
    /// [`RpcClient::call_active`], a call that is not idempotent: the
    /// leader it went to was replaced while the call was in flight, and
    /// nothing listens for that instance on NATS any more (its process
    /// died, or lost its connection): no reply can come, and the call may
    /// have run. Told as soon as that is known, rather than at the
    /// deadline; not sent again (an idempotent call moves to the new
    /// leader instead). Its code is TIMEOUT, as for any call whose outcome
    /// is unknown.
    ///
    /// A leader that is replaced but still running (paused, partitioned
    /// from the election's bucket, or finishing the call during a graceful
    /// stop) is waited for: its answer comes as
    /// [`RpcError::DeposedLeader`].
    #[error(
        "{instance_id}, the leader {subject} was sent to, is gone (another instance leads, and \
         nothing listens for {instance_id} any more) after {waited:?}; it may have run"
    )]
    LeaderGone {
        /// The instance-directed subject called, e.g.
        /// `rpc.order-service.order-1.create_order`.
        subject: String,
        /// The leader the call was sent to.
        instance_id: String,
        /// The fencing epoch it led under.
        epoch: u64,
        /// How long the call had run when it was known.
        waited: Duration,
    },
    /// Nobody listens on the subject: the instance (or, for
    /// [`RpcClient::call_balanced`], every instance) is gone.
    #[error("no instance is serving {subject}")]
    NoResponders {
        /// The subject called.
        subject: String,
    },
    /// Discovery knows no ACTIVE instance of the service; nothing was sent.
    ///
    /// Its message says whether the registry view holds any record of the
    /// service at all. With none (`records == 0`), the name may be a slip:
    /// the message names the registered services with a similar name
    /// (`similar`), e.g. `no instance of qoute-service is registered: the
    /// registry holds no record of that name; did you mean quote-service?`.
    /// Its code is SERVICE_UNAVAILABLE either way (a service not started
    /// yet has no record either), so a caller that retries on that code
    /// should give up on a name it never once reached:
    ///
    /// ```
    /// use aegis_sdk::rpc::RpcError;
    ///
    /// fn worth_retrying(err: &RpcError) -> bool {
    ///     match err {
    ///         // A name no instance ever registered: most likely a typo.
    ///         RpcError::NoInstances { records: 0, similar, .. } if !similar.is_empty() => false,
    ///         RpcError::NoInstances { .. } | RpcError::Timeout { .. } => true,
    ///         _ => false,
    ///     }
    /// }
    /// ```
    #[error("{}", no_instances(.service, *.records, .similar))]
    NoInstances {
        /// The service called.
        service: String,
        /// How many records of the service the registry view holds (none
        /// of them ACTIVE: STANDBY, DRAINING, UNHEALTHY); 0 when it holds
        /// none.
        records: usize,
        /// When it holds none: the registered services whose name is close
        /// to `service` (a likely slip), closest first; empty otherwise, or
        /// when the registry's names could not be read in time.
        similar: Vec<String>,
    },
    /// Instances of the service are registered, but none lists this method
    /// among its endpoints (for [`RpcClient::call`]: no ACTIVE one; for
    /// [`RpcClient::call_active`]: the leader's record does not list it,
    /// and nothing listens on it; for [`RpcClient::call_balanced`]: nothing
    /// listens on it, and no registered instance lists it); nothing was
    /// sent, or nothing ran. Its message names the methods the records list
    /// (`methods`), e.g. `no instance of quote-service serves get_qoute
    /// (it has: get_quote, price_order)`.
    #[error("{}", no_such_method(.service, .method, .methods))]
    NoSuchMethod {
        /// The service called.
        service: String,
        /// The method asked for.
        method: String,
        /// The methods the service's registered records list, sorted;
        /// empty when they were not at hand.
        methods: Vec<String>,
    },
    /// [`RpcClient::call_active`]: no leader of the group was known before
    /// the deadline (none had won its election key); nothing was sent.
    /// When the registry holds no record of the service's name at all, the
    /// message says so and offers the registered services with a similar
    /// name (`similar`), as [`RpcError::NoInstances`] does: ``no leader of
    /// group `default` of ledgre-service within 1s: the registry holds no
    /// record of that name; did you mean ledger-service?``.
    #[error("{}", no_leader(.service, .group, *.waited, .similar.as_deref()))]
    NoLeader {
        /// The service called.
        service: String,
        /// The sticky group asked for.
        group: String,
        /// How long the call waited for one.
        waited: Duration,
        /// `Some` when the registry holds no record of the service's name
        /// (none was ever kept, or none is left): the registered services
        /// whose name is close to it, closest first (maybe none). `None`
        /// when it holds one, or could not tell in time.
        similar: Option<Vec<String>>,
    },
    /// [`RpcClient::call_active`]: no leader of the group appeared before
    /// the deadline, and the service's registered instances are in sticky
    /// groups, but none was in this one (a wrong group, or one whose only
    /// instance was restarting: it is waited for, so said only at the
    /// deadline); nothing was sent.
    #[error(
        "no leader of group `{group}` of {service}: its instances are in group(s) {}",
        quoted(.groups)
    )]
    UnknownGroup {
        /// The service called.
        service: String,
        /// The sticky group asked for.
        group: String,
        /// The groups its registered instances are in, sorted.
        groups: Vec<String>,
    },
    /// [`RpcClient::call_active`] on a service none of whose registered
    /// instances is single-active: it has no leader to call; use
    /// [`RpcClient::call`]. Nothing was sent.
    #[error("{service} is not single-active: use call, not call_active")]
    NotSingleActive {
        /// The service called.
        service: String,
    },
    /// The registry view behind discovery is unavailable, or the call's
    /// routing options are inconsistent; nothing was sent. Says what
    /// itself ("sticky selection needs a key"), not only that the call
    /// could not be routed.
    #[error(transparent)]
    Discovery(DiscoveryError),
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
            RpcError::InvalidName(_)
            | RpcError::Encode(_)
            | RpcError::InvalidOptions { .. }
            | RpcError::NotSingleActive { .. } => ErrorCode::InvalidRequest,
            RpcError::Decode { .. } | RpcError::Transport { .. } => ErrorCode::Internal,
            // Either way nobody knows whether it ran.
            RpcError::Timeout { .. }
            | RpcError::ConnectionLost { .. }
            | RpcError::LeaderGone { .. } => ErrorCode::Timeout,
            RpcError::Refused { .. } => ErrorCode::Forbidden,
            // It ran: not NOT_ACTIVE, which tells callers to retry freely.
            RpcError::DeposedLeader(_) => ErrorCode::Conflict,
            RpcError::Election(_) => ErrorCode::ServiceUnavailable,
            RpcError::NoSuchMethod { .. } | RpcError::UnknownGroup { .. } => ErrorCode::NotFound,
            RpcError::NoResponders { .. }
            | RpcError::NoInstances { .. }
            | RpcError::NoLeader { .. } => ErrorCode::ServiceUnavailable,
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

/// `?` on a call inside a handler: what the handler's own caller is told.
///
/// The rule: the code must not blame the caller for this service's own
/// mistakes, and must not invite a retry when the outcome is unknown.
///
/// - The called service's answer passes on as it came (code, message and
///   details) when it is about the request's subject matter: NOT_FOUND of
///   a resource, CONFLICT, TIMEOUT, SERVICE_UNAVAILABLE, INTERNAL.
/// - Its NOT_ACTIVE becomes SERVICE_UNAVAILABLE: the dependency did
///   nothing, but the caller would take NOT_ACTIVE for "this instance is
///   not the leader" and retry elsewhere at once.
/// - Its INVALID_REQUEST, UNAUTHORIZED and FORBIDDEN become INTERNAL: they
///   refuse the request this service built, or this service's own
///   credentials, not the caller's. Their message and details are logged
///   here, not sent.
/// - A call that failed on this side: TIMEOUT when its outcome is unknown
///   (no answer in time, the connection dropped, or the leader it went
///   to is gone: it may have run);
///   CONFLICT when it ran on a deposed leader; SERVICE_UNAVAILABLE only
///   when it is certain the dependency did nothing (no instance
///   registered, no leader, nobody listening, registry or election keys
///   unreadable: nothing was sent, or nobody received it); INTERNAL for
///   this service's own bug or misconfiguration (a bad name, option or
///   payload, a method or sticky group the dependency does not have,
///   `call_active` on a plain service, a reply that does not decode, a
///   failed send). Never INVALID_REQUEST, which would blame the caller.
///
/// SERVICE_UNAVAILABLE says the failed call did nothing; what the handler
/// did before it is not undone. The SDK's client retries it only for a
/// call marked idempotent; a handler with effects before the call should
/// make them idempotent or map the error itself.
///
/// The message is the error's own `Display` (the dependency's words only
/// when its answer passes on); the causes go to this process's log at
/// WARN, never to the caller. Map the error yourself for another answer.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) {
/// use aegis_sdk::rpc::WireError;
///
/// let rpc = conn.rpc();
/// let service = conn
///     .service("quotes", "1.0.0")
///     .handler("quote", move |symbol: String| {
///         let rpc = rpc.clone();
///         async move {
///             let price: f64 = rpc.call("prices", "get", &symbol).await?;
///             Ok::<_, WireError>(price * 1.01)
///         }
///     });
/// # let _ = service;
/// # }
/// ```
impl From<RpcError> for WireError {
    fn from(err: RpcError) -> Self {
        match err {
            RpcError::Remote { subject, error } => match error.code {
                ErrorCode::InvalidRequest | ErrorCode::Unauthorized | ErrorCode::Forbidden => {
                    tracing::warn!(
                        %subject,
                        code = error.code.as_str(),
                        message = %error.message,
                        details = ?error.details,
                        "a service called by a handler refused this service's request"
                    );
                    WireError::internal(format!(
                        "{subject} refused this service's request ({})",
                        error.code.as_str()
                    ))
                }
                ErrorCode::NotActive => WireError {
                    code: ErrorCode::ServiceUnavailable,
                    ..error
                },
                _ => error,
            },
            other => {
                let code = match &other {
                    RpcError::Timeout { .. }
                    | RpcError::ConnectionLost { .. }
                    | RpcError::LeaderGone { .. } => ErrorCode::Timeout,
                    RpcError::DeposedLeader(_) => ErrorCode::Conflict,
                    RpcError::NoResponders { .. }
                    | RpcError::NoInstances { .. }
                    | RpcError::NoLeader { .. }
                    | RpcError::Election(_)
                    | RpcError::Discovery(DiscoveryError::Registry(_)) => {
                        ErrorCode::ServiceUnavailable
                    }
                    // Listed, not `_`: a new variant must be placed by
                    // hand, where it is certain what it means.
                    RpcError::InvalidName(_)
                    | RpcError::Encode(_)
                    | RpcError::Decode { .. }
                    | RpcError::InvalidOptions { .. }
                    | RpcError::NoSuchMethod { .. }
                    | RpcError::UnknownGroup { .. }
                    | RpcError::NotSingleActive { .. }
                    | RpcError::Discovery(_)
                    | RpcError::Transport { .. }
                    | RpcError::Refused { .. }
                    | RpcError::Remote { .. } => ErrorCode::Internal,
                };
                // The causes (NATS's words) stay in this process's log.
                tracing::warn!(error = %crate::startup::Causes(&other), "a call made by a handler failed");
                WireError::new(code, other.to_string())
            }
        }
    }
}

/// `?` on an event operation inside a handler:
///
/// - [`EventError::Publish`](crate::events::EventError::Publish),
///   JetStream did not confirm the event: TIMEOUT. It may be stored, and
///   the handler's other effects are done, so its caller must not take
///   it for "nothing happened" (a retry would run the handler again, and
///   its publish would draw a new id).
/// - The `EVENTS` stream or a consumer could not be created or found:
///   SERVICE_UNAVAILABLE (nothing was published).
/// - A name, id, payload or option the handler got wrong: INTERNAL (a
///   fault of the service, not of its caller).
///
/// The message is the error's own; its causes go to this process's log
/// only.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) {
/// use aegis_sdk::rpc::WireError;
///
/// let events = conn.events();
/// let service = conn
///     .service("prices", "1.0.0")
///     .handler("set", move |price: f64| {
///         let events = events.clone();
///         async move {
///             events.publish("price", "changed", &price).await?;
///             Ok::<_, WireError>(())
///         }
///     });
/// # let _ = service;
/// # }
/// ```
impl From<crate::events::EventError> for WireError {
    fn from(err: crate::events::EventError) -> Self {
        use crate::events::EventError;
        let code = match &err {
            EventError::Publish { .. } => ErrorCode::Timeout,
            EventError::Stream(_) | EventError::Consumer { .. } => ErrorCode::ServiceUnavailable,
            EventError::InvalidName(_)
            | EventError::InvalidId { .. }
            | EventError::Encode(_)
            | EventError::NoHandler
            | EventError::InvalidOptions(_)
            | EventError::ConsumerSetting { .. }
            | EventError::Refused { .. } => ErrorCode::Internal,
        };
        tracing::warn!(error = %crate::startup::Causes(&err), "an event operation of a handler failed");
        WireError::new(code, err.to_string())
    }
}

/// `a`, `b` as "`a`, `b`".
/// [`RpcError::NoInstances`]'s message.
fn no_instances(service: &str, records: usize, similar: &[String]) -> String {
    match (records, similar) {
        (0, []) => format!(
            "no instance of {service} is registered: the registry holds no record of that name \
             (not started yet, or a misspelt name?)"
        ),
        (0, similar) => format!(
            "no instance of {service} is registered: the registry holds no record of that name; \
             did you mean {}?",
            similar.join(" or ")
        ),
        (1, _) => format!("no ACTIVE instance of {service} is registered (1 record, not ACTIVE)"),
        (n, _) => {
            format!("no ACTIVE instance of {service} is registered ({n} records, none ACTIVE)")
        }
    }
}

/// [`RpcError::NoLeader`]'s message.
fn no_leader(service: &str, group: &str, waited: Duration, similar: Option<&[String]>) -> String {
    let base = format!("no leader of group `{group}` of {service} within {waited:?}");
    match similar {
        None => base,
        Some([]) => format!(
            "{base}: the registry holds no record of that name (not started yet, or a misspelt \
             name?)"
        ),
        Some(similar) => format!(
            "{base}: the registry holds no record of that name; did you mean {}?",
            similar.join(" or ")
        ),
    }
}

/// [`RpcError::NoSuchMethod`]'s message.
fn no_such_method(service: &str, method: &str, methods: &[String]) -> String {
    if methods.is_empty() {
        format!("no instance of {service} serves {method}")
    } else {
        format!(
            "no instance of {service} serves {method} (it has: {})",
            methods.join(", ")
        )
    }
}

fn quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::error::Error as _;

    use super::*;

    /// A call discovery cannot route says why in its own message: a
    /// caller printing `{err}` sees the reason, not only that it failed.
    #[test]
    fn a_call_that_cannot_be_routed_says_why() {
        let err = RpcError::Discovery(DiscoveryError::MissingStickyKey);
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert_eq!(err.to_string(), "sticky selection needs a key");
    }

    /// Printed with its causes (as `anyhow`'s `{:#}` does), an invalid
    /// name is said once: the error is the name error itself, not a message
    /// holding it with the same error again as its source.
    #[test]
    fn an_invalid_name_does_not_repeat_its_cause() {
        let name = aegis_contracts::names::validate_service_name("a b").unwrap_err();
        let err = RpcError::from(name);
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        let top = err.to_string();
        if let Some(cause) = err.source() {
            let cause = cause.to_string();
            assert!(
                !top.contains(&cause),
                "`{top}` repeats its source `{cause}`"
            );
        }
    }

    /// A payload that does not encode or decode is said once in the printed
    /// chain: the call says what it was doing, the codec error which
    /// encoding, serde what was wrong.
    #[test]
    fn a_codec_failure_says_its_cause_once() {
        let not_a_number = || codec::Encoding::Json.decode::<u32>(b"\"x\"").unwrap_err();
        say_each_cause_once(RpcError::Encode(not_a_number()));
        say_each_cause_once(RpcError::Decode {
            subject: "orders.place".to_owned(),
            source: not_a_number(),
        });
    }

    /// Asserts that `err`, printed with its causes as `anyhow`'s `{:#}`
    /// does, says each part once: no level repeats the text of its source,
    /// so the innermost cause appears exactly once.
    pub(crate) fn say_each_cause_once(err: impl std::error::Error + Send + Sync + 'static) {
        let levels: Vec<String> =
            std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                (*e).source()
            })
            .map(ToString::to_string)
            .collect();
        let printed = format!("{:#}", anyhow::Error::new(err));
        assert!(levels.len() > 1, "`{printed}` has no cause to check");
        for pair in levels.windows(2) {
            assert!(
                !pair[0].contains(&pair[1]),
                "`{printed}`: `{}` repeats its cause `{}`",
                pair[0],
                pair[1]
            );
        }
        let innermost = levels.last().expect("at least one level");
        assert_eq!(
            printed.matches(innermost.as_str()).count(),
            1,
            "`{printed}` says `{innermost}` more than once"
        );
    }
}
