//! The calling side of RPC: [`RpcClient`] sends a typed request with a
//! deadline and turns the reply (or the wire error) into a typed result.
//!
//! [`RpcClient::call`] and [`RpcClient::call_with`] route through
//! [discovery](crate::discovery): they pick an ACTIVE instance by the
//! strategy and send on its own subject `rpc.{service}.{instance}.{method}`,
//! so the strategy decides who answers. An instance without a responder (it
//! died) is evicted from this process's view and another is tried at once;
//! an idempotent call also moves on when one attempt times out; all within
//! the call's deadline. A call whose own connection drops while it waits
//! ends at once ([`RpcError::ConnectionLost`]: no reply can come on a new
//! connection) and, when idempotent, is sent again once reconnected.
//! [`RpcClient::call_balanced`] keeps the plain
//! queue-group path (`rpc.{service}.{method}`, the server picks), and
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

use std::{sync::Arc, time::Duration};

use aegis_contracts::{names, subjects, wire::ErrorCode};
use async_nats::{HeaderMap, Message, RequestErrorKind};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use tokio::time::Instant;

use super::{
    DeposedReply, Encoding, RpcError, WireError,
    headers::{
        H_ENCODING, H_EPOCH, H_ERROR_CODE, H_ERROR_DETAILS, H_INSTANCE, H_REQUEST_ID,
        H_SERVICE_ERROR, H_SERVICE_ERROR_CODE,
    },
};
use crate::{
    Connection,
    discovery::{Strategy, ring},
    election::view::Holder,
};

/// The longest a call for an unknown service waits for the registry view to
/// confirm it has every registration acknowledged before the call.
const CATCH_UP_LIMIT: Duration = Duration::from_millis(500);

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
    /// `request_timeout` when `None`.
    pub timeout: Option<Duration>,
    /// Payload encoding of request and reply.
    pub encoding: Encoding,
    /// A request id to correlate logs across services (`Aegis-Request-Id`).
    pub request_id: Option<String>,
    /// The call may run more than once without harm. Then an attempt that
    /// times out is retried on another instance (a call that found no
    /// responder is retried either way: it never ran).
    pub idempotent: bool,
    /// Deadline of one attempt of an idempotent call; a third of `timeout`
    /// when `None`. Ignored for other calls.
    pub attempt_timeout: Option<Duration>,
    /// Route by this key: the same key reaches the same instance while it
    /// lives (implies [`Strategy::Sticky`] unless `strategy` says otherwise).
    pub sticky_key: Option<String>,
    /// How to pick the instance; the client's default (round-robin unless
    /// set with [`RpcClient::with_strategy`]) when `None`.
    pub strategy: Option<Strategy>,
}

impl CallOptions {
    /// Options with this deadline.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..Default::default()
        }
    }

    /// These options marked idempotent (retried elsewhere on an attempt
    /// timeout).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// These options with a sticky key.
    pub fn sticky(mut self, key: impl Into<String>) -> Self {
        self.sticky_key = Some(key.into());
        self
    }
}

