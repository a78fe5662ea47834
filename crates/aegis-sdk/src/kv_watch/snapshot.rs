//! A view's load without a consumer: the last value of every watched key
//! in one batched direct get (`multi_last`), which any replica of the
//! bucket's stream answers (buckets allow direct gets).
//!
//! A watch needs a consumer, and JetStream creates none while its cluster
//! elects a meta leader: 4-9 s after the node that led it died (its Raft
//! election timeout). The buckets' streams keep their leaders and
//! replicas meanwhile, and they answer reads. A process that starts in
//! that window loads its view this way and is served at once, instead of
//! failing its first calls; the watch opens as soon as JetStream creates
//! consumers again, and its load replaces the snapshot.
//!
//! A bucket whose stream has no leader (the node that led it died) answers
//! no lookup until its followers elect one, also 4-9 s later, and a view
//! needs the lookup before it can watch. A view whose lookup is not
//! answered within [`LOOKUP_BEFORE_SNAPSHOT`](super::LOOKUP_BEFORE_SNAPSHOT) loads this way by the
//! bucket's name while the lookup goes on ([`super::start()`]).
//!
//! A replica may lag its leader by a few writes, and nothing follows
//! changes until the watch opens: the registry view counts as stale until
//! then (`RegistryReader::staleness`). The server answers at most [`MAX_KEYS`] keys at once; a scope
//! with more gets no snapshot and waits for its watch, as before.

use std::time::Duration;

use async_nats::{
    Client, HeaderMap, StatusCode,
    header::{NATS_SEQUENCE, NATS_SUBJECT},
};
use futures::StreamExt;
use tracing::{debug, info};

use super::{KvEntry, Scope, Sink, removal_of};

/// How long a snapshot of the scope's keys may take ([`load`]).
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(1);

/// The most keys one batched direct get returns: the server answers a
/// request that matches more with 413 "Too Many Results" and nothing else.
pub(super) const MAX_KEYS: usize = 1024;

/// The server's end of a batch ("EOB").
const END_OF_BATCH: u16 = 204;
/// The header of a batch's end that counts what it left out.
const NUM_PENDING: &str = "Nats-Num-Pending";

/// A bucket as a snapshot reads it: its stream and its keys' subject
/// prefix, known from its name alone (no JetStream request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketNames {
    /// The bucket's stream (`KV_{bucket}`).
    pub(crate) stream: String,
    /// The subject prefix of its keys (`$KV.{bucket}.`).
    pub(crate) prefix: String,
}

impl BucketNames {
    /// The names of bucket `bucket`.
    pub(crate) fn of(bucket: &str) -> Self {
        Self {
            stream: format!("KV_{bucket}"),
            prefix: format!("$KV.{bucket}."),
        }
    }

    /// The names of the bucket `store` reads.
    pub(crate) fn of_store(store: &async_nats::jetstream::kv::Store) -> Self {
        Self {
            stream: store.stream_name.clone(),
            prefix: store.prefix.clone(),
        }
    }
}

/// Reads the last value of every key in `scope` from `bucket`'s stream, in
/// one batched direct get answered within `within`, and the highest
/// revision read (removal markers included). Deleted, purged and expired
/// keys are left out, as a watch's load leaves them out.
///
/// # Errors
/// Why no complete snapshot came: no replica answered in time, the server
/// refused the request (more than [`MAX_KEYS`] keys match, or the stream
/// does not allow direct gets), or a reply could not be read.
pub(super) async fn load(
    client: &Client,
    bucket: &BucketNames,
    scope: &Scope,
    within: Duration,
) -> Result<(Vec<KvEntry>, u64), String> {
    let request = serde_json::json!({
        "multi_last": scope.subjects(&bucket.prefix),
        "batch": MAX_KEYS,
    });
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", bucket.stream),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + within;
    let mut entries = Vec::new();
    let mut through = 0;
    loop {
        let message = match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => return Err("the reply subscription closed".to_owned()),
            Err(_) => {
                return Err(format!(
                    "no complete answer within {within:?} ({} keys in)",
                    entries.len()
                ));
            }
        };
        match message.status.map(|s| s.as_u16()) {
            None => {}
            // A batch the server cut short says how many are left.
            Some(END_OF_BATCH) => {
                return match pending(message.headers.as_ref()) {
                    0 => Ok((entries, through)),
                    left => Err(format!(
                        "the server sent {} keys and left {left}",
                        entries.len()
                    )),
                };
            }
            // "No Results": nothing in scope has a value.
            Some(404) if entries.is_empty() => return Ok((entries, through)),
            Some(_) => {
                let status = message.status.unwrap_or(StatusCode::NO_RESPONDERS);
                return Err(format!(
                    "the server answered {status} {}",
                    message.description.as_deref().unwrap_or("")
                ));
            }
        }
        let headers = message.headers.unwrap_or_default();
        let (revision, entry) = entry(&headers, message.payload, &bucket.prefix)?;
        through = through.max(revision);
        entries.extend(entry);
    }
}

