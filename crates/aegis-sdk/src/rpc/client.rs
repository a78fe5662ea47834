//! The calling side of RPC: [`RpcClient`] sends a typed request with a
//! deadline and turns the reply (or the wire error) into a typed result.
//!
//! [`RpcClient::call`] and [`RpcClient::call_with`] route through
//! [discovery](crate::discovery): they pick an ACTIVE instance by the
//! strategy and send on its own subject `rpc.{service}.{instance}.{method}`,
//! so the strategy decides who answers. An instance without a responder (it
//! died) is evicted from this process's view and another is tried at once;
//! one whose attempt timed out (hung, or too slow for the call) is passed
//! over while another is left, until it writes a newer record (a running
//! instance re-writes its record every few seconds, a hung one never), so a
//! hung instance costs each caller one attempt, not a share of its calls
//! until its record expires; when every instance timed out (an overload)
//! calls go to all of them again, not to the first that answers. An idempotent call
//! also moves on when one attempt times out, and asks
//! again (elsewhere, or after a pause) when an instance answers
//! SERVICE_UNAVAILABLE; all within the call's deadline. A call whose own connection drops while it waits
//! ends at once ([`RpcError::ConnectionLost`]: no reply can come on a new
//! connection) and, when idempotent, is sent again once reconnected.
//! [`RpcClient::call_balanced`] keeps the plain
//! queue-group path (`rpc.{service}.{method}`, the server picks; its reply
//! names who served only when asked, [`CallOptions::who_served`]), and
//! [`RpcClient::call_instance`] addresses one named instance.
//!
//! [`RpcClient::call_active`] reaches the leader of a sticky group. It
//! routes by the group's election key (one watch of `service_elections`
//! per connection), not by registry records: a record carries whatever its
//! writer claims, so a forged or stale record claiming a huge epoch must
//! neither receive calls nor raise the epoch the client trusts. A reply
//! stamped with an epoch older than the key's newest comes from a leader
//! deposed while the call ran, and the call *ran* there. The choice made:
//! such a reply is returned as [`RpcError::DeposedLeader`], an error the
//! caller matches and that still holds the answer, rather than as an `Ok`
//! with a flag a caller using `?` would never look at; and only an
//! idempotent call is retried on the new leader, since retrying any other
//! would run it twice. The newest epoch is forgotten with its bucket: a
//! `service_elections` created again starts its revisions, and so its
//! epochs, over.

use std::time::Duration;

use aegis_contracts::{names, subjects};
use async_nats::{HeaderMap, Message, RequestErrorKind, Subject};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use tokio::time::Instant;

use super::{
    Encoding, RpcError,
    headers::{H_ENCODING, H_REQUEST_ID, H_WANT_INSTANCE, ReplyHeaders},
    route::{self, ByDiscovery, Call, ToLeader},
};
use crate::{Connection, discovery::Strategy, election::ElectionError};

/// Per-call options.
///
/// ```
/// use std::time::Duration;
/// use aegis_sdk::rpc::CallOptions;
///
/// // A read that may safely run twice: retry elsewhere after 300 ms.
/// let opts = CallOptions {
///     timeout: Some(Duration::from_secs(2)),
///     idempotent: true,
///     attempt_timeout: Some(Duration::from_millis(300)),
///     ..Default::default()
/// };
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Deadline of the whole call, retries included; the connection's
    /// `request_timeout` when `None`. Zero is refused
    /// ([`RpcError::InvalidOptions`]).
    pub timeout: Option<Duration>,
    /// Payload encoding of request and reply.
    pub encoding: Encoding,
    /// A request id to correlate logs across services (`Aegis-Request-Id`).
    /// One with a carriage return or line feed is refused
    /// ([`RpcError::InvalidOptions`]): a header cannot carry it.
    pub request_id: Option<String>,
    /// The call may run more than once without harm. Then an attempt that
    /// times out is retried on another instance, and an instance's answer
    /// of SERVICE_UNAVAILABLE (it cannot serve for now: its store or a
    /// dependency is out) is asked again: of another instance at once, or
    /// of the same one after a pause that grows from 100 ms to 1 s. All
    /// within the call's deadline; if no attempt is served, the call's
    /// error is the last answer. A call that found no responder is retried
    /// either way: it never ran.
    pub idempotent: bool,
    /// Deadline of one attempt of an idempotent call; a third of `timeout`
    /// when `None`. Ignored for other calls, but zero is refused by every
    /// call ([`RpcError::InvalidOptions`]).
    pub attempt_timeout: Option<Duration>,
    /// Route by this key: the same key reaches the same instance while it
    /// lives (implies [`Strategy::Sticky`] unless `strategy` says otherwise).
    pub sticky_key: Option<String>,
    /// How to pick the instance; the client's default (round-robin unless
    /// set with [`RpcClient::with_strategy`]) when `None`.
    pub strategy: Option<Strategy>,
    /// Ask a load-balanced reply ([`RpcClient::call_balanced`]) to name
    /// the instance that served it, in [`Reply::instance_id`]. Off by
    /// default: naming it costs a header on the request and on the reply.
    /// Other calls know who served without asking.
    pub who_served: bool,
}

