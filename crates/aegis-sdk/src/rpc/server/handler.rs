//! The typed handlers behind every method: decode the request in the
//! call's encoding, run the user's function and encode its answer. A
//! handler without the request context never has one put together.

use std::{future::Future, pin::Pin, sync::Arc};

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Connection,
    rpc::{Encoding, WireError},
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler learns about the request besides its payload.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The service name.
    pub service: Arc<str>,
    /// This instance's id.
    pub instance_id: Arc<str>,
    /// The method called.
    pub method: Arc<str>,
    /// The subject the request arrived on (load-balanced or instance-directed);
    /// it reads as a `&str` (`ctx.subject.as_str()`).
    pub subject: async_nats::Subject,
    /// The caller's request id, if it sent one (`Aegis-Request-Id`).
    pub request_id: Option<String>,
    /// All request headers.
    pub headers: Option<HeaderMap>,
    /// The fencing epoch of this leader, for single-active services: store
    /// it with every write so a store can refuse a deposed leader's writes.
    pub epoch: Option<u64>,
    /// The connection the service runs on: to call other services, publish
    /// events or send commands from a handler without capturing a clone.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) {
    /// use aegis_sdk::rpc::{RequestContext, WireError};
    ///
    /// let service = conn
    ///     .service("prices", "1.0.0")
    ///     .handler_with_context("set", |ctx: RequestContext, price: f64| async move {
    ///         ctx.connection.events().publish("price", "changed", &price).await?;
    ///         Ok::<_, WireError>(())
    ///     });
    /// # let _ = service;
    /// # }
    /// ```
    pub connection: Connection,
}

/// A request's context before it is put together: only a handler that takes
/// the context pays for it (four shared reference counts per request).
pub(crate) struct ContextParts<'a> {
    pub(crate) service: &'a Arc<str>,
    pub(crate) instance_id: &'a Arc<str>,
    pub(crate) method: &'a Arc<str>,
    pub(crate) subject: async_nats::Subject,
    pub(crate) request_id: Option<String>,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) epoch: Option<u64>,
    pub(crate) connection: &'a Connection,
}

impl ContextParts<'_> {
    pub(super) fn into_context(self) -> RequestContext {
        RequestContext {
            service: self.service.clone(),
            instance_id: self.instance_id.clone(),
            method: self.method.clone(),
            subject: self.subject,
            request_id: self.request_id,
            headers: self.headers,
            epoch: self.epoch,
            connection: self.connection.clone(),
        }
    }
}

pub(crate) trait ErasedHandler: Send + Sync {
    fn call(
        &self,
        ctx: ContextParts<'_>,
        body: Bytes,
        enc: Encoding,
    ) -> BoxFuture<Result<Bytes, WireError>>;
}

/// A user's function behind a method: it takes the context's parts (a
/// function that wants the [`RequestContext`] puts it together from them;
/// one that does not, drops them) and the decoded request.
pub(super) struct TypedHandler<F, Req, Res> {
    pub(super) f: F,
    pub(super) _types: std::marker::PhantomData<fn(Req) -> Res>,
}

impl<F, Fut, Req, Res> ErasedHandler for TypedHandler<F, Req, Res>
where
    F: Fn(ContextParts<'_>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Send + 'static,
{
    fn call(
        &self,
        ctx: ContextParts<'_>,
        body: Bytes,
        enc: Encoding,
    ) -> BoxFuture<Result<Bytes, WireError>> {
        let req = match enc.decode::<Req>(&body) {
            Ok(req) => req,
            Err(e) => {
                let err = WireError::invalid_request(format!(
                    "cannot decode the request: {}",
                    e.with_cause()
                ));
                return Box::pin(async move { Err(err) });
            }
        };
        let fut = (self.f)(ctx, req);
        Box::pin(async move {
            let res = fut.await?;
            enc.encode(&res).map_err(|e| {
                WireError::internal(format!("cannot encode the response: {}", e.with_cause()))
            })
        })
    }
}