/// How many messages the end of a batch says are left (`Nats-Num-Pending`;
/// none when it does not say).
fn pending(headers: Option<&HeaderMap>) -> u64 {
    headers
        .and_then(|h| h.get(NUM_PENDING))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// The revision one reply of a batched direct get carries, and its entry;
/// `None` for a key removed (its last message a delete, purge or expiry
/// marker) or outside the bucket's prefix.
fn entry(
    headers: &HeaderMap,
    value: bytes::Bytes,
    prefix: &str,
) -> Result<(u64, Option<KvEntry>), String> {
    let subject = headers
        .get(NATS_SUBJECT)
        .ok_or("a reply without its subject")?
        .as_str();
    let revision = headers
        .get(NATS_SEQUENCE)
        .and_then(|s| s.as_str().parse::<u64>().ok())
        .ok_or("a reply without a readable sequence")?;
    let Some(key) = subject.strip_prefix(prefix) else {
        return Ok((revision, None));
    };
    if removal_of(headers).is_some() {
        return Ok((revision, None));
    }
    let entry = KvEntry {
        key: key.to_owned(),
        value,
        revision,
    };
    Ok((revision, Some(entry)))
}

/// How often a view that takes refreshes reads its keys from the bucket's
/// replicas while its watch is broken ([`Refresher::during`]).
pub(super) const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// A watch's refreshes: what they read, for whom, when the next is due
/// (one clock across the attempts to open the watch and the pauses between
/// them), and the floor they are judged by.
pub(super) struct Refresher<'a, S> {
    client: &'a Client,
    bucket: &'a BucketNames,
    sink: &'a S,
    due: tokio::time::Instant,
    /// The highest revision the view was handed (loads with their removal
    /// markers, changes, removals) or a refresh read up to: a key the view
    /// lacks is news only above it (`Sink::on_refresh`).
    floor: u64,
}

impl<'a, S: Sink> Refresher<'a, S> {
    /// Refreshes of `bucket` for `sink` above `floor`, the first due at
    /// once.
    pub(super) fn new(
        client: &'a Client,
        bucket: &'a BucketNames,
        sink: &'a S,
        floor: u64,
    ) -> Self {
        Self {
            client,
            bucket,
            sink,
            due: tokio::time::Instant::now(),
            floor,
        }
    }

    /// The floor, for the watch that goes on from here.
    pub(super) fn floor(&self) -> u64 {
        self.floor
    }

    /// Reads `scope`'s keys from the bucket's replicas once and hands them
    /// to the sink as a refresh: for a view served from a snapshot while
    /// its bucket's lookup is not answered.
    pub(super) async fn once(&mut self, scope: &Scope) {
        let read = load(self.client, self.bucket, scope, SNAPSHOT_PATIENCE).await;
        hand_over(read, self.sink, &mut self.floor);
    }

    /// The view was handed the bucket up to `revision`.
    pub(super) fn read_to(&mut self, revision: u64) {
        self.floor = self.floor.max(revision);
    }