impl CallOptions {
    /// Options with this deadline (to chain it after other settings, use
    /// [`with_timeout`](Self::with_timeout)).
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..Default::default()
        }
    }

    /// These options with this deadline for the whole call (retries
    /// included), chainable like the other settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use aegis_sdk::rpc::CallOptions;
    ///
    /// let opts = CallOptions::default().idempotent().with_timeout(Duration::from_secs(2));
    /// assert_eq!(opts.timeout, Some(Duration::from_secs(2)));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options marked idempotent (retried elsewhere on an attempt
    /// timeout, asked again after SERVICE_UNAVAILABLE; see
    /// [`CallOptions::idempotent`]).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// These options asking a load-balanced reply who served it.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
    /// use aegis_sdk::rpc::CallOptions;
    /// use serde_json::{json, Value};
    /// let opts = CallOptions::default().who_served();
    /// let reply = conn.rpc().call_balanced::<_, Value>("pricing-service", "get_price", &json!({}), &opts).await?;
    /// println!("served by {:?}", reply.instance_id);
    /// # Ok(()) }
    /// ```
    pub fn who_served(mut self) -> Self {
        self.who_served = true;
        self
    }

    /// These options with a sticky key.
    pub fn sticky(mut self, key: impl Into<String>) -> Self {
        self.sticky_key = Some(key.into());
        self
    }

    /// Refuses options no call can work with, before any I/O: two
    /// comparisons, and a scan of the request id when there is one, as
    /// cheap as the hot path needs.
    #[inline]
    pub(super) fn check(&self) -> Result<(), RpcError> {
        const POSITIVE: &str = "must be greater than zero";
        if self.timeout == Some(Duration::ZERO) {
            return Err(RpcError::InvalidOptions {
                option: "timeout",
                reason: POSITIVE,
            });
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(RpcError::InvalidOptions {
                option: "attempt_timeout",
                reason: POSITIVE,
            });
        }
        // Sent as a header value, where a line break would end the header
        // (async-nats panics on one rather than send it).
        if let Some(id) = &self.request_id
            && id.contains(['\r', '\n'])
        {
            return Err(RpcError::InvalidOptions {
                option: "request_id",
                reason: "must not contain a carriage return or line feed",
            });
        }
        Ok(())
    }
}

/// A decoded reply and who served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The decoded response.
    pub value: T,
    /// The instance that handled the call: the one an instance-directed call
    /// went to, or the `Aegis-Instance` header of a load-balanced reply
    /// (which names it when asked with [`CallOptions::who_served`], or when
    /// the method is leader-only).
    pub instance_id: Option<String>,
    /// The leader's fencing epoch, for calls served by a single-active
    /// service (`Aegis-Epoch` header).
    pub epoch: Option<u64>,
}

/// Calls services. Cheap to clone.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
/// use serde_json::{json, Value};
///
/// let price: Value = conn.rpc().call("pricing-service", "get_price", &json!({"symbol": "AAPL"})).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RpcClient {
    conn: Connection,
    strategy: Strategy,
}

