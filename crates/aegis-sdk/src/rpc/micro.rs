//! The NATS services protocol (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`), so
//! `nats micro ls/info/stats` and any other NATS tool list Aegis services.
//!
//! Answered here rather than by async-nats's `service` module, which fixes
//! three things this protocol must show otherwise:
//!
//! - **One endpoint per method**, in declaration order on every instance.
//!   A method listens on two subjects (shared and instance-directed); the
//!   endpoint names the shared one and carries the other in its metadata
//!   (`direct_subject`), and its stats count both.
//! - **The role, kept current**: a single-active instance's metadata says
//!   `role` (ACTIVE/STANDBY), `sticky_group`, `leader` and, on the leader,
//!   `epoch`, read from the election at the moment of each request. The
//!   async-nats service fixes its metadata at start.
//! - **A standby's refusals are not errors**: they are counted apart, in
//!   the endpoint's `data.not_active_refusals`.
//!
//! - **The commands its process takes**: after the methods, one endpoint
//!   per command a running worker of the service takes on the instance's
//!   connection (`commands.{service}.{command}`), its metadata saying
//!   `kind: command`, with the payload's `request_schema`. Read at each
//!   request, so a worker started or stopped later shows at once. They
//!   are not in `$SRV.STATS`: the COMMANDS stream counts them.
//!
//! The service id is the instance id: unique per process already, and it
//! lets an operator address one instance (`$SRV.INFO.{service}.{instance}`).

use std::{borrow::Cow, collections::BTreeMap, sync::Arc};

use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::debug;

use super::endpoint::MethodStats;
use crate::{
    commands::catalog::CommandCatalog,
    election::{Leadership, Role},
};

/// Everything `$SRV` replies are built from.
pub(crate) struct Description {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) version: String,
    pub(crate) description: String,
    /// The builder's metadata plus `instance_id` and `aegis_sdk`.
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) started: chrono::DateTime<chrono::Utc>,
    pub(crate) endpoints: Vec<EndpointDescription>,
    /// The sticky group and this instance's view of its election.
    pub(crate) election: Option<(String, Leadership)>,
    /// The commands the workers on the instance's connection take.
    pub(crate) commands: Arc<CommandCatalog>,
}

/// One method as the services protocol lists it.
pub(crate) struct EndpointDescription {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) queue_group: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) stats: Arc<MethodStats>,
}

#[derive(Serialize)]
struct Ping<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    description: &'a str,
    metadata: BTreeMap<String, String>,
    endpoints: Vec<EndpointInfo<'a>>,
}

#[derive(Serialize)]
struct EndpointInfo<'a> {
    name: Cow<'a, str>,
    subject: Cow<'a, str>,
    queue_group: Cow<'a, str>,
    metadata: Cow<'a, BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Stats<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: BTreeMap<String, String>,
    started: String,
    endpoints: Vec<EndpointStats<'a>>,
}

#[derive(Serialize)]
struct EndpointStats<'a> {
    name: &'a str,
    subject: &'a str,
    queue_group: &'a str,
    num_requests: u64,
    num_errors: u64,
    /// Nanoseconds, as the protocol has it.
    processing_time: u64,
    average_processing_time: u64,
    last_error: String,
    data: EndpointData,
}

#[derive(Serialize)]
struct EndpointData {
    /// Calls a standby refused (NOT_ACTIVE) without running them.
    not_active_refusals: u64,
}

impl Description {
    /// The service metadata now: the static entries plus the role.
    fn metadata(&self) -> BTreeMap<String, String> {
        let mut metadata = self.metadata.clone();
        if let Some((group, leadership)) = &self.election {
            metadata.insert("sticky_group".into(), group.clone());
            match leadership.role() {
                Role::Leader { epoch } => {
                    metadata.insert("role".into(), "ACTIVE".into());
                    metadata.insert("leader".into(), self.id.clone());
                    metadata.insert("epoch".into(), epoch.to_string());
                }
                Role::Standby { leader } => {
                    metadata.insert("role".into(), "STANDBY".into());
                    metadata.insert("leader".into(), leader.unwrap_or_default());
                }
            }
        }
        metadata
    }

