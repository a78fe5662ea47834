//! [`ByDiscovery`]: the [`Pick`] of a balanced call, from this process's
//! registry view by the call's strategy.

use std::{sync::Arc, time::Duration};

use async_nats::Message;
use tokio::time::Instant;

use super::super::{RpcError, headers::ReplyHeaders};
use super::{
    CATCH_UP_LIMIT, Call, Failure, PROBE_BACKOFF_MAX, PROBE_BACKOFF_START, Pick,
    UNAVAILABLE_PAUSE_FIRST, UNAVAILABLE_PAUSE_MAX,
};
use crate::{
    discovery::{Strategy, index::DiscoveryIndex, stats::CallStats, strategy::Member},
    registry::cache::RegistryCache,
};

/// Picks registered ACTIVE instances through this process's registry view.
pub(in crate::rpc) struct ByDiscovery<'a> {
    /// Both borrowed from the connection: no shared reference count is
    /// touched per call.
    cache: &'a RegistryCache,
    index: &'a DiscoveryIndex,
    strategy: Strategy,
    /// Whether the call feeds the instances' statistics: only the strategy
    /// that reads them does, so other calls touch no shared count to keep
    /// numbers nobody uses.
    observes: bool,
    key_hash: Option<u64>,
    /// Instances this call already tried; allocated only on a retry.
    tried: Vec<Arc<str>>,
    caught_up: bool,
    /// An evicted instance (service, id) this call is trying again, for
    /// want of another.
    probing: Option<(String, Arc<str>)>,
    /// The pause before the next such try.
    probe_backoff: Duration,
    /// Instances (in `tried`) that answered SERVICE_UNAVAILABLE to this
    /// call: asked again after `unavailable_pause` once no other is left.
    unavailable: Vec<Arc<str>>,
    unavailable_pause: Duration,
}

impl<'a> ByDiscovery<'a> {
    /// A picker over `cache` for `call`, with the service in the view's
    /// scope (the first call to a service adds it to the watch).
    pub(in crate::rpc) async fn new(
        cache: &'a RegistryCache,
        index: &'a DiscoveryIndex,
        call: &Call<'_>,
        strategy: Strategy,
    ) -> Result<Self, RpcError> {
        let key_hash = call
            .opts
            .sticky_key
            .as_deref()
            .map(crate::discovery::ring::hash_key);
        if strategy == Strategy::Sticky && key_hash.is_none() {
            return Err(RpcError::Discovery(
                crate::discovery::DiscoveryError::MissingStickyKey,
            ));
        }
        if !cache
            .cover(Some(call.service), call.started, call.deadline)
            .await
        {
            return Err(call.registry_late());
        }
        Ok(Self {
            cache,
            index,
            strategy,
            observes: strategy == Strategy::LeastLatency,
            key_hash,
            tried: Vec::new(),
            caught_up: false,
            probing: None,
            probe_backoff: PROBE_BACKOFF_START,
            unavailable: Vec::new(),
            unavailable_pause: UNAVAILABLE_PAUSE_FIRST,
        })
    }
}

impl Pick for ByDiscovery<'_> {
    type Target = Arc<Member>;

    async fn pick(&mut self, call: &Call<'_>, failed: bool) -> Result<Arc<Member>, RpcError> {
        loop {
            if let Some(member) = self.index.select(
                call.service,
                self.strategy,
                self.key_hash,
                Some(call.method),
                &self.tried,
            ) {
                return Ok(member);
            }
            if !failed && !self.caught_up {
                // Nothing known: make sure registrations acknowledged before
                // this call are in the view (one API request, no listing),
                // so "start, then call" never misses.
                self.caught_up = true;
                self.cache
                    .catch_up(call.deadline.min(Instant::now() + CATCH_UP_LIMIT))
                    .await;
                continue;
            }
            // None left but one this process evicted: it may have been
            // between NATS nodes (no responder for a few milliseconds) and
            // a new record would take seconds, so try it again after a
            // pause, until the deadline. A fresh call tries it at once.
            let after = self.probing.as_ref().map(|(_, id)| &**id);
            if let Some(member) = self.index.evicted(call.service, Some(call.method), after) {
                let pause = if failed {
                    self.probe_backoff
                } else {
                    Duration::ZERO
                };
                if Instant::now() + pause < call.deadline {
                    tokio::time::sleep(pause).await;
                    self.probe_backoff = (self.probe_backoff * 2).min(PROBE_BACKOFF_MAX);
                    self.probing = Some((call.service.to_owned(), member.id.clone()));
                    return Ok(member);
                }
            }
            // None left but ones that said they could not serve for now:
            // ask them again after a pause that leaves time to be served.
            if !self.unavailable.is_empty()
                && Instant::now() + self.unavailable_pause < call.deadline
            {
                tokio::time::sleep(self.unavailable_pause).await;
                self.unavailable_pause = (self.unavailable_pause * 2).min(UNAVAILABLE_PAUSE_MAX);
                let again = std::mem::take(&mut self.unavailable);
                self.tried.retain(|id| !again.contains(id));
                continue;
            }
            // Instances that do not list the method are never tried: a call
            // to a missing method must not evict healthy instances.
            let records = self.cache.shared().by_service(call.service);
            return Err(if self.index.has_selectable(call.service) {
                RpcError::NoSuchMethod {
                    service: call.service.to_owned(),
                    method: call.method.to_owned(),
                    methods: super::super::slips::listed_methods(&records),
                }
            } else {
                // The similar names, if none is held, are the caller's
                // to look up (`slips::with_similar`): this holds no
                // connection.
                RpcError::NoInstances {
                    service: call.service.to_owned(),
                    records: records.len(),
                    similar: Vec::new(),
                }
            });
        }
    }

    fn id<'t>(&self, target: &'t Arc<Member>) -> &'t str {
        &target.id
    }

    fn stats<'t>(&self, target: &'t Arc<Member>) -> Option<&'t CallStats> {
        self.observes.then_some(&*target.stats)
    }

    fn screen(
        &self,
        _: &Call<'_>,
        _: &Arc<Member>,
        _: &ReplyHeaders<'_>,
        _: &Message,
    ) -> Option<RpcError> {
        None
    }

    fn answered(&mut self, target: &Arc<Member>, started: Instant) {
        if self.observes {
            target.stats.observe(started.elapsed());
        }
        if let Some((service, id)) = &self.probing
            && *id == target.id
        {
            self.index.restore(service, id);
        }
    }

    fn failed(&mut self, call: &Call<'_>, target: Arc<Member>, how: Failure) {
        match how {
            Failure::NoResponder => {
                // It died (or is stopping): this process stops picking it
                // until it writes a newer record.
                self.index.evict(call.service, &target.id);
            }
            Failure::TimedOut(attempt) => {
                // Hung (a frozen process keeps its subscriptions, so NATS
                // delivers to it) or too slow for this caller: passed over
                // while another is left, until it writes a newer record (an
                // instance that runs re-writes its record every few
                // seconds; a hung one never, until the record expires).
                // This call does not try it again (`tried`).
                if self.observes {
                    target.stats.observe(attempt);
                }
                self.index.pass_over(call.service, &target.id);
            }
            // Not fed to the latency statistics: a quick refusal would
            // draw more calls to it.
            Failure::Unavailable => self.unavailable.push(target.id.clone()),
            Failure::Refused | Failure::Deposed => {}
        }
        self.tried.push(target.id.clone());
    }
}
