//! `aegis chaos unhealthy|healthy|slow`: drills sent to running instances on
//! their control subject `aegis.control.{service}.{instance}` (see
//! `aegis_contracts::control`). They need only NATS, not a local `aegis up`:
//! they work against any deployment the operator's credentials reach.
//!
//! A target is an instance id, or a service name: its leader (the holder of
//! its election key) when it is a sticky service, else its first instance —
//! or, with `--all`, every instance of it. For `healthy`, a service name
//! means every instance of it an operator made UNHEALTHY (its registry
//! record says so: `statusReason` is `operator`), wherever the leadership
//! has moved since, so `healthy SERVICE` undoes `unhealthy SERVICE`.

use std::time::{Duration, Instant};

use aegis_sdk::{
    Connection, RegistryReader,
    contracts::{
        ServiceInstance,
        control::{
            ControlRequest, ControlResponse, ControlState, METADATA_STATUS_REASON, UnhealthyReason,
        },
        models::rfc3339,
        subjects,
    },
    election::LeaderRecord,
};
use anyhow::{Context, bail};

/// How long a drill waits for an instance's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `unhealthy` on a leader watches for the hand-over.
const HANDOVER_WATCH: Duration = Duration::from_secs(3);

/// Sends `request` to the instance(s) `target` names and prints what they
/// answered; for `unhealthy` on a leader, also who leads afterwards, and
/// the command that undoes it.
///
/// Every target is sent the request, even after one did not answer or
/// refused; each result is printed as it comes. `again` is added to the
/// command printed (the `--state-dir` given, see `again_flags`).
///
/// # Errors
/// An unknown target (the message lists what is registered), or, once all
/// were sent, the instances that did not answer or refused (named).
pub(crate) async fn run(
    conn: &Connection,
    target: &str,
    all: bool,
    request: ControlRequest,
    again: &str,
) -> anyhow::Result<()> {
    request
        .validate()
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let reader = RegistryReader::start(conn)
        .await
        .context("reading the service registry")?;
    let registered = reader.all();
    let targets = resolve(conn, &registered, target, all, &request).await?;
    if targets.is_empty() {
        // Only `healthy SERVICE` gets here: nothing to lift is no failure.
        println!("no instance of {target} is UNHEALTHY by an operator's verdict: nothing to lift");
        return Ok(());
    }
    let unhealthy = matches!(request, ControlRequest::Unhealthy { .. });
    // Every target is sent the request, whatever an earlier one did: one
    // that is gone (its record outlives it until its TTL runs out) must not
    // keep the others as they are.
    let mut reached = Vec::new();
    let mut missed = Vec::new();
    for instance in &targets {
        let leader_before = leader(conn, instance).await;
        let state = match send(conn, instance, &request).await {
            Ok(state) => state,
            Err(miss) => {
                println!("{}", miss.full);
                missed.push(miss);
                continue;
            }
        };
        println!("{}", describe(&state, &request));
        reached.push(instance.instance_id.as_str());
        let was_leader = leader_before
            .as_ref()
            .is_some_and(|l| l.instance_id == instance.instance_id);
        if was_leader && unhealthy {
            report_handover(conn, instance).await;
        }
    }
    if unhealthy && !reached.is_empty() {
        // `healthy SERVICE` finds every instance made unhealthy, so one
        // line undoes `--all` too.
        let undo = if all {
            target.to_owned()
        } else {
            reached.join(" ")
        };
        println!("undo: aegis chaos healthy {undo}{again}");
    }
    match missed.as_slice() {
        [] => Ok(()),
        [one] if targets.len() == 1 => bail!("{}", one.full),
        _ => bail!(
            "{} of {} instances were not changed: {}",
            missed.len(),
            targets.len(),
            missed
                .iter()
                .map(|m| format!("{} ({})", m.instance_id, m.short))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Why an instance was not changed: in short (for the list at the end),
/// and in full (said as it happens).
#[derive(Debug)]
struct Miss {
    instance_id: String,
    short: String,
    full: String,
}

/// The instances `target` names (see the module docs).
async fn resolve(
    conn: &Connection,
    registered: &[ServiceInstance],
    target: &str,
    all: bool,
    request: &ControlRequest,
) -> anyhow::Result<Vec<ServiceInstance>> {
    if let Some(one) = registered.iter().find(|i| i.instance_id == target) {
        if all {
            bail!("--all takes a service name; `{target}` is an instance");
        }
        return Ok(vec![one.clone()]);
    }
    let mut of_service: Vec<ServiceInstance> = registered
        .iter()
        .filter(|i| i.service_name == target)
        .cloned()
        .collect();
    if of_service.is_empty() {
        bail!(
            "no registered instance or service is named `{target}`; registered: {}",
            listing(registered)
        );
    }
    of_service.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    if !all && *request == ControlRequest::Healthy {
        // Not the leader: the verdict made the leader hand over, so the
        // instance to heal no longer leads. The records say which do.
        of_service.retain(forced_by_operator);
        return Ok(of_service);
    }
    if all {
        // The leader last: made unhealthy first, it would hand over to a
        // standby about to be made unhealthy too, and leadership would hop
        // along the group.
        if let Some(leader) = leader(conn, &of_service[0]).await {
            of_service.sort_by_key(|i| i.instance_id == leader.instance_id);
        }
        return Ok(of_service);
    }
    if let Some(leader) = leader(conn, &of_service[0]).await
        && let Some(i) = of_service
            .iter()
            .find(|i| i.instance_id == leader.instance_id)
    {
        return Ok(vec![i.clone()]);
    }
    Ok(vec![of_service.swap_remove(0)])
}

/// Whether the instance's record says an operator made it UNHEALTHY (the
/// operator's verdict wins over the other reasons, so the record names it
/// whenever one holds).
fn forced_by_operator(instance: &ServiceInstance) -> bool {
    instance
        .metadata
        .get(METADATA_STATUS_REASON)
        .and_then(|v| v.as_str())
        .and_then(UnhealthyReason::parse)
        == Some(UnhealthyReason::Operator)
}

/// `service: a, b; other: c`, or `(none)`.
fn listing(registered: &[ServiceInstance]) -> String {
    let mut by_service: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for i in registered {
        by_service
            .entry(&i.service_name)
            .or_default()
            .push(&i.instance_id);
    }
    if by_service.is_empty() {
        return "(none)".to_owned();
    }
    by_service
        .into_iter()
        .map(|(s, mut ids)| {
            ids.sort_unstable();
            format!("{s}: {}", ids.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The holder of the instance's sticky group's election key, if it has one.
pub(super) async fn leader(conn: &Connection, instance: &ServiceInstance) -> Option<LeaderRecord> {
    let group = instance.sticky_active_group.as_deref()?;
    let store = conn
        .jetstream()
        .get_key_value(subjects::ELECTIONS_BUCKET)
        .await
        .ok()?;
    let key = subjects::election_key(&instance.service_name, group);
    let value = store.get(&key).await.ok()??;
    serde_json::from_slice(&value).ok()
}

async fn send(
    conn: &Connection,
    instance: &ServiceInstance,
    request: &ControlRequest,
) -> Result<ControlState, Miss> {
    let id = &instance.instance_id;
    let miss = |short: String, full: String| Miss {
        instance_id: id.clone(),
        short,
        full,
    };
    let subject = subjects::instance_control_subject(&instance.service_name, id);
    let body = serde_json::to_vec(request)
        .map_err(|e| miss("not sent".to_owned(), format!("{id}: the request: {e}")))?;
    let reply = match tokio::time::timeout(
        ANSWER_TIMEOUT,
        conn.client().request(subject.clone(), body.into()),
    )
    .await
    {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(miss(
                "not running".to_owned(),
                format!(
                    "{id} is not running: nothing answers on {subject} (the record of a \
                     stopped or crashed instance stays in the registry until its TTL runs out)"
                ),
            ));
        }
        Ok(Err(e)) => {
            return Err(miss(
                "no answer".to_owned(),
                format!(
                    "{id} did not answer on {subject} (may these credentials publish there?): {e}"
                ),
            ));
        }
        Err(_) => {
            return Err(miss(
                format!("no answer within {ANSWER_TIMEOUT:?}"),
                format!("{id} did not answer on {subject} within {ANSWER_TIMEOUT:?}"),
            ));
        }
    };
    match serde_json::from_slice::<ControlResponse>(&reply.payload) {
        Ok(ControlResponse::Ok(state)) => Ok(state),
        Ok(ControlResponse::Error(e)) => Err(miss(
            format!("refused: {}", e.message),
            format!("{id} refused: {}", e.message),
        )),
        Err(e) => Err(miss(
            "not a control reply".to_owned(),
            format!("{id} answered something that is not a control reply: {e}"),
        )),
    }
}

/// One line on the instance's state after the drill.
fn describe(state: &ControlState, request: &ControlRequest) -> String {
    let who = format!("{} ({})", state.instance, state.service);
    let role = state
        .role
        .as_deref()
        .map(|r| format!(" [{r}]"))
        .unwrap_or_default();
    match request {
        ControlRequest::Slow { delay_ms: 0 } => format!("{who}: handlers run without added delay"),
        ControlRequest::Slow { delay_ms } => {
            format!("{who}: every handler now waits {delay_ms} ms before it runs")
        }
        _ if state.healthy => format!("{who}: healthy{role}"),
        _ => {
            let reason = state
                .reason
                .map(|r| match r.as_str() {
                    "operator" => "forced by an operator".to_owned(),
                    "health_check" => "its health check fails".to_owned(),
                    other => other.replace('_', " "),
                })
                .unwrap_or_default();
            let since = state
                .since
                .map(|t| format!(" since {}", rfc3339::format_utc(&t)))
                .unwrap_or_default();
            let until = state
                .forced_until
                .map(|t| format!(", until {}", rfc3339::format_utc(&t)))
                .unwrap_or_default();
            format!("{who}: UNHEALTHY ({reason}){since}{until}{role}")
        }
    }
}

/// Watches the election key after a leader was made unhealthy and says
/// who leads now.
async fn report_handover(conn: &Connection, instance: &ServiceInstance) {
    let started = Instant::now();
    while started.elapsed() < HANDOVER_WATCH {
        if let Some(now) = leader(conn, instance).await
            && now.instance_id != instance.instance_id
        {
            println!(
                "leadership moved from {} to {} after {} ms",
                instance.instance_id,
                now.instance_id,
                started.elapsed().as_millis()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} still leads after {:?}: no healthy standby took over, so it leads on, degraded",
        instance.instance_id, HANDOVER_WATCH
    );
}

#[cfg(test)]
mod tests {
    use aegis_sdk::contracts::models::InstanceStatus;

    use super::*;

    fn instance(id: &str, reason: Option<&str>) -> ServiceInstance {
        let mut i = ServiceInstance::new("order-service", id, "1.0.0", chrono::Utc::now());
        if let Some(reason) = reason {
            i.status = InstanceStatus::Unhealthy;
            i.metadata
                .insert(METADATA_STATUS_REASON.into(), reason.into());
        }
        i
    }

    #[test]
    fn only_the_operators_verdict_counts_as_forced() {
        assert!(forced_by_operator(&instance("order-2", Some("operator"))));
        assert!(!forced_by_operator(&instance("order-1", None)));
        assert!(!forced_by_operator(&instance(
            "order-3",
            Some("health_check")
        )));
        assert!(!forced_by_operator(&instance("order-4", Some("nonsense"))));
    }
}