    fn ping(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&Ping {
            kind: "io.nats.micro.v1.ping_response",
            name: &self.name,
            id: &self.id,
            version: &self.version,
            metadata: self.metadata(),
        })
    }

    fn info(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&Info {
            kind: "io.nats.micro.v1.info_response",
            name: &self.name,
            id: &self.id,
            version: &self.version,
            description: &self.description,
            metadata: self.metadata(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| EndpointInfo {
                    name: Cow::Borrowed(&e.name),
                    subject: Cow::Borrowed(&e.subject),
                    queue_group: Cow::Borrowed(&e.queue_group),
                    metadata: Cow::Borrowed(&e.metadata),
                })
                .chain(
                    self.commands
                        .of(&self.name, &self.id)
                        .into_iter()
                        .map(|c| EndpointInfo {
                            subject: Cow::Owned(aegis_contracts::subjects::command_subject(
                                &self.name, &c.name,
                            )),
                            // The workers share the service's durable
                            // consumer as a method's instances share its
                            // queue group.
                            queue_group: Cow::Owned(crate::commands::catalog::consumer_name(
                                &self.name,
                            )),
                            metadata: Cow::Owned(c.metadata(&self.name)),
                            name: Cow::Owned(c.name),
                        }),
                )
                .collect(),
        })
    }

    fn stats(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&Stats {
            kind: "io.nats.micro.v1.stats_response",
            name: &self.name,
            id: &self.id,
            version: &self.version,
            metadata: self.metadata(),
            started: self
                .started
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| {
                    let s = e.stats.snapshot();
                    let total = u64::try_from(s.processing.as_nanos()).unwrap_or(u64::MAX);
                    EndpointStats {
                        name: &e.name,
                        subject: &e.subject,
                        queue_group: &e.queue_group,
                        num_requests: s.requests,
                        num_errors: s.errors,
                        processing_time: total,
                        average_processing_time: total.checked_div(s.requests).unwrap_or(0),
                        last_error: s.last_error,
                        data: EndpointData {
                            not_active_refusals: s.refused,
                        },
                    }
                })
                .collect(),
        })
    }
}

/// The `$SRV` metadata keys naming the process: its host and pid.
pub(crate) const META_HOST: &str = "aegis_host";
pub(crate) const META_PID: &str = "aegis_pid";

/// How long [`holder`] waits for a running instance to answer. A live
/// process answers in well under a millisecond here; one whose process is
/// gone gets "no responders" at once, so only a connection the server
/// still holds for a dead or frozen process waits this long.
const HOLDER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The process that answers for instance `id` of service `name`: its host
/// and pid, as its `$SRV.PING` metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) host: Option<String>,
    pub(crate) pid: Option<u32>,
}

/// Asks `$SRV.PING.{name}.{id}` whether a running process serves that
/// instance: `Ok(None)` when nobody does ("no responders"), the holder
/// when one answers, and an error saying why it could not be told (no
/// answer in time, or NATS refused the request).
pub(crate) async fn holder(
    client: &async_nats::Client,
    name: &str,
    id: &str,
) -> Result<Option<Holder>, String> {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        metadata: BTreeMap<String, String>,
    }
    let subject = format!("$SRV.PING.{name}.{id}");
    match tokio::time::timeout(HOLDER_WAIT, client.request(subject, bytes::Bytes::new())).await {
        Err(_) => Err(format!("no answer within {HOLDER_WAIT:?}")),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(None),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(reply)) => {
            let metadata = serde_json::from_slice::<Reply>(&reply.payload)
                .map(|r| r.metadata)
                .unwrap_or_default();
            Ok(Some(Holder {
                host: metadata.get(META_HOST).cloned(),
                pid: metadata.get(META_PID).and_then(|p| p.parse().ok()),
            }))
        }
    }
}