    /// The view was handed a bucket created again, up to `revision`: its
    /// revisions started over.
    pub(super) fn restart_at(&mut self, revision: u64) {
        self.floor = revision;
    }

    /// Runs `work` (an attempt to open the watch again, or the pause before
    /// the next); meanwhile, when `broken` (the view serves a load while its
    /// watch is broken) and the sink takes refreshes, reads `scope`'s keys
    /// from the bucket's replicas whenever one is due, every
    /// [`REFRESH_EVERY`], and hands them to the sink (`Sink::on_refresh`). A
    /// read runs beside `work`, never holding it up.
    ///
    /// Why: a watch opens only once JetStream creates consumers again, which
    /// after the meta leader's node died takes its cluster 4-9 s, while the
    /// buckets' streams elect their own leaders sooner, take writes again,
    /// and their replicas answer reads throughout. A sticky group's new
    /// leader, say, is written in that window; without this the view would
    /// show it only once the watch opens.
    pub(super) async fn during<T>(
        &mut self,
        broken: bool,
        scope: &Scope,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        if !(broken && self.sink.refreshes()) {
            return work.await;
        }
        let (client, bucket) = (self.client, self.bucket);
        let read = || load(client, bucket, scope, SNAPSHOT_PATIENCE);
        let mut reading = std::pin::pin!(None);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = tokio::time::sleep_until(self.due), if reading.is_none() => {
                    self.due = tokio::time::Instant::now() + REFRESH_EVERY;
                    reading.set(Some(read()));
                }
                got = async { reading.as_mut().as_pin_mut().expect("a read in flight").await },
                    if reading.is_some() => {
                    reading.set(None);
                    hand_over(got, self.sink, &mut self.floor);
                }
            }
        }
    }
}

/// Hands a refresh's read to `sink`, judged by `floor`, and raises the
/// floor to how far the read went; or logs why there was none.
fn hand_over<S: Sink>(read: Result<(Vec<KvEntry>, u64), String>, sink: &S, floor: &mut u64) {
    match read {
        Ok((entries, through)) => {
            sink.on_refresh(entries, *floor);
            *floor = (*floor).max(through);
        }
        Err(e) => debug!(error = %e, "no refresh from the bucket's replicas"),
    }
}