impl RpcClient {
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn,
            strategy: Strategy::default(),
        }
    }

    /// This client with another default strategy (calls can still choose
    /// their own in [`CallOptions::strategy`]).
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The strategy calls use unless they say otherwise.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Calls `method` on an ACTIVE instance of `service`, chosen by
    /// discovery (round-robin by default), with the default deadline.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
    /// use serde_json::{json, Value};
    /// let risk: Value = conn.rpc().call("risk-service", "check", &json!({"account": "A1"})).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RpcError`]: invalid names or options (before any I/O);
    /// [`RpcError::NoInstances`] at once when no ACTIVE instance is known
    /// (saying whether the registry holds any record of the service, and
    /// when it holds none, naming registered services with a similar
    /// name); [`RpcError::NoSuchMethod`] when the ACTIVE ones do not list
    /// `method` (naming those they list);
    /// [`RpcError::NoResponders`] when every instance tried had vanished;
    /// [`RpcError::Timeout`], or [`RpcError::Refused`] in its place when
    /// the server refused this user the subject (it answers a refused
    /// request with nothing, so that too is told when the wait ends, and
    /// not tried again); the service's own error
    /// ([`RpcError::Remote`]); [`RpcError::Discovery`] when the registry
    /// view cannot start, or cannot load the service's records before the
    /// call's deadline (a connection's first call starts the view, and a
    /// service's first call adds it to the watch), and nothing was sent.
    pub async fn call<Req, Res>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
    ) -> Result<Res, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        // Only the value is returned: the reply needs no instance name.
        let opts = CallOptions::default();
        Ok(self
            .discovered(service, method, req, &opts, false)
            .await?
            .value)
    }

    /// Calls `method` on an instance of `service` chosen by discovery, with
    /// explicit options (deadline, idempotency, sticky key, strategy), and
    /// returns the reply with the id of the instance that served it.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
    /// use aegis_sdk::rpc::CallOptions;
    /// use serde_json::{json, Value};
    ///
    /// let opts = CallOptions::default().sticky("account-42").idempotent();
    /// let reply = conn.rpc().call_with::<_, Value>("order-service", "positions", &json!({}), &opts).await?;
    /// println!("served by {:?}", reply.instance_id);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call); [`RpcError::Discovery`] also when a sticky
    /// strategy has no key.
    pub async fn call_with<Req, Res>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Reply<Res>, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        self.discovered(service, method, req, opts, true).await
    }

    /// A call through discovery; `named` fills the reply's instance id.
    async fn discovered<Req, Res>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
        named: bool,
    ) -> Result<Reply<Res>, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        names::validate_service_name(service)?;
        names::validate_method_name(method)?;
        let call = self.prepare(service, method, req, opts, named)?;
        let strategy = opts.strategy.unwrap_or(if opts.sticky_key.is_some() {
            Strategy::Sticky
        } else {
            self.strategy
        });
        let cache = match view_by(
            self.conn.loaded_registry(),
            call.deadline,
            self.conn.registry_cache(),
        )
        .await
        {
            Some(Ok(cache)) => cache,
            Some(Err(e)) => return Err(RpcError::Discovery(e.into())),
            None => return Err(call.registry_late()),
        };
        let mut picker =
            ByDiscovery::new(cache, self.conn.discovery_index(), &call, strategy).await?;
        match self.attempts(&call, &mut picker).await {
            Err(e @ RpcError::NoInstances { .. }) => {
                Err(super::slips::with_similar(&self.conn, e, call.deadline).await)
            }
            done => done,
        }
    }

    /// Calls `method` through the service's queue group
    /// (`rpc.{service}.{method}`): the NATS server picks any subscribed
    /// instance, registered or not, with no discovery involved. The reply
    /// names who served it only when asked ([`CallOptions::who_served`]) or
    /// when the method is leader-only. Only a call nobody answered asks the
    /// registry why (starting the connection's registry view, as
    /// [`call`](Self::call) does, when the registry exists).
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
    /// use aegis_sdk::rpc::CallOptions;
    /// use serde_json::{json, Value};
    /// let reply = conn.rpc().call_balanced::<_, Value>("pricing-service", "get_price", &json!({}), &CallOptions::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call), except that an unknown service gives
    /// [`RpcError::NoResponders`]; when nobody listens and the service's
    /// registered instances do not list `method`, [`RpcError::NoSuchMethod`]
    /// at once.
    pub async fn call_balanced<Req, Res>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Reply<Res>, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        names::validate_service_name(service)?;
        names::validate_method_name(method)?;
        let subject = subjects::rpc_subject(service, method);
        let started = Instant::now();
        match self.request(subject, req, opts, opts.who_served).await {
            // Nobody listens: the records may say why (a method no
            // instance has). Asked only now, so a served call never pays
            // for it; boxed, as rare, out of every call's future.
            Err(RpcError::NoResponders { subject }) => {
                let deadline = crate::clock::deadline(started, self.deadline(opts));
                let why = Box::pin(route::unlisted_method(
                    &self.conn, service, method, deadline,
                ))
                .await;
                Err(why.unwrap_or(RpcError::NoResponders { subject }))
            }
            other => other,
        }
    }

    /// Calls `method` on one named instance (`rpc.{service}.{instance}.{method}`).
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
    /// use aegis_sdk::rpc::CallOptions;
    /// use serde_json::{json, Value};
    /// let reply = conn.rpc().call_instance::<_, Value>("pricing-service", "pricing-1", "get_price", &json!({}), &CallOptions::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call); [`RpcError::NoResponders`] when that instance is gone.
    pub async fn call_instance<Req, Res>(
        &self,
        service: &str,
        instance: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Reply<Res>, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        names::validate_service_name(service)?;
        names::validate_instance_id(instance)?;
        names::validate_method_name(method)?;
        let subject = subjects::rpc_instance_subject(service, instance, method);
        let mut reply = self.request(subject, req, opts, false).await?;
        // Replies on the instance-directed subject carry no instance header:
        // only that instance subscribes to it.
        reply.instance_id.get_or_insert_with(|| instance.to_owned());
        Ok(reply)
    }

    fn deadline(&self, opts: &CallOptions) -> Duration {
        opts.timeout
            .unwrap_or(self.conn.config().nats.request_timeout)
    }

    /// Calls `method` on the ACTIVE leader of `group` of a sticky
    /// single-active service.
    ///
    /// The leader and its fencing epoch come from the group's election key
    /// (`sticky-active.{service}.{group}` in `service_elections`, followed
    /// by one watch per connection), never from what a registry record
    /// claims. A STANDBY answers NOT_ACTIVE without running the handler, and
    /// a vanished leader has no responder: in both cases the call waits for
    /// the key to change (or a short growing back-off) and tries again,
    /// until the deadline. A reply stamped with an epoch older than the
    /// newest the key has shown came from a leader deposed while the call
    /// ran: the call *did run* there. An idempotent call is then retried on
    /// the new leader; any other call returns
    /// [`RpcError::DeposedLeader`], holding what the deposed leader
    /// answered, and is never run twice. Other errors are returned as they
    /// are.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
    /// use aegis_sdk::rpc::{CallOptions, RpcError};
    /// use serde_json::{json, Value};
    ///
    /// let order = json!({"symbol": "AAPL", "side": "BUY", "quantity": 10, "client_order_id": "c-1"});
    /// match conn
    ///     .rpc()
    ///     .call_active::<_, Value>("order-service", "default", "create_order", &order, &CallOptions::default())
    ///     .await
    /// {
    ///     Ok(reply) => println!("leader {:?} at epoch {:?}", reply.instance_id, reply.epoch),
    ///     // It ran on a leader deposed meanwhile: look the order up before retrying.
    ///     Err(RpcError::DeposedLeader(deposed)) => println!("ran on {} at epoch {}", deposed.instance_id, deposed.epoch),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RpcError`]: invalid names or options (before any I/O);
    /// [`RpcError::NoLeader`] when no leader appeared before the deadline
    /// (or the last NOT_ACTIVE / no-responder error; it says so when the
    /// registry holds no record of the service's name, naming registered
    /// services with a similar name), or
    /// [`RpcError::UnknownGroup`] then when the service's registered
    /// instances are in sticky groups but none was in `group`; at once,
    /// [`RpcError::NotSingleActive`] when they are in no sticky group, and
    /// [`RpcError::NoSuchMethod`] when the leader has no responder for
    /// `method` and its record does not list it;
    /// [`RpcError::DeposedLeader`] as above;
    /// [`RpcError::Timeout`] (or [`RpcError::Refused`], as for
    /// [`call`](Self::call)); [`RpcError::Election`] when the election keys
    /// cannot be read, or cannot load before the call's deadline (the
    /// connection's first such call loads them), and nothing was sent; the
    /// leader's own error.
    pub async fn call_active<Req, Res>(
        &self,
        service: &str,
        group: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Reply<Res>, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        names::validate_service_name(service)?;
        names::validate_group_name(group)?;
        names::validate_method_name(method)?;
        let call = self.prepare(service, method, req, opts, true)?;
        let view = match view_by(
            self.conn.loaded_elections(),
            call.deadline,
            self.conn.election_view(),
        )
        .await
        {
            Some(Ok(view)) => view,
            Some(Err(e)) => return Err(RpcError::Election(e)),
            None => return Err(RpcError::Election(ElectionError::NotSynced(call.timeout))),
        };
        match self
            .attempts(&call, &mut ToLeader::new(&self.conn, view.clone(), group))
            .await
        {
            Err(e @ RpcError::NoLeader { .. }) => {
                Err(super::slips::no_leader_named(&self.conn, e).await)
            }
            done => done,
        }
    }

    /// Everything a call carries through its attempts; `named`: whether
    /// its reply names the instance that served it.
    fn prepare<'a, Req: Serialize + ?Sized>(
        &self,
        service: &'a str,
        method: &'a str,
        req: &Req,
        opts: &'a CallOptions,
        named: bool,
    ) -> Result<Call<'a>, RpcError> {
        opts.check()?;
        let (payload, headers) = encode(req, opts, false)?;
        let timeout = self.deadline(opts);
        let started = Instant::now();
        Ok(Call {
            service,
            method,
            payload,
            headers,
            opts,
            named,
            timeout,
            started,
            deadline: crate::clock::deadline(started, timeout),
        })
    }

    /// Sends an already-built subject; names are validated by the callers.
    /// `ask_who` asks the reply to name the instance that served it.
    pub(crate) async fn request<Req, Res>(
        &self,
        subject: String,
        req: &Req,
        opts: &CallOptions,
        ask_who: bool,
    ) -> Result<Reply<Res>, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        opts.check()?;
        let (payload, headers) = encode(req, opts, ask_who)?;
        self.send(
            subject,
            payload,
            headers,
            self.deadline(opts),
            opts.encoding,
        )
        .await
    }

    /// One request/reply round trip.
    async fn send<Res: DeserializeOwned>(
        &self,
        subject: String,
        payload: Bytes,
        headers: Option<HeaderMap>,
        timeout: Duration,
        encoding: Encoding,
    ) -> Result<Reply<Res>, RpcError> {
        let sent = std::time::Instant::now();
        let message = match self
            .send_message(Subject::from(subject.as_str()), payload, headers, timeout)
            .await
        {
            Ok(message) => message,
            Err(no_reply) => return Err(self.or_refused(no_reply.into_error(subject), sent)),
        };
        let headers = ReplyHeaders::read(message.headers.as_ref());
        decode_reply(|| subject, &headers, &message.payload, encoding)
    }

    /// A call that timed out because the server refused this user its
    /// subject meanwhile, told as [`RpcError::Refused`]: the server drops a
    /// refused request without an answer, and a TIMEOUT would say that
    /// nobody knows whether it ran. Only a refusal heard since the request
    /// was `sent` counts (one from before, a permission since granted,
    /// does not). Looked up only for a timeout, never on a reply's path.
    pub(super) fn or_refused(&self, error: RpcError, sent: std::time::Instant) -> RpcError {
        let RpcError::Timeout { subject, timeout } = error else {
            return error;
        };
        match self
            .conn
            .refusal(sent, crate::connection::refusals::Refusing::Publish, |s| {
                s == subject
            }) {
            Some(violation) => RpcError::Refused { subject, violation },
            None => RpcError::Timeout { subject, timeout },
        }
    }

    /// One request/reply round trip, the reply undecoded.
    ///
    /// The subject is moved into the request, not cloned (a clone of bytes
    /// made from a `String` allocates): an error names it afterwards
    /// ([`NoReply::into_error`]).
    pub(super) async fn send_message(
        &self,
        subject: Subject,
        payload: Bytes,
        headers: Option<HeaderMap>,
        timeout: Duration,
    ) -> Result<Message, NoReply> {
        // May wait for a move off a server in lame duck mode: that wait
        // counts against the attempt's timeout, and ends with it (the move
        // may take a second). Polled once first: with no move under way it
        // is ready at once, and no timer is armed; the timed wait is boxed,
        // kept out of every call's future. The block ends the wait's
        // future before the request's await, so it keeps no room there.
        let (client, dropped, waited) = {
            let mut watched = std::pin::pin!(self.conn.pooled_watched());
            match futures::poll!(watched.as_mut()) {
                std::task::Poll::Ready(watched) => watched,
                std::task::Poll::Pending => {
                    match Box::pin(tokio::time::timeout(timeout, watched)).await {
                        Ok(watched) => watched,
                        Err(_) => return Err(NoReply::TimedOut(timeout)),
                    }
                }
            }
        };
        let left = timeout.saturating_sub(waited);
        if left.is_zero() {
            return Err(NoReply::TimedOut(timeout));
        }
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(left));
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        // A reply goes only to the connection that asked: once it drops,
        // waiting longer cannot help.
        // Pinned here and passed by reference: moved into `guard`, the
        // request's future would take its room in this one twice.
        let send = std::pin::pin!(client.send_request(subject, request));
        let Ok(sent) = dropped.guard(send).await else {
            return Err(NoReply::ConnectionLost);
        };
        sent.map_err(|e| match e.kind() {
            RequestErrorKind::TimedOut => NoReply::TimedOut(timeout),
            RequestErrorKind::NoResponders => NoReply::NoResponders,
            _ => NoReply::Transport(e),
        })
    }
}