/// Subscribes the nine `$SRV` subjects (each verb for all services, for
/// this service name, and for this instance) and answers them until the
/// returned task is aborted.
///
/// # Errors
/// When NATS refuses a subscription.
pub(crate) async fn serve(
    client: async_nats::Client,
    description: Description,
) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
    let mut subscriptions = Vec::new();
    for verb in ["PING", "INFO", "STATS"] {
        for subject in [
            format!("$SRV.{verb}"),
            format!("$SRV.{verb}.{}", description.name),
            format!("$SRV.{verb}.{}.{}", description.name, description.id),
        ] {
            subscriptions.push(client.subscribe(subject).await?);
        }
    }
    let mut requests = futures::stream::select_all(subscriptions);
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply else { continue };
            let body = match msg.subject.split('.').nth(1) {
                Some("PING") => description.ping(),
                Some("INFO") => description.info(),
                Some("STATS") => description.stats(),
                _ => continue,
            };
            match body {
                Ok(body) => {
                    if let Err(e) = client.publish(reply, body.into()).await {
                        debug!(error = %crate::startup::Causes(&e), "could not answer a $SRV request");
                    }
                }
                Err(e) => {
                    debug!(error = %crate::startup::Causes(&e), "could not encode a $SRV reply")
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> Description {
        let stats = Arc::new(MethodStats::default());
        Description {
            name: "calculator".into(),
            id: "calc-1".into(),
            version: "1.0.0".into(),
            description: String::new(),
            metadata: BTreeMap::from([("instance_id".into(), "calc-1".into())]),
            started: chrono::Utc::now(),
            endpoints: ["b", "a"]
                .into_iter()
                .map(|m| EndpointDescription {
                    name: m.into(),
                    subject: format!("rpc.calculator.{m}"),
                    queue_group: "rpc.calculator".into(),
                    metadata: BTreeMap::new(),
                    stats: stats.clone(),
                })
                .collect(),
            election: None,
            commands: Arc::default(),
        }
    }

    #[test]
    fn info_lists_endpoints_in_declaration_order() {
        let info: serde_json::Value =
            serde_json::from_slice(&description().info().unwrap()).unwrap();
        assert_eq!(info["type"], "io.nats.micro.v1.info_response");
        let names: Vec<&str> = info["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn info_lists_the_commands_taken_after_the_methods() {
        let d = description();
        let worker = d.commands.list(
            "calculator",
            None,
            vec![crate::commands::catalog::CommandInfo {
                name: "recompute".into(),
                payload_schema: serde_json::json!({"type": "object"}),
                description: None,
                leader_only: false,
            }],
        );
        let _elsewhere = d.commands.list("calculator", Some("calc-2"), Vec::new());
        let info: serde_json::Value = serde_json::from_slice(&d.info().unwrap()).unwrap();
        let e = &info["endpoints"][2];
        assert_eq!(e["name"], "recompute");
        assert_eq!(e["subject"], "commands.calculator.recompute");
        assert_eq!(e["queue_group"], "calculator_commands");
        assert_eq!(e["metadata"]["kind"], "command");
        assert_eq!(e["metadata"]["request_schema"], r#"{"type":"object"}"#);
        assert!(info["endpoints"][0]["metadata"].get("kind").is_none());
        // Not in the stats: the stream counts commands.
        let stats: serde_json::Value = serde_json::from_slice(&d.stats().unwrap()).unwrap();
        assert_eq!(stats["endpoints"].as_array().unwrap().len(), 2);
        drop(worker);
        let info: serde_json::Value = serde_json::from_slice(&d.info().unwrap()).unwrap();
        assert_eq!(info["endpoints"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn stats_follow_the_protocol_shape() {
        let stats: serde_json::Value =
            serde_json::from_slice(&description().stats().unwrap()).unwrap();
        assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
        let e = &stats["endpoints"][0];
        for field in [
            "num_requests",
            "num_errors",
            "processing_time",
            "average_processing_time",
        ] {
            assert!(e[field].is_u64(), "{field}: {e}");
        }
        assert_eq!(e["last_error"], "");
        assert_eq!(e["data"]["not_active_refusals"], 0);
        assert!(chrono::DateTime::parse_from_rfc3339(stats["started"].as_str().unwrap()).is_ok());
    }
}