/// Loads the view of `scope` from the bucket's replicas, for a watch that
/// cannot open yet ([`load`]), and tells the sink it is a snapshot
/// (`Sink::on_snapshot`). How far it read (removal markers included), if
/// it did.
pub(super) async fn serve<S: Sink>(
    client: &Client,
    bucket: &BucketNames,
    scope: &Scope,
    description: &str,
    sink: &S,
) -> Option<u64> {
    match load(client, bucket, scope, SNAPSHOT_PATIENCE).await {
        Ok((entries, through)) => {
            info!(
                keys = entries.len(),
                "serving the last values the bucket's replicas hold until the {description} opens"
            );
            sink.on_load(entries, false, through);
            sink.on_snapshot();
            sink.on_scope_synced(scope.generation);
            Some(through)
        }
        Err(e) => {
            debug!(error = %e, "no snapshot for the {description} either");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::{self, kv};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, *value);
        }
        map
    }

    /// Against a real server: the latest value of each key in scope, and
    /// nothing of keys deleted or purged, or out of scope.
    #[tokio::test]
    async fn loads_the_latest_value_of_each_key_in_scope() {
        let nats = aegis_testkit::NatsServer::start().unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client.clone());
        let kv = js
            .create_key_value(kv::Config {
                bucket: "snap".into(),
                history: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        for key in ["a.1", "a.2", "b.1", "c.1"] {
            kv.put(key, "old".into()).await.unwrap();
        }
        let newest = kv.put("a.1", "new".into()).await.unwrap();
        kv.delete("a.2").await.unwrap();
        kv.purge("b.1").await.unwrap();
        let last = js
            .get_stream("KV_snap")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .last_sequence;
        let names = BucketNames::of("snap");
        let scope = |keys: &[&str]| Scope {
            generation: 1,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        };
        let within = Duration::from_secs(2);

        let (got, through) = load(&client, &names, &scope(&["a.*", "b.*"]), within)
            .await
            .unwrap();
        assert_eq!(
            through, last,
            "the purge's marker is the last revision read"
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].key.as_str(), got[0].revision, got[0].value.as_ref()),
            ("a.1", newest, b"new".as_slice())
        );
        let (none, _) = load(&client, &names, &scope(&["d.*"]), within)
            .await
            .unwrap();
        assert!(none.is_empty(), "nothing in scope: {none:?}");
        let missing = load(&client, &BucketNames::of("nope"), &scope(&["a.*"]), within).await;
        assert!(missing.is_err(), "no such bucket: {missing:?}");
    }

    /// Records the floor each refresh was judged by.
    #[derive(Default)]
    struct Floors(std::sync::Mutex<Vec<u64>>);

    impl Sink for Floors {
        fn on_session(&self, _: String) {}
        fn on_load(&self, _: Vec<KvEntry>, _: bool, _: u64) {}
        fn on_put(&self, _: KvEntry) {}
        fn on_remove(&self, _: &str, _: super::super::Removal, _: u64) {}
        fn on_applied(&self, _: u64) {}
        fn on_synced(&self) {}
        fn on_snapshot(&self) {}
        fn on_broken(&self) {}
        fn on_refresh(&self, _: Vec<KvEntry>, floor: u64) {
            self.0.lock().unwrap().push(floor);
        }
    }

    /// Each refresh is judged by the floor before it and raises it to how
    /// far it read; a failed read changes nothing.
    #[test]
    fn a_refresh_raises_the_floor_to_how_far_it_read() {
        let sink = Floors::default();
        let mut floor = 6;
        hand_over(Ok((Vec::new(), 9)), &sink, &mut floor);
        hand_over(Ok((Vec::new(), 8)), &sink, &mut floor);
        hand_over(Err("no replica answered".into()), &sink, &mut floor);
        assert_eq!(*sink.0.lock().unwrap(), vec![6, 9]);
        assert_eq!(floor, 9);
    }

    #[test]
    fn a_batch_cut_short_says_what_it_left() {
        assert_eq!(pending(None), 0);
        assert_eq!(pending(Some(&headers(&[("Nats-Num-Pending", "0")]))), 0);
        assert_eq!(pending(Some(&headers(&[("Nats-Num-Pending", "12")]))), 12);
    }

    #[test]
    fn a_bucket_is_named_as_jetstream_names_it() {
        let names = BucketNames::of("service_registry");
        assert_eq!(names.stream, "KV_service_registry");
        assert_eq!(names.prefix, "$KV.service_registry.");
    }

    #[test]
    fn a_reply_is_an_entry_unless_it_removes_its_key() {
        let put = headers(&[("Nats-Subject", "$KV.b.svc.a"), ("Nats-Sequence", "7")]);
        let (revision, got) = entry(&put, "v".into(), "$KV.b.").unwrap();
        let got = got.unwrap();
        assert_eq!(revision, 7);
        assert_eq!((got.key.as_str(), got.revision), ("svc.a", 7));
        assert_eq!(got.value, "v");

        for removed in [
            headers(&[
                ("Nats-Subject", "$KV.b.svc.a"),
                ("Nats-Sequence", "8"),
                ("KV-Operation", "DEL"),
            ]),
            headers(&[
                ("Nats-Subject", "$KV.b.svc.a"),
                ("Nats-Sequence", "9"),
                ("Nats-Marker-Reason", "MaxAge"),
            ]),
        ] {
            let (revision, got) = entry(&removed, "".into(), "$KV.b.").unwrap();
            assert!(got.is_none() && revision >= 8, "{revision} {got:?}");
        }
        let elsewhere = headers(&[("Nats-Subject", "$KV.other.x"), ("Nats-Sequence", "1")]);
        assert!(entry(&elsewhere, "".into(), "$KV.b.").unwrap().1.is_none());
        assert!(entry(&headers(&[("Nats-Sequence", "1")]), "".into(), "$KV.b.").is_err());
    }
}