/// Why a request got no reply ([`RpcClient::send_message`]), before the
/// error names its subject.
#[derive(Debug)]
pub(super) enum NoReply {
    /// No reply within this timeout.
    TimedOut(Duration),
    /// Nobody listens on the subject.
    NoResponders,
    /// Our connection dropped while the request was in flight.
    ConnectionLost,
    /// The client could not send it.
    Transport(async_nats::RequestError),
}

impl NoReply {
    /// The call's error, naming the request's `subject`.
    pub(super) fn into_error(self, subject: String) -> RpcError {
        match self {
            NoReply::TimedOut(timeout) => RpcError::Timeout { subject, timeout },
            NoReply::NoResponders => RpcError::NoResponders { subject },
            NoReply::ConnectionLost => RpcError::ConnectionLost { subject },
            NoReply::Transport(source) => RpcError::Transport { subject, source },
        }
    }
}

/// A view a call needs: the running one at once, or else its `start`
/// (only a connection's first call) bounded by the call's `deadline`;
/// `None` when the deadline passed. No timer is armed for a view that is
/// already loaded.
async fn view_by<'a, T, E>(
    loaded: Option<&'a T>,
    deadline: Instant,
    start: impl std::future::Future<Output = Result<&'a T, E>>,
) -> Option<Result<&'a T, E>> {
    match loaded {
        Some(view) => Some(Ok(view)),
        None => tokio::time::timeout_at(deadline, start).await.ok(),
    }
}