/// A decoded reply and who served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The decoded response.
    pub value: T,
    /// The instance that handled the call: the one an instance-directed call
    /// went to, or the `Aegis-Instance` header of a load-balanced reply.
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
    /// [`RpcError`]: invalid names (before any I/O);
    /// [`RpcError::NoInstances`] at once when no ACTIVE instance is known;
    /// [`RpcError::NoResponders`] when every instance tried had vanished;
    /// [`RpcError::Timeout`]; the service's own error
    /// ([`RpcError::Remote`]); [`RpcError::Discovery`] when the registry
    /// view cannot start.
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
        Ok(self
            .call_with(service, method, req, &CallOptions::default())
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
        names::validate_service_name(service)?;
        names::validate_method_name(method)?;
        let (payload, headers) = encode(req, opts)?;
        self.route(service, method, payload, headers, opts).await
    }

    /// Calls `method` through the service's queue group
    /// (`rpc.{service}.{method}`): the NATS server picks any subscribed
    /// instance, registered or not, with no discovery involved.
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
    /// [`RpcError::NoResponders`].
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
        self.request(subject, req, opts).await
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
        let mut reply = self.request(subject, req, opts).await?;
        // Replies on the instance-directed subject carry no instance header:
        // only that instance subscribes to it.
        reply.instance_id.get_or_insert_with(|| instance.to_owned());
        Ok(reply)
    }

    /// The connection's registry view (started on first use), or the call's
    /// timeout error when it cannot be had before `deadline`.
    async fn registry_view(
        &self,
        deadline: Instant,
        timed_out: impl FnOnce() -> RpcError,
    ) -> Result<Arc<crate::registry::cache::RegistryCache>, RpcError> {
        match tokio::time::timeout_at(deadline, self.conn.registry_cache()).await {
            Ok(Ok(cache)) => Ok(cache),
            Ok(Err(e)) => Err(RpcError::Discovery(e.into())),
            Err(_) => Err(timed_out()),
        }
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
    /// [`RpcError`]: invalid names (before any I/O); [`RpcError::NoInstances`]
    /// when no leader appeared before the deadline (or the last NOT_ACTIVE /
    /// no-responder error); [`RpcError::DeposedLeader`] as above;
    /// [`RpcError::Timeout`]; [`RpcError::Election`] when the election keys
    /// cannot be read; the leader's own error.
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
        let (payload, headers) = encode(req, opts)?;
        let timeout = self.deadline(opts);
        let deadline = Instant::now() + timeout;
        let timed_out = || RpcError::Timeout {
            subject: subjects::rpc_subject(service, method),
            timeout,
        };
        let view = match tokio::time::timeout_at(deadline, self.conn.election_view()).await {
            Ok(Ok(view)) => view,
            Ok(Err(e)) => return Err(RpcError::Election(e)),
            Err(_) => return Err(timed_out()),
        };
        let leaders = view.leaders();
        let mut changes = leaders.subscribe();
        // The holder the last attempt failed on; not tried again until the
        // key changes or a back-off passes.
        let mut failed_on: Option<Holder> = None;
        let mut last_err: Option<RpcError> = None;
        let mut backoff = Duration::from_millis(2);
        loop {
            changes.mark_unchanged();
            let holder = leaders
                .leader(service, group)
                .filter(|h| failed_on.as_ref() != Some(h));
            let Some(holder) = holder else {
                let now = Instant::now();
                if now >= deadline {
                    return Err(last_err.unwrap_or_else(|| RpcError::NoInstances {
                        service: service.to_owned(),
                    }));
                }
                // Between leaders: wake as soon as the key changes (the new
                // leader's winning write), or after a short back-off.
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep(backoff.min(deadline - now)) => {
                        failed_on = None;
                        backoff = (backoff * 2).min(Duration::from_millis(50));
                    }
                }
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(last_err.unwrap_or_else(timed_out));
            }
            let attempt = attempt_timeout(opts, timeout, remaining);
            let subject = subjects::rpc_instance_subject(service, &holder.instance_id, method);
            let message = self
                .send_message(subject.clone(), payload.clone(), headers.clone(), attempt)
                .await;
            let message = match message {
                Ok(m) => m,
                Err(e) if never_ran(&e) => {
                    // Never ran: it died, or is not (or no longer) serving.
                    failed_on = Some(holder);
                    last_err = Some(e);
                    continue;
                }
                Err(RpcError::Timeout { .. }) if opts.idempotent && Instant::now() < deadline => {
                    failed_on = Some(holder);
                    last_err = Some(timed_out());
                    continue;
                }
                // Our own connection dropped; the leader is not to blame.
                Err(e @ RpcError::ConnectionLost { .. })
                    if opts.idempotent && Instant::now() < deadline =>
                {
                    last_err = Some(e);
                    continue;
                }
                Err(RpcError::Timeout { .. }) => return Err(timed_out()),
                Err(e) => return Err(e),
            };
            let epoch = message
                .headers
                .as_ref()
                .and_then(|h| h.get(H_EPOCH))
                .and_then(|v| v.as_str().parse::<u64>().ok());
            let newest = leaders
                .highest_epoch(service, group)
                .unwrap_or(0)
                .max(holder.epoch);
            if let Some(epoch) = epoch
                && epoch < newest
                && wire_error(message.headers.as_ref()).is_none()
            {
                let deposed = DeposedReply {
                    service: service.to_owned(),
                    group: group.to_owned(),
                    instance_id: holder.instance_id.clone(),
                    epoch,
                    current_epoch: Some(newest),
                    encoding: Encoding::from_headers(message.headers.as_ref())
                        .unwrap_or(opts.encoding),
                    payload: message.payload,
                };
                tracing::debug!(service, group, epoch, newest, instance = %holder.instance_id,
                    idempotent = opts.idempotent, "the call ran on a deposed leader");
                let deposed = RpcError::DeposedLeader(Box::new(deposed));
                if !opts.idempotent {
                    return Err(deposed);
                }
                failed_on = Some(holder);
                last_err = Some(deposed);
                continue;
            }
            let mut reply = match decode_reply::<Res>(subject, message, opts.encoding) {
                // The holder we routed to no longer serves (it resigned or
                // stepped aside while the view still named it): the call
                // never ran, so wait for the key to change and try the new
                // leader.
                Err(e) if never_ran(&e) => {
                    failed_on = Some(holder);
                    last_err = Some(e);
                    continue;
                }
                other => other?,
            };
            reply.instance_id.get_or_insert(holder.instance_id);
            return Ok(reply);
        }
    }

    /// Picks instances through discovery until one answers, the candidates
    /// run out, or the deadline passes.
    async fn route<Res: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        headers: Option<HeaderMap>,
        opts: &CallOptions,
    ) -> Result<Reply<Res>, RpcError> {
        let timeout = self.deadline(opts);
        let deadline = Instant::now() + timeout;
        let strategy = opts.strategy.unwrap_or(if opts.sticky_key.is_some() {
            Strategy::Sticky
        } else {
            self.strategy
        });
        let key_hash = opts.sticky_key.as_deref().map(ring::hash_key);
        if strategy == Strategy::Sticky && key_hash.is_none() {
            return Err(RpcError::Discovery(
                crate::discovery::DiscoveryError::MissingStickyKey,
            ));
        }
        let timed_out = || RpcError::Timeout {
            subject: subjects::rpc_subject(service, method),
            timeout,
        };
        let cache = self.registry_view(deadline, timed_out).await?;
        // The first call to a service adds it to the view's watch.
        if !cache.cover_service(service, deadline).await {
            return Err(timed_out());
        }
        let view = cache.shared();
        // Instances this call already tried; allocated only on a retry.
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut last_err: Option<RpcError> = None;
        let mut caught_up = false;
        loop {
            let Some(picked) = view.select(service, strategy, key_hash, Some(method), &tried)
            else {
                if let Some(e) = last_err {
                    return Err(e);
                }
                if !caught_up {
                    // Nothing known: make sure registrations acknowledged
                    // before this call are in the view (one API request, no
                    // listing), so "start, then call" never misses.
                    caught_up = true;
                    cache
                        .catch_up(deadline.min(Instant::now() + CATCH_UP_LIMIT))
                        .await;
                    continue;
                }
                // Instances that do not list the method are never tried: a
                // call to a missing method must not evict healthy instances.
                if view.has_selectable(service) {
                    return Err(RpcError::NoSuchMethod {
                        service: service.to_owned(),
                        method: method.to_owned(),
                    });
                }
                return Err(RpcError::NoInstances {
                    service: service.to_owned(),
                });
            };
            let member = picked.member;
            let started = Instant::now();
            if started >= deadline {
                return Err(last_err.unwrap_or_else(timed_out));
            }
            let remaining = deadline - started;
            let attempt = attempt_timeout(opts, timeout, remaining);
            let subject = subjects::rpc_instance_subject(service, &member.id, method);
            let in_flight = member.stats.start();
            let result = self
                .send(
                    subject,
                    payload.clone(),
                    headers.clone(),
                    attempt,
                    opts.encoding,
                )
                .await;
            drop(in_flight);
            match result {
                Ok(mut reply) => {
                    member.stats.observe(started.elapsed());
                    reply
                        .instance_id
                        .get_or_insert_with(|| member.id.to_string());
                    return Ok(reply);
                }
                Err(e @ RpcError::NoResponders { .. }) => {
                    // It died (or is stopping): never ran, so retrying is
                    // safe for any call.
                    tracing::debug!(service, instance = %member.id, "no responder; evicting and retrying");
                    view.evict(service, &member.id);
                    tried.push(member.id);
                    last_err = Some(e);
                }
                Err(RpcError::Timeout { .. }) if opts.idempotent && Instant::now() < deadline => {
                    tracing::debug!(service, instance = %member.id, ?attempt, "attempt timed out; retrying elsewhere");
                    member.stats.observe(attempt);
                    tried.push(member.id);
                    last_err = Some(timed_out());
                }
                Err(RpcError::Timeout { .. }) => return Err(timed_out()),
                // Our own connection dropped, not the instance: try it again.
                Err(e @ RpcError::ConnectionLost { .. })
                    if opts.idempotent && Instant::now() < deadline =>
                {
                    last_err = Some(e);
                }
                Err(e @ RpcError::Remote { .. }) if e.code() == ErrorCode::NotActive => {
                    // A standby refused without running it: try the others.
                    tried.push(member.id);
                    last_err = Some(e);
                }
                Err(e) => {
                    if matches!(e, RpcError::Remote { .. }) {
                        member.stats.observe(started.elapsed());
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Sends an already-built subject; names are validated by the callers.
    pub(crate) async fn request<Req, Res>(
        &self,
        subject: String,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Reply<Res>, RpcError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        let (payload, headers) = encode(req, opts)?;
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
        let message = self
            .send_message(subject.clone(), payload, headers, timeout)
            .await?;
        decode_reply(subject, message, encoding)
    }

    /// One request/reply round trip, the reply undecoded.
    async fn send_message(
        &self,
        subject: String,
        payload: Bytes,
        headers: Option<HeaderMap>,
        timeout: Duration,
    ) -> Result<Message, RpcError> {
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        let (client, dropped) = self.conn.pooled_watched();
        // A reply goes only to the connection that asked: once it drops,
        // waiting longer cannot help.
        let sent = tokio::select! {
            biased;
            sent = client.send_request(subject.clone(), request) => sent,
            () = dropped.wait() => return Err(RpcError::ConnectionLost { subject }),
        };
        sent.map_err(|e| match e.kind() {
            RequestErrorKind::TimedOut => RpcError::Timeout { subject, timeout },
            RequestErrorKind::NoResponders => RpcError::NoResponders { subject },
            _ => RpcError::Transport { subject, source: e },
        })
    }
}

/// A leader-bound call that certainly did not run: nobody listened (the
/// leader died or is stopping), or the instance refused as not serving.
fn never_ran(e: &RpcError) -> bool {
    match e {
        RpcError::NoResponders { .. } => true,
        RpcError::Remote { .. } => e.code() == ErrorCode::NotActive,
        _ => false,
    }
}

/// The deadline of one attempt: an idempotent call may move on to another
/// instance after a share of its timeout; any other call waits for its one
/// attempt until the overall deadline.
fn attempt_timeout(opts: &CallOptions, timeout: Duration, remaining: Duration) -> Duration {
    if opts.idempotent {
        opts.attempt_timeout.unwrap_or(timeout / 3).min(remaining)
    } else {
        remaining
    }
}

/// Encodes the request once per call (retries reuse the bytes).
fn encode<Req: Serialize + ?Sized>(
    req: &Req,
    opts: &CallOptions,
) -> Result<(Bytes, Option<HeaderMap>), RpcError> {
    let payload = opts.encoding.encode(req).map_err(RpcError::Encode)?;
    // Plain JSON calls carry no headers at all: the fastest path on the wire.
    if opts.encoding == Encoding::Json && opts.request_id.is_none() {
        return Ok((payload, None));
    }
    let mut headers = HeaderMap::new();
    if opts.encoding != Encoding::Json {
        headers.insert(H_ENCODING, opts.encoding.as_str());
    }
    if let Some(id) = &opts.request_id {
        headers.insert(H_REQUEST_ID, id.as_str());
    }
    Ok((payload, Some(headers)))
}

/// Turns a reply message into a value or the error the service sent.
pub(crate) fn decode_reply<Res: DeserializeOwned>(
    subject: String,
    message: Message,
    requested: Encoding,
) -> Result<Reply<Res>, RpcError> {
    let headers = message.headers.as_ref();
    let instance_id = headers
        .and_then(|h| h.get(H_INSTANCE))
        .map(|v| v.as_str().to_owned());
    if let Some(error) = wire_error(headers) {
        return Err(RpcError::Remote { subject, error });
    }
    let enc = Encoding::from_headers(headers).unwrap_or(requested);
    let value = enc
        .decode(&message.payload)
        .map_err(|source| RpcError::Decode {
            subject: subject.clone(),
            source,
        })?;
    let epoch = headers
        .and_then(|h| h.get(H_EPOCH))
        .and_then(|v| v.as_str().parse().ok());
    Ok(Reply {
        value,
        instance_id,
        epoch,
    })
}

/// Reads an error reply: our `Aegis-Error-Code`, or else the services
/// protocol's numeric `Nats-Service-Error-Code` (so non-Aegis services map too).
fn wire_error(headers: Option<&HeaderMap>) -> Option<WireError> {
    let headers = headers?;
    let numeric = headers
        .get(H_SERVICE_ERROR_CODE)
        .and_then(|v| v.as_str().parse::<u16>().ok());
    let code = match headers.get(H_ERROR_CODE) {
        Some(code) => code
            .as_str()
            .parse::<ErrorCode>()
            .unwrap_or(ErrorCode::Internal),
        None => ErrorCode::from_status(numeric?),
    };
    let message = headers
        .get(H_SERVICE_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let details = headers
        .get(H_ERROR_DETAILS)
        .and_then(|v| serde_json::from_str(v.as_str()).ok());
    Some(WireError {
        code,
        message,
        details,
    })
}
