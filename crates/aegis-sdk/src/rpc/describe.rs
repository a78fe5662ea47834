//! The callers' side of self-describing endpoints: what each method of a
//! service takes and returns, read from the services protocol
//! (`$SRV.INFO.{service}`), where every instance publishes the JSON Schemas
//! derived from its handlers' types. `aegis call --schema` and the monitor
//! use it.

use std::time::Duration;

use aegis_contracts::names;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RpcError;

/// One method of a service, as its instances describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodDescription {
    /// The method name.
    pub name: String,
    /// The shared subject (`rpc.{service}.{method}`).
    pub subject: String,
    /// What the method does (the request type's doc comment unless the
    /// service set one), if anything.
    pub description: Option<String>,
    /// Whether only the leader of a single-active service runs it.
    pub leader_only: bool,
    /// JSON Schema of the request body.
    pub request_schema: Option<Value>,
    /// JSON Schema of a successful reply.
    pub response_schema: Option<Value>,
}

/// A service's methods, from the first instance that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDescription {
    /// The service name.
    pub service: String,
    /// The version of the instance that answered.
    pub version: String,
    /// The instance that answered.
    pub instance_id: String,
    /// Its methods, in the order the service declared them.
    pub methods: Vec<MethodDescription>,
}

#[derive(Deserialize)]
struct InfoReply {
    name: String,
    id: String,
    version: String,
    #[serde(default)]
    endpoints: Vec<EndpointInfo>,
}

#[derive(Deserialize)]
struct EndpointInfo {
    name: String,
    subject: String,
    #[serde(default)]
    metadata: Option<std::collections::HashMap<String, String>>,
}

/// Asks one instance of `service` to describe its methods.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
/// use std::time::Duration;
///
/// let described = aegis_sdk::rpc::describe(conn.client(), "pricing-service", Duration::from_secs(2)).await?;
/// for m in described.methods {
///     println!("{}: {}", m.name, m.request_schema.unwrap_or_default());
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`RpcError::InvalidName`] before any I/O; [`RpcError::NoResponders`]
/// when no instance runs; [`RpcError::Timeout`]; [`RpcError::Decode`] when
/// the answer is not a services-protocol INFO reply.
pub async fn describe(
    client: &async_nats::Client,
    service: &str,
    timeout: Duration,
) -> Result<ServiceDescription, RpcError> {
    names::validate_service_name(service)?;
    let subject = format!("$SRV.INFO.{service}");
    let reply =
        match tokio::time::timeout(timeout, client.request(subject.clone(), "".into())).await {
            Err(_) => return Err(RpcError::Timeout { subject, timeout }),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(RpcError::NoResponders { subject });
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                return Err(RpcError::Timeout { subject, timeout });
            }
            Ok(Err(e)) => return Err(RpcError::Transport { subject, source: e }),
            Ok(Ok(reply)) => reply,
        };
    let info: InfoReply = serde_json::from_slice(&reply.payload).map_err(|e| RpcError::Decode {
        subject: subject.clone(),
        source: super::codec::CodecError::Json(e),
    })?;
    let methods = info
        .endpoints
        .into_iter()
        .map(|e| {
            let meta = e.metadata.unwrap_or_default();
            let schema = |key: &str| meta.get(key).and_then(|s| serde_json::from_str(s).ok());
            MethodDescription {
                description: meta.get("description").cloned(),
                leader_only: meta.get("leader_only").is_some_and(|v| v == "true"),
                request_schema: schema("request_schema"),
                response_schema: schema("response_schema"),
                name: e.name,
                subject: e.subject,
            }
        })
        .collect();
    Ok(ServiceDescription {
        service: info.name,
        version: info.version,
        instance_id: info.id,
        methods,
    })
}