/// Encodes the request once per call (retries reuse the bytes); `ask_who`
/// asks the reply to name the instance that served it.
fn encode<Req: Serialize + ?Sized>(
    req: &Req,
    opts: &CallOptions,
    ask_who: bool,
) -> Result<(Bytes, Option<HeaderMap>), RpcError> {
    let payload = opts.encoding.encode(req).map_err(RpcError::Encode)?;
    // Plain JSON calls carry no headers at all: the fastest path on the wire.
    if opts.encoding == Encoding::Json && opts.request_id.is_none() && !ask_who {
        return Ok((payload, None));
    }
    let mut headers = HeaderMap::new();
    if opts.encoding != Encoding::Json {
        headers.insert(H_ENCODING, opts.encoding.as_str());
    }
    if let Some(id) = &opts.request_id {
        headers.insert(H_REQUEST_ID, id.as_str());
    }
    if ask_who {
        headers.insert(H_WANT_INSTANCE, "1");
    }
    Ok((payload, Some(headers)))
}

/// Turns a reply (its headers, read once, and its payload) into a value or
/// the error the service sent; `subject` names the request in an error
/// (made only then).
pub(crate) fn decode_reply<Res: DeserializeOwned>(
    subject: impl FnOnce() -> String,
    headers: &ReplyHeaders<'_>,
    payload: &[u8],
    requested: Encoding,
) -> Result<Reply<Res>, RpcError> {
    if let Some(error) = headers.error() {
        return Err(RpcError::Remote {
            subject: subject(),
            error,
        });
    }
    let value = headers
        .encoding(requested)
        .decode(payload)
        .map_err(|source| RpcError::Decode {
            subject: subject(),
            source,
        })?;
    Ok(Reply {
        value,
        instance_id: headers.instance.map(str::to_owned),
        epoch: headers.epoch(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_no_header_can_carry_is_refused_by_check() {
        for id in ["a\rb", "a\nb", "req\r\nX-Injected: 1"] {
            let opts = CallOptions {
                request_id: Some(id.to_owned()),
                ..Default::default()
            };
            assert!(
                matches!(
                    opts.check(),
                    Err(RpcError::InvalidOptions {
                        option: "request_id",
                        ..
                    })
                ),
                "{id:?}"
            );
        }
        let fine = CallOptions {
            request_id: Some("req-1 with spaces: and colons".to_owned()),
            ..Default::default()
        };
        assert!(fine.check().is_ok());
        assert!(encode(&serde_json::Value::Null, &fine, false).is_ok());
    }
}
