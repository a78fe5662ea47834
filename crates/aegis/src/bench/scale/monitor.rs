//! The monitor side of `aegis bench scale`: the monitor runs in the
//! benchmark's process (its own NATS connections, with the system account,
//! so crashes are seen from the server's disconnect advisories) and is
//! measured over real HTTP:
//!
//! - [`load`]: `GET` requests at a fixed rate (open loop: a slow answer does
//!   not slow the next request down), latency per request;
//! - [`sse_clients`]: clients on `/api/stream` timing how long after a probe
//!   instance's registration was acknowledged its `instance` event arrives,
//!   and whether the stream told them they lagged;
//! - [`crash_seen`]: how long after a SIGKILL the monitor stops showing an
//!   instance as ACTIVE.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

pub(crate) use super::report::LoadResult;

/// The monitor's base URL and the token to call it with.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
}

impl Api {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Most requests in flight at once; beyond, a tick's request is not sent
/// and counted as such (the client's saturation, not the monitor's).
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// Requests `paths` in turn at `rate` per second for `duration`.
pub(crate) async fn load(
    api: &Api,
    paths: Vec<String>,
    rate: f64,
    duration: Duration,
) -> LoadResult {
    let hist = Arc::new(Mutex::new(histogram()));
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut not_sent = 0;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while started.elapsed() < duration {
        tick.tick().await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let request = api.get(&paths[i % paths.len()]);
        i += 1;
        let (hist, bytes, failed) = (hist.clone(), bytes.clone(), failed.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let body = match request.send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                _ => None,
            };
            drop(permit);
            match body {
                Some(body) => {
                    let us = t.elapsed().as_micros().max(1) as u64;
                    let _ = hist.lock().unwrap_or_else(|e| e.into_inner()).record(us);
                    bytes.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                None => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let h = hist.lock().unwrap_or_else(|e| e.into_inner());
    let answered = h.len();
    LoadResult {
        rate,
        achieved: answered as f64 / elapsed,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
        failed: failed.load(std::sync::atomic::Ordering::Relaxed),
        not_sent,
        mean_bytes: if answered > 0 {
            bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / answered as f64
        } else {
            0.0
        },
    }
}

/// When each probe instance's registration was acknowledged, by id.
pub(crate) type Probes = Arc<Mutex<HashMap<String, Instant>>>;

/// What the SSE clients saw.
#[derive(Debug, Default)]
pub(crate) struct SseSeen {
    /// Delay from acknowledged write to event, µs, over all clients.
    pub(crate) delays: Vec<u64>,
    /// Clients that received a `lagged` event.
    pub(crate) lagged_clients: usize,
    /// Clients whose stream ended or failed early.
    pub(crate) broken_clients: usize,
    /// Events that came before the probe task had noted the write's
    /// acknowledgement (counted as 0 ms in `delays`).
    pub(crate) early: usize,
}

/// Runs `clients` SSE clients until `stop`; each records when the first
/// event naming each probe came, and the delays are taken from the probes'
/// acknowledgements afterwards: an event can come before the probe task
/// has noted its acknowledgement (it was dropped as unknown before, and
/// counted as missed).
pub(crate) async fn sse_clients(
    api: &Api,
    clients: usize,
    probes: Probes,
    ready: Arc<tokio::sync::Barrier>,
    stop: CancellationToken,
) -> SseSeen {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let request = api.get("/api/stream?topics=instance");
        let (stop, ready) = (stop.clone(), ready.clone());
        tasks.spawn(async move {
            let mut arrivals: Vec<(String, Instant)> = Vec::new();
            let mut lagged = false;
            let mut seen = std::collections::HashSet::new();
            let response = match request.send().await {
                Ok(r) if r.status().is_success() => r,
                _ => {
                    ready.wait().await;
                    return (arrivals, lagged, true);
                }
            };
            ready.wait().await;
            let mut body = response.bytes_stream();
            let mut buf = String::new();
            let mut event = String::new();
            loop {
                let chunk = tokio::select! {
                    () = stop.cancelled() => return (arrivals, lagged, false),
                    chunk = body.next() => chunk,
                };
                let Some(Ok(chunk)) = chunk else {
                    return (arrivals, lagged, true);
                };
                let at = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find('\n') {
                    let line: String = buf.drain(..=end).collect();
                    let line = line.trim_end();
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                        if event == "lagged" {
                            lagged = true;
                        }
                    } else if let Some(data) = line.strip_prefix("data:")
                        && event == "instance"
                        && let Some(id) = instance_id_of(data)
                        && seen.insert(id.clone())
                    {
                        arrivals.push((id, at));
                    }
                }
            }
        });
    }
    let mut out = SseSeen::default();
    let mut all_arrivals = Vec::new();
    while let Some(Ok((arrivals, lagged, broken))) = tasks.join_next().await {
        all_arrivals.push(arrivals);
        out.lagged_clients += usize::from(lagged);
        out.broken_clients += usize::from(broken);
    }
    // Every client has ended (after the probes): each acknowledgement that
    // will be noted is.
    let acked = probes.lock().unwrap_or_else(|e| e.into_inner());
    for (id, at) in all_arrivals.iter().flatten() {
        let Some(t0) = acked.get(id) else { continue };
        if at < t0 {
            out.early += 1;
        }
        out.delays
            .push(at.saturating_duration_since(*t0).as_micros() as u64);
    }
    out
}

/// The probe id an `instance` event is about, if it is a probe's upsert.
fn instance_id_of(data: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(data.trim()).ok()?;
    if v.get("type")?.as_str()? != "instanceUpserted" {
        return None;
    }
    let id = v.get("instance")?.get("instanceId")?.as_str()?;
    id.starts_with("sse-").then(|| id.to_owned())
}

/// Polls the monitor until it no longer shows `service/id` as ACTIVE;
/// returns how long after `killed` that was, or `None` after `limit`.
pub(crate) async fn crash_seen(
    api: &Api,
    service: &str,
    id: &str,
    killed: Instant,
    limit: Duration,
) -> Option<Duration> {
    while killed.elapsed() < limit {
        let shown = match api
            .get(&format!("/api/instances/{service}/{id}"))
            .send()
            .await
        {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => None,
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v.get("status")?.as_str().map(str::to_owned)),
            Err(_) => Some("ACTIVE".to_owned()),
        };
        if shown.as_deref() != Some("ACTIVE") {
            return Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// p50 and p99 of microsecond samples, in milliseconds.
pub(crate) fn quantiles_ms(samples: &[u64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut h = histogram();
    for s in samples {
        let _ = h.record((*s).max(1));
    }
    (
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_probe_upserts_are_timed() {
        let up = r#"{"type":"instanceUpserted","instance":{"instanceId":"sse-3"}}"#;
        assert_eq!(instance_id_of(up).as_deref(), Some("sse-3"));
        let other = r#"{"type":"instanceUpserted","instance":{"instanceId":"s1-i2"}}"#;
        assert_eq!(instance_id_of(other), None);
        let gone = r#"{"type":"instanceRemoved","instanceId":"sse-3"}"#;
        assert_eq!(instance_id_of(gone), None);
    }
}
