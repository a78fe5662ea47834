//! The typed handler behind every method: decodes the request in the
//! call's encoding, runs the user's function and encodes its answer.

use std::{future::Future, pin::Pin, sync::Arc};

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::rpc::{Encoding, WireError};

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
}

pub(crate) trait ErasedHandler: Send + Sync {
    fn call(
        &self,
        ctx: RequestContext,
        body: Bytes,
        enc: Encoding,
    ) -> BoxFuture<Result<Bytes, WireError>>;
}

pub(super) struct TypedHandler<F, Req, Res> {
    pub(super) f: F,
    pub(super) _types: std::marker::PhantomData<fn(Req) -> Res>,
}

impl<F, Fut, Req, Res> ErasedHandler for TypedHandler<F, Req, Res>
where
    F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Send + 'static,
{
    fn call(
        &self,
        ctx: RequestContext,
        body: Bytes,
        enc: Encoding,
    ) -> BoxFuture<Result<Bytes, WireError>> {
        let req = match enc.decode::<Req>(&body) {
            Ok(req) => req,
            Err(e) => {
                let err = WireError::invalid_request(format!("cannot decode the request: {e}"));
                return Box::pin(async move { Err(err) });
            }
        };
        let fut = (self.f)(ctx, req);
        Box::pin(async move {
            let res = fut.await?;
            enc.encode(&res)
                .map_err(|e| WireError::internal(format!("cannot encode the response: {e}")))
        })
    }
}
