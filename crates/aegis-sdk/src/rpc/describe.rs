//! The callers' side of self-describing endpoints: what each method of a
//! service takes and returns, read from the services protocol
//! (`$SRV.INFO.{service}`), where every instance publishes the JSON Schemas
//! derived from its handlers' types, and the commands its process's
//! workers take (endpoints marked `kind: command`). `aegis call --schema`,
//! `aegis status SERVICE`, `aegis command` and the monitor use it.

use std::time::Duration;

use aegis_contracts::names;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RpcError;
use crate::commands::catalog::{KIND_COMMAND, META_KIND};

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

/// One command a service takes (`commands.{service}.{command}` on the
/// COMMANDS stream), as an instance whose process runs its worker lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandDescription {
    /// The command name.
    pub name: String,
    /// Its subject (`commands.{service}.{command}`).
    pub subject: String,
    /// What it does (the payload type's doc comment), if anything.
    pub description: Option<String>,
    /// Whether only the leader of a single-active service takes it (its
    /// worker was started with `leader_of`).
    pub leader_only: bool,
    /// JSON Schema of the payload.
    pub payload_schema: Option<Value>,
}

/// A service's methods and commands, from the first instance that answered.
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
    /// The commands its process's workers take, in the order they were
    /// declared; empty when it runs no worker (or predates the listing).
    #[serde(default)]
    pub commands: Vec<CommandDescription>,
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
    Ok(from_info(info))
}

/// The methods and commands of an INFO answer.
fn from_info(info: InfoReply) -> ServiceDescription {
    let mut methods = Vec::new();
    let mut commands = Vec::new();
    for e in info.endpoints {
        let meta = e.metadata.unwrap_or_default();
        let schema = |key: &str| meta.get(key).and_then(|s| serde_json::from_str(s).ok());
        let description = meta.get("description").cloned();
        let leader_only = meta.get("leader_only").is_some_and(|v| v == "true");
        if meta.get(META_KIND).is_some_and(|k| k == KIND_COMMAND) {
            commands.push(CommandDescription {
                description,
                leader_only,
                payload_schema: schema("request_schema"),
                name: e.name,
                subject: e.subject,
            });
        } else {
            methods.push(MethodDescription {
                description,
                leader_only,
                request_schema: schema("request_schema"),
                response_schema: schema("response_schema"),
                name: e.name,
                subject: e.subject,
            });
        }
    }
    ServiceDescription {
        service: info.name,
        version: info.version,
        instance_id: info.id,
        methods,
        commands,
    }
}

/// How long [`describe_all`] and [`describe_each`] wait for one more
/// instance once one answered.
const MORE_ANSWERS: Duration = Duration::from_millis(200);

/// Asks every running instance of `service` to describe itself: the
/// answers that arrive within `timeout`, gathered until none came for
/// 200 ms after the last (instances answer at once; this bounds the wait
/// for those on a slower link). Instances may differ during a rolling
/// upgrade, and each lists only the commands its own process's workers
/// take: to tell whether a service takes a command, ask them all.
///
/// # Errors
/// [`RpcError::InvalidName`] before any I/O; [`RpcError::NoResponders`]
/// when no instance answered; [`RpcError::Transport`] when the request
/// cannot be sent. Answers that are not services-protocol INFO replies are
/// skipped. [`describe_each`] asks the same but tells why none answered.
pub async fn describe_all(
    client: &async_nats::Client,
    service: &str,
    timeout: Duration,
) -> Result<Vec<ServiceDescription>, RpcError> {
    match describe_each(client, service, timeout).await {
        Err(RpcError::Timeout { subject, .. } | RpcError::Decode { subject, .. }) => {
            Err(RpcError::NoResponders { subject })
        }
        other => other,
    }
}

/// As [`describe_all`] — one request, every instance's answer, the first
/// to arrive first, gathered until none came for 200 ms after the last,
/// readable or not — but when no answer can be used it says why, as
/// [`describe`] does: one round of asking serves both a caller that needs
/// one description and one that needs them all.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::RpcError> {
/// use std::time::Duration;
///
/// let answers = aegis_sdk::rpc::describe_each(conn.client(), "pricing-service", Duration::from_secs(2)).await?;
/// println!("{} methods, {} instances", answers[0].methods.len(), answers.len());
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`RpcError::InvalidName`] before any I/O; [`RpcError::NoResponders`]
/// when the server says no instance runs; [`RpcError::Timeout`] when none
/// answered within `timeout`; [`RpcError::Decode`] when every answer was
/// something other than a services-protocol INFO reply (unreadable answers
/// are skipped when a readable one came); [`RpcError::Transport`] when the
/// request cannot be sent. The list is never empty.
pub async fn describe_each(
    client: &async_nats::Client,
    service: &str,
    timeout: Duration,
) -> Result<Vec<ServiceDescription>, RpcError> {
    use futures::StreamExt;

    names::validate_service_name(service)?;
    let subject = format!("$SRV.INFO.{service}");
    let transport = |e: async_nats::Error| RpcError::Transport {
        subject: subject.clone(),
        source: async_nats::RequestError::with_source(async_nats::RequestErrorKind::Other, e),
    };
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| transport(e.into()))?;
    client
        .publish_with_reply(subject.clone(), inbox, "".into())
        .await
        .map_err(|e| transport(e.into()))?;
    client.flush().await.map_err(|e| transport(e.into()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut found = Vec::new();
    let mut unreadable = None;
    let mut no_responders = false;
    loop {
        // Any answer, readable or not, says the instances answer: more
        // are waited for only briefly after it.
        let until = if found.is_empty() && unreadable.is_none() {
            deadline
        } else {
            deadline.min(tokio::time::Instant::now() + MORE_ANSWERS)
        };
        let Ok(Some(msg)) = tokio::time::timeout_at(until, answers.next()).await else {
            break;
        };
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            no_responders = true;
            break;
        }
        match serde_json::from_slice::<InfoReply>(&msg.payload) {
            Ok(info) => found.push(from_info(info)),
            Err(e) => {
                unreadable.get_or_insert(e);
            }
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    Err(match unreadable {
        Some(e) => RpcError::Decode {
            subject,
            source: super::codec::CodecError::Json(e),
        },
        None if no_responders => RpcError::NoResponders { subject },
        None => RpcError::Timeout { subject, timeout },
    })
}
