//! The calling side of RPC: [`RpcClient`] sends a typed request with a
//! deadline and turns the reply (or the wire error) into a typed result.

use std::time::Duration;

use aegis_contracts::{
    names, subjects,
    wire::{
        ErrorCode, HEADER_ENCODING, HEADER_ERROR_CODE, HEADER_ERROR_DETAILS, HEADER_INSTANCE,
        HEADER_REQUEST_ID,
    },
};
use async_nats::{
    HeaderMap, Message, RequestErrorKind,
    service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{Encoding, RpcError, WireError};
use crate::Connection;

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Deadline of the whole call; the connection's `request_timeout` when `None`.
    pub timeout: Option<Duration>,
    /// Payload encoding of request and reply.
    pub encoding: Encoding,
    /// A request id to correlate logs across services (`Aegis-Request-Id`).
    pub request_id: Option<String>,
}

impl CallOptions {
    /// Options with this deadline.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..Default::default()
        }
    }
}

/// A decoded reply and who served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The decoded response.
    pub value: T,
    /// The instance that handled the call (`Aegis-Instance` header).
    pub instance_id: Option<String>,
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
}

impl RpcClient {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Calls `method` on any instance of `service` (load-balanced by the
    /// queue group) with the default deadline.
    ///
    /// # Errors
    /// [`RpcError`]: invalid names, timeout, no instance serving, or the
    /// service's own error ([`RpcError::Remote`]).
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

    /// Calls `method` on any instance of `service` with explicit options and
    /// returns the reply with the id of the instance that served it.
    ///
    /// # Errors
    /// As [`call`](Self::call).
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
        let subject = subjects::rpc_subject(service, method);
        self.request(subject, req, opts).await
    }

    /// Calls `method` on one named instance (`rpc.{service}.{instance}.{method}`).
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
        self.request(subject, req, opts).await
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
        let payload = opts.encoding.encode(req).map_err(RpcError::Encode)?;
        let timeout = opts
            .timeout
            .unwrap_or(self.conn.config().nats.request_timeout);
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        // Plain JSON calls carry no headers at all: the fastest path on the wire.
        if opts.encoding != Encoding::Json || opts.request_id.is_some() {
            let mut headers = HeaderMap::new();
            if opts.encoding != Encoding::Json {
                headers.insert(HEADER_ENCODING, opts.encoding.as_str());
            }
            if let Some(id) = &opts.request_id {
                headers.insert(HEADER_REQUEST_ID, id.as_str());
            }
            request = request.headers(headers);
        }
        let message = match self
            .conn
            .pooled()
            .send_request(subject.clone(), request)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                return Err(match e.kind() {
                    RequestErrorKind::TimedOut => RpcError::Timeout { subject, timeout },
                    RequestErrorKind::NoResponders => RpcError::NoResponders { subject },
                    _ => RpcError::Transport { subject, source: e },
                });
            }
        };
        decode_reply(subject, message, opts.encoding)
    }
}

/// Turns a reply message into a value or the error the service sent.
pub(crate) fn decode_reply<Res: DeserializeOwned>(
    subject: String,
    message: Message,
    requested: Encoding,
) -> Result<Reply<Res>, RpcError> {
    let headers = message.headers.as_ref();
    let instance_id = headers
        .and_then(|h| h.get(HEADER_INSTANCE))
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
    Ok(Reply { value, instance_id })
}

/// Reads an error reply: our `Aegis-Error-Code`, or else the services
/// protocol's numeric `Nats-Service-Error-Code` (so non-Aegis services map too).
fn wire_error(headers: Option<&HeaderMap>) -> Option<WireError> {
    let headers = headers?;
    let numeric = headers
        .get(NATS_SERVICE_ERROR_CODE)
        .and_then(|v| v.as_str().parse::<u16>().ok());
    let code = match headers.get(HEADER_ERROR_CODE) {
        Some(code) => code
            .as_str()
            .parse::<ErrorCode>()
            .unwrap_or(ErrorCode::Internal),
        None => ErrorCode::from_status(numeric?),
    };
    let message = headers
        .get(NATS_SERVICE_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let details = headers
        .get(HEADER_ERROR_DETAILS)
        .and_then(|v| serde_json::from_str(v.as_str()).ok());
    Some(WireError {
        code,
        message,
        details,
    })
}
