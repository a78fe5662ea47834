//! Consuming the commands of a service and reporting back to the sender.

use std::{
    collections::HashMap, fmt, future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration,
};

use aegis_contracts::{
    commands::CommandReply,
    names, subjects,
    wire::{HEADER_COMMAND_ID, HEADER_INSTANCE, HEADER_REPLY_TO, WireError},
};
use async_nats::{
    Client,
    jetstream::{
        AckKind,
        consumer::{self, pull},
    },
};
use futures::{FutureExt, future::BoxFuture};
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    election::{Leadership, Role, view::ElectionView},
    metrics::InstanceMetrics,
    pull::{Durable, HANDLER_STOP_WAIT, Outcome},
    rpc::Service,
    task::Background,
};

use super::{
    CommandError, Commands, HEADER_DEADLINE, HEADER_NOT_RUN,
    catalog::{CommandInfo, Listing, consumer_name},
    ensure_commands_stream,
};

/// Deliveries of one command before it is given up on, by default.
pub const DEFAULT_MAX_DELIVER: u32 = 5;

/// A command delivered to a handler.
///
/// Only the worker makes one (a handler also needs a [`Progress`], which
/// only the worker has), so it is `#[non_exhaustive]`: fields may be
/// added, as [`epoch`](Self::epoch) was, without breaking handlers. Read
/// its fields, or match it with `..`:
///
/// ```compile_fail
/// let cmd = aegis_sdk::commands::Command {
///     id: "c1".to_owned(),
///     name: "rebuild_book".to_owned(),
///     payload: (),
///     epoch: None,
/// };
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Command<T> {
    /// The command id chosen by the sender.
    pub id: String,
    /// The command name.
    pub name: String,
    /// The decoded payload.
    pub payload: T,
    /// For a worker started with
    /// [`leader_of`](CommandWorkerBuilder::leader_of): the fencing epoch
    /// this instance led under when the command was taken. A handler may
    /// still run after its instance was deposed (a deposed worker lets the
    /// commands it is running finish), so one that writes state a
    /// successor takes over should check
    /// [`Leadership::holds`](crate::election::Leadership::holds) with it, or
    /// fence the write with it. `None` for a worker of every instance.
    pub epoch: Option<u64>,
}

/// Reports progress of a running command to its sender.
///
/// Each report names the worker's instance (see
/// [`CommandWorkerBuilder::instance_id`]) in the `Aegis-Instance` header,
/// as the command's result does, so the sender can tell which worker runs
/// the command ([`CommandHandle::worker_instance`](super::CommandHandle::worker_instance)).
#[derive(Clone)]
pub struct Progress {
    client: Client,
    reply_to: Option<String>,
    acker: Arc<async_nats::jetstream::Message>,
    instance: Arc<str>,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("reply_to", &self.reply_to)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Progress {
    /// Sends a progress report (`percent` 0–100) and extends the ack deadline,
    /// so long commands are not redelivered while they run.
    pub async fn report(&self, percent: f32, message: impl Into<String>) {
        let _ = self.acker.ack_with(AckKind::Progress).await;
        send_reply(
            &self.client,
            self.reply_to.as_deref(),
            &CommandReply::Progress {
                percent: percent.clamp(0.0, 100.0),
                message: message.into(),
            },
            None,
            &self.instance,
        )
        .await;
    }

    /// The instance id of the worker running the command, as its reports
    /// name it to the sender.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }
}

type Erased = Arc<
    dyn Fn(
            String,
            String,
            bytes::Bytes,
            Option<u64>,
            Progress,
        ) -> BoxFuture<'static, Result<serde_json::Value, WireError>>
        + Send
        + Sync,
>;

/// Declares the command handlers of a service; [`start`](Self::start)
/// starts the worker.
#[must_use = "a command worker takes no command until start() is awaited"]
pub struct CommandWorkerBuilder {
    commands: Commands,
    service: String,
    handlers: HashMap<String, Erased>,
    /// The commands as `$SRV.INFO` lists them, in declaration order.
    declared: Vec<CommandInfo>,
    ack_wait: Duration,
    max_deliver: u32,
    concurrency: usize,
    /// Set by `leader_of`: the leadership to follow, or why there is none.
    leader: Option<Result<LeaderOf, String>>,
    /// Set by `instance_id`: the instance its replies name.
    instance: Option<String>,
}

/// The leadership a leader-only worker follows.
#[derive(Clone)]
struct LeaderOf {
    /// Wakes the worker at once on a role change.
    roles: watch::Receiver<Role>,
    /// Says whether the lease is valid right now (it lapses without a
    /// role change when renewals fail).
    leadership: Leadership,
    /// This instance's id, as the election key names its leader.
    instance_id: String,
    /// The election key's `(service, group)`.
    key: Option<(String, String)>,
    /// Who holds the election key, as the connection's watch of the
    /// election keys says; set by `start`. Without it (it did not load),
    /// a lapse counts as a deposal.
    view: Option<Arc<ElectionView>>,
    /// The election's lease: how long a lapse may last before it can no
    /// longer be told from a takeover (a standby takes the key once it has
    /// seen no renewal for this long).
    lease: Duration,
    /// The worker's connection, which feeds `view`; set by `start`. While
    /// it is not connected, the view cannot show a takeover.
    client: Option<Client>,
    /// The service's metrics: a command waiting for the lease counts in
    /// its queue depth.
    metrics: Arc<InstanceMetrics>,
}

/// Where a leader-only worker's instance stands in the term its worker
/// pulls for, as [`follow_leader`] decides it; [`run_one`] follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    /// Leads with a valid lease at this epoch: commands run.
    Serving(u64),
    /// Led at this epoch and its lease ran out unrenewed, while the
    /// election key still names it at that epoch, on a connected
    /// connection, for less than a lease: it serves nothing for now and
    /// may serve again at the same epoch. Commands running go on;
    /// commands taken meanwhile wait for it to serve again.
    Lapsed(u64),
    /// A lapse that can no longer be told from a takeover, since `since`:
    /// it lasted a lease (a standby may have taken the key, and the view
    /// not shown it yet: this instance's connection may be silent), or the
    /// connection was not connected. The commands running get
    /// [`HANDLER_STOP_WAIT`] from `since`, as after a deposal, and are
    /// then handed back, unless the instance serves again at the same
    /// epoch first (proof that nobody took the key meanwhile). Commands
    /// taken meanwhile wait, as in a lapse.
    Doubted {
        /// The epoch of the term.
        epoch: u64,
        /// When the lapse came into doubt.
        since: Instant,
    },
    /// Not leading: deposed (another instance holds the key, or nobody
    /// does), stopped, or no term begun yet. The term ended on a connected
    /// connection, not in doubt: the acknowledgements of the commands taken
    /// in it reached the server, which still counts their deliveries as
    /// this worker's, so they are handed back with a NAK, at once.
    Ended,
    /// Ended in doubt ([`Term::Doubted`]), or while the connection was not
    /// connected: the server may have offered a command taken in the term
    /// to a successor already (its `ack_wait` passed without this
    /// worker's in-progress acks reaching it), and it applies a NAK or an
    /// ACK of an older delivery to the current one. So the commands of
    /// the term are handed back by sending nothing that reopens or ends
    /// them ([`HandBack::AfterAckWait`]).
    Lost,
}

/// How a command this worker will not run, or not finish, goes back to
/// the work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandBack {
    /// A NAK: another worker gets it at once. Only while the delivery this
    /// worker holds is the command's current one ([`Term::Ended`]).
    AtOnce,
    /// Left to the consumer's `ack_wait`: no NAK, ACK or TERM of a
    /// delivery a successor may have superseded. It is negatively
    /// acknowledged with a delay of `ack_wait`, which the server applies
    /// as an in-progress ack does: it never offers the command sooner
    /// than `ack_wait` after it lands, and a successor running it keeps it
    /// by its own in-progress acks. Unheld, the command is offered again
    /// `ack_wait` after it was handed back, at most.
    AfterAckWait,
}

impl HandBack {
    /// How a command of a term that stands at `term` goes back, with the
    /// worker's connection `connected` or not.
    fn of(term: Term, connected: bool) -> Self {
        match term {
            Term::Doubted { .. } | Term::Lost => Self::AfterAckWait,
            _ if !connected => Self::AfterAckWait,
            Term::Serving(_) | Term::Lapsed(_) | Term::Ended => Self::AtOnce,
        }
    }

    /// The outcome that hands a command back so, with `error` for the
    /// log, by a consumer whose `ack_wait` is `ack_wait`.
    fn outcome(self, ack_wait: Duration, error: String) -> Outcome {
        let delay = match self {
            Self::AtOnce => Duration::ZERO,
            Self::AfterAckWait => ack_wait,
        };
        Outcome::Retry { delay, error }
    }
}

/// How a term ends that last stood at `last`: [`Term::Lost`] after a
/// doubt or while not `connected`, else [`Term::Ended`].
fn term_end(last: Term, connected: bool) -> Term {
    match HandBack::of(last, connected) {
        HandBack::AtOnce => Term::Ended,
        HandBack::AfterAckWait => Term::Lost,
    }
}

/// Whether `client` is connected (its acknowledgements reach the server,
/// unless the connection is silent).
fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

impl LeaderOf {
    /// The epoch, while this instance leads with a valid lease.
    fn serving(&self) -> Option<u64> {
        self.leadership.serving_epoch()
    }

    /// Where the term that began at `epoch` stands. A lease that ran out
    /// is a lapse while the campaign names no other leader, is not leading
    /// at another epoch, and the election key still names this instance
    /// at `epoch`: a renewal that commits then lets it serve again at the
    /// same epoch. Anything else ends the term.
    fn standing(&self, epoch: u64) -> Term {
        match self.serving() {
            Some(now) if now == epoch => return Term::Serving(epoch),
            Some(_) => return Term::Ended,
            None => {}
        }
        match self.leadership.role() {
            Role::Standby { leader: Some(_) } => return Term::Ended,
            Role::Leader { epoch: now } if now != epoch => return Term::Ended,
            Role::Standby { leader: None } | Role::Leader { .. } => {}
        }
        let holder = match (&self.view, &self.key) {
            (Some(view), Some((service, group))) => view.leaders().leader(service, group),
            _ => None,
        };
        match holder {
            Some(h) if h.instance_id == self.instance_id && h.epoch == epoch => Term::Lapsed(epoch),
            _ => Term::Ended,
        }
    }

    /// Whether the worker's connection is connected (the view it keeps
    /// can show a takeover).
    fn connected(&self) -> bool {
        self.client.as_ref().is_none_or(is_connected)
    }

    /// Waits for a role change, or at most [`LEADERSHIP_CHECK`].
    async fn next_check(&mut self) {
        tokio::select! {
            changed = self.roles.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(LEADERSHIP_CHECK).await;
                }
            }
            () = tokio::time::sleep(LEADERSHIP_CHECK) => {}
        }
    }
}

/// How often a leader-only worker checks its lease between role changes:
/// a lease that lapses unrenewed stops serving without one.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(50);

/// A lapse of one term, as [`follow_leader`] follows it: since when it
/// lapsed, and since when that lapse is in doubt.
#[derive(Debug, Default)]
struct Lapse {
    began: Option<Instant>,
    doubted: Option<Instant>,
}

impl Lapse {
    /// Where the term stands, from what [`LeaderOf::standing`] says
    /// (`standing`), at `now`: a lapse longer than `lease`, or one while
    /// the connection is not `connected`, is in doubt from then on, until
    /// the instance serves again.
    fn judge(&mut self, standing: Term, now: Instant, lease: Duration, connected: bool) -> Term {
        match standing {
            Term::Lapsed(epoch) => {
                let began = *self.began.get_or_insert(now);
                if self.doubted.is_none()
                    && (!connected || now.saturating_duration_since(began) >= lease)
                {
                    self.doubted = Some(now);
                }
                match self.doubted {
                    Some(since) => Term::Doubted { epoch, since },
                    None => Term::Lapsed(epoch),
                }
            }
            other => {
                *self = Self::default();
                other
            }
        }
    }
}

impl fmt::Debug for CommandWorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandWorkerBuilder")
            .field("service", &self.service)
            .field("commands", &self.handlers.keys().collect::<Vec<_>>())
            .field("leader_only", &self.leader.is_some())
            .finish()
    }
}

impl Commands {
    /// Starts declaring the command handlers of `service`.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::commands::CommandError> {
    /// use aegis_sdk::commands::{Command, Progress};
    ///
    /// let worker = conn
    ///     .commands()
    ///     .worker("order-service")
    ///     .handler("rebuild_book", |cmd: Command<serde_json::Value>, progress: Progress| async move {
    ///         progress.report(50.0, "half way").await;
    ///         Ok(serde_json::json!({"rebuilt": cmd.payload}))
    ///     })
    ///     .start()
    ///     .await?;
    /// worker.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn worker(&self, service: &str) -> CommandWorkerBuilder {
        CommandWorkerBuilder {
            commands: self.clone(),
            service: service.to_owned(),
            handlers: HashMap::new(),
            declared: Vec::new(),
            ack_wait: Duration::from_secs(30),
            max_deliver: DEFAULT_MAX_DELIVER,
            concurrency: 1,
            leader: None,
            instance: None,
        }
    }
}

impl CommandWorkerBuilder {
    /// Adds a handler for `command`. `Ok(result)` completes the command;
    /// `Err(WireError)` fails it; either way the sender is told.
    ///
    /// While the worker runs, the instances of its service on its
    /// connection list the command in `$SRV.INFO`, with the JSON Schema of
    /// `T` (derived, as a method's request is: `T` implements
    /// [`JsonSchema`]) and `T`'s doc comment as its description.
    pub fn handler<T, R, F, Fut>(mut self, command: &str, f: F) -> Self
    where
        T: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Command<T>, Progress) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, WireError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let erased: Erased = Arc::new(move |id, name, body, epoch, progress| {
            let f = f.clone();
            async move {
                let payload: T = serde_json::from_slice(&body).map_err(|e| {
                    WireError::invalid_request(format!("cannot decode the command: {e}"))
                })?;
                let result = f(
                    Command {
                        id,
                        name,
                        payload,
                        epoch,
                    },
                    progress,
                )
                .await?;
                serde_json::to_value(result)
                    .map_err(|e| WireError::internal(format!("cannot encode the result: {e}")))
            }
            .boxed()
        });
        self.handlers.insert(command.to_owned(), erased);
        let payload_schema = schemars::schema_for!(T).to_value();
        let info = CommandInfo {
            name: command.to_owned(),
            description: payload_schema
                .get("description")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            payload_schema,
            leader_only: false,
        };
        match self.declared.iter_mut().find(|c| c.name == command) {
            Some(declared) => *declared = info,
            None => self.declared.push(info),
        }
        self
    }

    /// How long the server waits for an acknowledgement before it offers a
    /// command to another worker (default 30 s, from 300 ms to 30 days). A running
    /// handler keeps extending it, so this bounds how long a crashed worker
    /// holds a command, not how long a command may run.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Deliveries of one command before it is given up on (default
    /// [`DEFAULT_MAX_DELIVER`], at least 1). A command is redelivered only
    /// when its worker died (or hung) holding it, so this bounds how many
    /// times a command that crashes its process runs; then the server's
    /// advisory lands in `DEAD_LETTER`. A worker without a handler for a
    /// command (an older version, during a rolling upgrade) hands it back
    /// for another worker, which also uses a delivery; the last one, or
    /// one too close to the command's deadline to hand it back again,
    /// answers NOT_FOUND.
    ///
    /// It is set on the service's consumer, which all its workers share,
    /// at every start. Which delivery is the last is decided by the
    /// consumer's value on the server (read at most 2 s before), which a
    /// worker of another version or an operator may have changed since.
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.max_deliver = n;
        self
    }

    /// The instance id this worker names in every reply it sends (its
    /// progress reports and the result, in the `Aegis-Instance` header),
    /// so the sender of a command can tell which worker runs it, and that
    /// a command taken again after its worker went silent runs on another
    /// one. Same rules as a service's instance id
    /// (`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`); usually the same value as
    /// the service's, which it then also logs under (see
    /// [`log_layer`](crate::telemetry::log_layer)).
    ///
    /// Optional. Default: the instance of
    /// [`leader_of`](Self::leader_of), else a fresh
    /// [`default_instance_id`](crate::default_instance_id) (host name plus
    /// a random suffix) at each `start`. With `leader_of`, it must be that
    /// instance's id.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::commands::CommandError> {
    /// use aegis_sdk::commands::{Command, Progress};
    ///
    /// let worker = conn
    ///     .commands()
    ///     .worker("order-service")
    ///     .instance_id("order-1")
    ///     .handler("rebuild_book", |_: Command<serde_json::Value>, progress: Progress| async move {
    ///         // The sender hears this from "order-1".
    ///         progress.report(50.0, "half way").await;
    ///         Ok(serde_json::json!({"rebuilt_by": progress.instance_id()}))
    ///     })
    ///     .start()
    ///     .await?;
    /// # worker.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// Commands run at once (default 1; at most 1024). The worker pulls
    /// only as many commands as it has free handlers.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Takes commands only while `service`, a sticky single-active
    /// instance (started with
    /// [`single_active`](crate::rpc::ServiceBuilder::single_active)), is its
    /// group's leader: for commands that act on the state the leader keeps.
    ///
    /// Without it, every instance that starts a worker takes commands,
    /// standbys included: the work queue hands each command to whichever
    /// worker asks first. With it, a standby's worker pulls nothing; the
    /// commands wait in the work queue for the leader, within their
    /// deadline (none leads by then: [`CommandError::NotTaken`]).
    ///
    /// When its instance's lease runs out unrenewed (its renewals were
    /// answered late) while the election key still names it, the instance
    /// serves nothing until a renewal commits and then serves again at the
    /// same epoch: a lapse, not a deposal. Meanwhile the worker starts no
    /// command: one it takes waits for the lease, and runs as soon as the
    /// instance serves again. The commands it is running go on while the
    /// lapse can be told from a takeover: for one lease (the election's
    /// [`LeaseConfig::lease`](crate::election::LeaseConfig::lease)) from
    /// when the instance stopped serving, while the worker's connection is
    /// connected. Past that, or while it is not connected (a partition, a
    /// silent connection: the worker cannot see a successor take the key),
    /// the 10 s clock of a deposal runs: a command still running 10 s later
    /// is dropped and handed back, unless the instance serves again at the
    /// same epoch first (nobody took the key meanwhile). So a command runs
    /// on at most a lease plus 10 s after its instance stopped serving,
    /// even on an instance cut off from NATS.
    ///
    /// When its instance is deposed (the election key names another
    /// instance or was deleted, or its service stopped), the worker stops
    /// pulling and lets the commands it is running finish, for at most
    /// 10 s, as at [`shutdown`](CommandWorker::shutdown); one still running
    /// then is handed back, to run again on the new leader. A command it
    /// took just as it was deposed, or that waited for a lease that did not
    /// come back, is handed back unrun. A service dropped without a stop
    /// leaves its key to lapse: its worker runs nothing new, and hands its
    /// running commands back as above, 10 s after a lease or after a
    /// successor takes the key, whichever comes first. It pulls
    /// again as soon as its instance leads again. Each command carries the
    /// epoch it was taken under ([`Command::epoch`]).
    ///
    /// How a command goes back depends on how the term ended. After a
    /// deposal seen on a connected connection with no doubt before it, or
    /// a stop, the worker hands it back at once (a NAK): the new leader
    /// gets it right away. After a lapse in doubt, or a term that ended
    /// while the connection was not connected, the successor may already
    /// run the command (the server offered it again once this worker's
    /// in-progress acks stopped reaching it), and the server would apply a
    /// NAK or an ACK from this worker to the successor's delivery: it
    /// would hand the command out a third time, or delete it while the
    /// successor runs it. So the worker sends nothing that reopens or ends
    /// the command (only a NAK delayed by `ack_wait`, which the server
    /// takes as an in-progress ack), and its `ack_wait` returns it: the
    /// new leader gets it
    /// [`ack_wait`](Self::ack_wait) after the hand-back at most, and a
    /// successor that runs it already keeps it. Likewise a command whose
    /// deadline passed while it waited in such a term is left to its
    /// `ack_wait` unanswered, not acknowledged as expired (except on its
    /// last delivery, which no successor can hold).
    ///
    /// [`start`](Self::start) fails with [`CommandError::InvalidOptions`]
    /// when `service` is not single-active.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// use aegis_sdk::commands::{Command, Progress};
    /// use serde_json::{Value, json};
    ///
    /// let service = conn
    ///     .service("order-service", "1.0.0")
    ///     .single_active("default")
    ///     .handler("place", |order: Value| async move { Ok(order) })
    ///     .start()
    ///     .await?;
    /// let worker = conn
    ///     .commands()
    ///     .worker("order-service")
    ///     .leader_of(&service)
    ///     .handler("rebuild_book", |cmd: Command<Value>, _: Progress| async move {
    ///         Ok(json!({"rebuilt_at_epoch": cmd.epoch}))
    ///     })
    ///     .start()
    ///     .await?;
    /// // ...
    /// worker.shutdown().await;
    /// service.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn leader_of(mut self, service: &Service) -> Self {
        self.leader = Some(match service.election() {
            Some(election) => Ok(LeaderOf {
                roles: election.roles(),
                leadership: election.leadership(),
                instance_id: service.instance_id().to_owned(),
                key: subjects::parse_election_key(election.key()),
                view: None,
                lease: election.lease_config().lease,
                client: None,
                metrics: service.metrics().clone(),
            }),
            None => Err(format!(
                "leader_of: service `{}` was not started with single_active, so it has no leader",
                service.name()
            )),
        });
        self
    }

    /// Creates the stream and the service's durable consumer and starts working.
    ///
    /// # Errors
    /// [`CommandError`]: invalid names (the service's, a command's, the
    /// instance id) or options (an [`instance_id`](Self::instance_id) that
    /// is not the [`leader_of`](Self::leader_of) instance's), before any
    /// I/O; JetStream refusing.
    pub async fn start(self) -> Result<CommandWorker, CommandError> {
        let mut leader = self
            .leader
            .transpose()
            .map_err(CommandError::InvalidOptions)?;
        names::validate_service_name(&self.service)?;
        for name in self.handlers.keys() {
            names::validate_command_name(name)?;
        }
        if let Some(instance) = &self.instance {
            names::validate_instance_id(instance)?;
        }
        // The instance its lines go under, when it is told which.
        let owner_instance = match (&self.instance, &leader) {
            (Some(id), Some(leader)) if *id != leader.instance_id => {
                return Err(CommandError::InvalidOptions(format!(
                    "instance_id `{id}` is not the instance it follows with leader_of (`{}`)",
                    leader.instance_id
                )));
            }
            (Some(id), _) => Some(id.clone()),
            (None, Some(leader)) => Some(leader.instance_id.clone()),
            (None, None) => None,
        };
        let instance: Arc<str> = owner_instance
            .clone()
            .unwrap_or_else(crate::default_instance_id)
            .into();
        crate::pull::check_options(self.concurrency, self.max_deliver, self.ack_wait)
            .map_err(CommandError::InvalidOptions)?;
        let conn = &self.commands.conn;
        if let Some(leader) = &mut leader {
            // Tells a lapse of the lease from a deposal: who holds the key.
            match conn.election_view().await {
                Ok(view) => {
                    leader.view = Some(view.clone());
                    leader.client = Some(conn.client().clone());
                }
                Err(e) => {
                    warn!(service = %self.service, error = %crate::startup::Causes(&e), "cannot watch the election keys; a lapse of the lease will count as a deposal");
                }
            }
        }
        let name = consumer_name(&self.service);
        let js = conn.jetstream().clone();
        let aegis = conn.config().clone();
        let durable = Durable {
            ensure_stream: Arc::new(move || {
                let (js, aegis) = (js.clone(), aegis.clone());
                async move {
                    crate::pull::ensure_dead_letters(&js, &aegis).await;
                    ensure_commands_stream(&js, &aegis)
                        .await
                        .map_err(async_nats::Error::from)
                }
                .boxed()
            }),
            config: pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("Aegis commands of {}", self.service)),
                filter_subject: subjects::command_filter(&self.service),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                max_deliver: i64::from(self.max_deliver),
                ..Default::default()
            },
            confirm_acks: true,
            concurrency: self.concurrency,
        };
        let consumer = durable
            .open()
            .await
            .map_err(|source| CommandError::Consumer {
                name: name.clone(),
                source,
            })?;
        let client = conn.client().clone();
        let handlers = Arc::new(self.handlers);
        let (terms, _) = watch::channel(Term::Ended);
        let following = leader
            .as_ref()
            .map(|l| (l.leadership.clone(), terms.subscribe(), l.metrics.clone()));
        let replier = instance.clone();
        let run_one: crate::pull::Handler = Arc::new(move |message, limits| {
            run_one(
                message,
                client.clone(),
                replier.clone(),
                handlers.clone(),
                limits,
                following.clone(),
            )
            .boxed()
        });
        let tasks = Background::new();
        let span = info_span!("commands", service = %self.service);
        let leader_only = leader.is_some();
        // Listed by the instance it follows, or by every instance of its
        // service on its connection.
        let mut declared = self.declared;
        for c in &mut declared {
            c.leader_only = leader_only;
        }
        let listing = conn.command_catalog().list(
            &self.service,
            leader.as_ref().map(|l| l.instance_id.as_str()),
            declared,
        );
        // Its lines (the loop's and the handlers') are its service's.
        let service = self.service.clone();
        let owned = |instance: Option<&str>, work: futures::future::BoxFuture<'static, ()>| {
            crate::telemetry::log_layer::owned_by_name(&service, instance, work)
        };
        match leader {
            Some(leader) => {
                tasks.spawn(|cancel| {
                    owned(
                        owner_instance.as_deref(),
                        follow_leader(durable, consumer, run_one, leader, terms, cancel)
                            .instrument(span)
                            .boxed(),
                    )
                });
            }
            None => tasks.spawn(|cancel| {
                owned(
                    owner_instance.as_deref(),
                    crate::pull::run(durable, consumer, run_one, cancel)
                        .instrument(span)
                        .boxed(),
                )
            }),
        }
        info!(service = %self.service, consumer = %name, instance = %instance, leader_only, "command worker started");
        Ok(CommandWorker {
            tasks,
            _listing: listing,
        })
    }
}

/// Runs the pull loop of a leader-only worker while its instance leads:
/// one loop per term, stopped when the term ends (it lets the commands
/// running finish, as a stop does) and started again on the next. A lapse
/// of the lease does not end the term: the loop goes on, its commands
/// running go on, and those it takes wait (in [`run_one`]) until the
/// instance serves again at the same epoch, or the term ends. `terms`
/// tells [`run_one`] where the term stands.
async fn follow_leader(
    durable: Durable,
    consumer: consumer::PullConsumer,
    handler: crate::pull::Handler,
    mut leader: LeaderOf,
    terms: watch::Sender<Term>,
    cancel: CancellationToken,
) {
    loop {
        let epoch = loop {
            if let Some(epoch) = leader.serving() {
                break epoch;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = leader.next_check() => {}
            }
        };
        info!(epoch, "leading: taking commands");
        terms.send_replace(Term::Serving(epoch));
        let term = cancel.child_token();
        let run = crate::pull::run(
            durable.clone(),
            consumer.clone(),
            handler.clone(),
            term.clone(),
        );
        tokio::pin!(run);
        let mut lapse = Lapse::default();
        let ended = async {
            loop {
                let standing = leader.standing(epoch);
                if standing == Term::Ended {
                    return;
                }
                let standing =
                    lapse.judge(standing, Instant::now(), leader.lease, leader.connected());
                let was = *terms.borrow();
                if was != standing {
                    terms.send_replace(standing);
                }
                match (was, standing) {
                    (Term::Serving(_), Term::Lapsed(_)) => info!(
                        epoch,
                        "lease ran out unrenewed, the key still this instance's: running no new command until it is renewed; the commands running go on"
                    ),
                    (Term::Serving(_) | Term::Lapsed(_), Term::Doubted { .. }) => warn!(
                        epoch,
                        connected = leader.connected(),
                        "lease not renewed for a lease, or the connection is down: a successor may lead unseen; the commands running are handed back in {HANDLER_STOP_WAIT:?} unless the lease is renewed first"
                    ),
                    (Term::Lapsed(_) | Term::Doubted { .. }, Term::Serving(_)) => {
                        info!(epoch, "lease renewed: running commands again")
                    }
                    _ => {}
                }
                leader.next_check().await;
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // Commands waiting for the lease are handed back now, as
                // the term's end says. Read apart: the borrow would block
                // the send.
                let end = term_end(*terms.borrow(), leader.connected());
                terms.send_replace(end);
                run.await;
                return;
            }
            // Only the worker's own stop ends a term's loop.
            () = &mut run => return,
            () = ended => {
                info!(epoch, "no longer leading: taking no more commands");
                // Read apart: the borrow would block the send.
                let end = term_end(*terms.borrow(), leader.connected());
                terms.send_replace(end);
                term.cancel();
                run.await;
            }
        }
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Shortest and longest time a worker holds a command it has no handler
/// for before handing it back.
const PASS_ON_MIN: Duration = Duration::from_millis(100);
const PASS_ON_MAX: Duration = Duration::from_secs(2);
/// How much of its deadline a command this worker has no handler for must
/// still have after the hold: the NOT_FOUND that ends it otherwise has to
/// reach the sender before the sender gives up.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// How long to hold a command this worker has no handler for before
/// handing it back to the other workers; `None` when it is to be answered
/// NOT_FOUND now.
///
/// Workers of one service share one consumer, and during a rolling
/// upgrade only the newer ones know a new command. The server offers a
/// command handed back to the pull requests waiting, in turn; one held
/// keeps this worker's slot busy, so its request is not among them, and a
/// worker idle with the handler gets it. The first hold is short (the
/// usual case: such a worker is idle). A command back again found them
/// busy: each offer uses one of the `max_deliver` deliveries, so the holds
/// spread those left over the time left before the deadline (`left`;
/// `None`: no deadline). The last delivery, or the last moment that still
/// lets the answer arrive in time, answers NOT_FOUND: a command no worker
/// knows ends in a clear error before its deadline, not in a timeout or a
/// dead letter. A `max_deliver` of 0 or less (no limit on the server)
/// has no last delivery: the holds spread as if [`DEFAULT_MAX_DELIVER`]
/// applied (at least one more offer), and only the deadline ends them.
fn pass_on(delivered: i64, max_deliver: i64, left: Option<Duration>) -> Option<Duration> {
    let deliveries_left = if max_deliver <= 0 {
        u32::try_from(i64::from(DEFAULT_MAX_DELIVER).saturating_sub(delivered))
            .unwrap_or(0)
            .max(1)
    } else {
        u32::try_from(max_deliver.saturating_sub(delivered))
            .ok()
            .filter(|n| *n > 0)?
    };
    let spread = left.map_or(PASS_ON_MAX, |left| left / (deliveries_left + 1));
    let hold = if delivered <= 1 {
        PASS_ON_MIN
    } else {
        spread.clamp(PASS_ON_MIN, PASS_ON_MAX)
    };
    match left {
        Some(left) if left < hold + ANSWER_MARGIN => None,
        _ => Some(hold),
    }
}

/// Runs one command and reports its end to the sender. Whatever the handler
/// says, the command is done (a failure is its result); only a crash of the
/// process leaves it to be delivered again. A command this worker has no
/// handler for is left to other workers while [`pass_on`] allows. With
/// `following` (a leader-only worker: the leadership, and where its term
/// stands), one taken while the lease has lapsed waits until this instance
/// serves again; one taken while this instance does not lead (it was
/// deposed as the command arrived, or while it waited) is handed back
/// unrun, as [`HandBack`] says. One whose deadline passed while it waited
/// in a term in doubt is handed back too, unanswered, unless this is its
/// last delivery: a successor may run it.
///
/// A command past its deadline is not run. On its first delivery it is
/// answered "not run" ([`HEADER_NOT_RUN`]): no worker took it before. On
/// a later one a worker did (one that died holding it, as a crashed
/// leader does, or one that handed it back, which cannot be told apart
/// here), so it may have run: it is answered TIMEOUT, "may have run",
/// without the header, and the WARN says so.
///
/// The last delivery is the last the consumer on the server allows
/// (`limits`), which another worker's start or an operator may have
/// changed since this worker started, not this worker's own option: the
/// pull loop dead-letters a command handed back on the delivery it deems
/// the last, and the sender of a command that never ran would hear
/// nothing until its deadline, then that it may have run.
async fn run_one(
    msg: Arc<async_nats::jetstream::Message>,
    client: Client,
    instance: Arc<str>,
    handlers: Arc<HashMap<String, Erased>>,
    limits: crate::pull::DeliveryLimits,
    following: Option<(Leadership, watch::Receiver<Term>, Arc<InstanceMetrics>)>,
) -> Outcome {
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let id = header(HEADER_COMMAND_ID).unwrap_or_default();
    let reply_to = header(HEADER_REPLY_TO);
    let name = msg
        .subject
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut now = chrono::Utc::now();
    let deadline = header(HEADER_DEADLINE)
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d).ok())
        .map(|d| d.with_timezone(&chrono::Utc));
    let span = info_span!("command", command = %name, id = %id);
    let expired = |now| deadline.is_some_and(|d| d < now);
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    // Only a first delivery proves that no worker took the command before
    // (one that died holding it, or one stopped while running it, may have
    // run part of it; the server offers it again at its ack_wait, which is
    // at or after its deadline when the timeout is no longer).
    let first_delivery = msg.info().is_ok_and(|i| i.delivered == 1);
    let answer_expired = || async {
        if !first_delivery {
            span.in_scope(|| {
                warn!(
                    delivered,
                    "command expired after a worker had taken it (this is a later delivery): it may have run; not running it again"
                )
            });
            // No "not run" header: the sender reports that it may have run.
            let reply = CommandReply::Failed {
                error: WireError::timeout(format!(
                    "its deadline passed before it was done: a worker took it earlier (this is delivery {delivered}), so it may have run; check its effect before sending it again"
                )),
            };
            send_reply(&client, reply_to.as_deref(), &reply, None, &instance).await;
            return Outcome::Done;
        }
        span.in_scope(|| info!("command expired before it was picked up; not running it"));
        // Said in a header, so the sender tells "never ran" from a
        // handler's own TIMEOUT error.
        let reply = CommandReply::Failed {
            error: WireError::timeout("the command expired before a worker picked it up"),
        };
        send_reply(
            &client,
            reply_to.as_deref(),
            &reply,
            Some("expired"),
            &instance,
        )
        .await;
        Outcome::Done
    };
    if expired(now) {
        return answer_expired().await;
    }
    let watching = following.clone();
    // `Ok(None)`: not leader-only; `Err`: not to run here.
    let epoch = match following {
        None => Ok(None),
        Some((leadership, terms, metrics)) => match leadership.serving_epoch() {
            Some(epoch) => Ok(Some(epoch)),
            None => {
                let left = deadline.map(|d| (d - now).to_std().unwrap_or_default());
                span.in_scope(|| {
                    debug!("taken while this instance does not serve; waiting for its lease")
                });
                // Received and not started: in the service's queue depth
                // until it runs or goes back.
                let queued = metrics.enqueue();
                let standing = terms.clone();
                let waited = match left {
                    Some(left) => tokio::time::timeout(left, serving_again(&leadership, terms))
                        .await
                        .ok(),
                    None => Some(serving_again(&leadership, terms).await),
                };
                drop(queued);
                now = chrono::Utc::now();
                let hand_back = match waited {
                    Some(Err(hand_back)) => hand_back,
                    _ => HandBack::of(*standing.borrow(), is_connected(&client)),
                };
                if expired(now) || waited.is_none() {
                    // Its deadline passed while it waited. In a term in
                    // doubt a successor may run it: its ACK would end the
                    // successor's delivery.
                    if hand_back == HandBack::AfterAckWait && !limits.is_last(delivered).await {
                        span.in_scope(|| {
                            debug!("its deadline passed while this instance's term was in doubt; leaving it to its ack_wait, unanswered")
                        });
                        return hand_back.outcome(
                            limits.ack_wait().await,
                            "expired while its instance's term was in doubt".to_owned(),
                        );
                    }
                    return answer_expired().await;
                }
                waited.unwrap_or(Err(hand_back)).map(Some)
            }
        },
    };
    let reply = if let Err(hand_back) = epoch {
        if !limits.is_last(delivered).await {
            span.in_scope(|| {
                debug!(
                    ?hand_back,
                    "taken just as this instance stopped leading; handing it back unrun"
                )
            });
            if hand_back == HandBack::AtOnce {
                // Held briefly, so this worker's own pull (stopping) does
                // not take it again.
                tokio::time::sleep(PASS_ON_MIN).await;
            }
            return hand_back.outcome(
                limits.ack_wait().await,
                "taken by an instance that no longer leads".to_owned(),
            );
        }
        CommandReply::Failed {
            error: WireError::not_active(
                "the command's last delivery reached an instance that no longer leads; it did not run",
            ),
        }
    } else if let Some(handler) = handlers.get(&name) {
        let progress = Progress {
            client: client.clone(),
            reply_to: reply_to.clone(),
            acker: msg.clone(),
            instance: instance.clone(),
        };
        let fut = handler(
            id,
            name.clone(),
            msg.payload.clone(),
            epoch.ok().flatten(),
            progress,
        );
        let run = AssertUnwindSafe(fut)
            .catch_unwind()
            .instrument(span.clone());
        let ran = match watching {
            None => Some(run.await),
            Some((leadership, terms, _)) => tokio::select! {
                ran = run => Some(ran),
                () = doubt_runs_out(&leadership, terms) => None,
            },
        };
        match ran {
            None => {
                span.in_scope(|| {
                    warn!(
                        "this instance has not served for {HANDLER_STOP_WAIT:?} since its lapse came into doubt: a successor may lead; dropping the command's handler and handing the command back (the server offers it again after its ack_wait)"
                    )
                });
                // A successor may hold the command's current delivery.
                return HandBack::AfterAckWait.outcome(
                    limits.ack_wait().await,
                    "handed back by an instance that may no longer lead".to_owned(),
                );
            }
            Some(Ok(Ok(result))) => CommandReply::Completed { result },
            Some(Ok(Err(error))) => CommandReply::Failed { error },
            Some(Err(panic)) => {
                let said = crate::task::panic_text(&*panic);
                span.in_scope(|| warn!(panic = said, "command handler panicked"));
                CommandReply::Failed {
                    error: WireError::internal("the command handler panicked"),
                }
            }
        }
    } else {
        let left = deadline.map(|d| (d - now).to_std().unwrap_or_default());
        if let Some(hold) = pass_on(delivered, limits.max_deliver().await, left) {
            span.in_scope(|| {
                debug!(
                    ?hold,
                    delivered, "no handler here; handing the command back for another worker"
                )
            });
            tokio::time::sleep(hold).await;
            return Outcome::Retry {
                delay: Duration::ZERO,
                error: format!("no handler for command `{name}`"),
            };
        }
        CommandReply::Failed {
            error: WireError::not_found(format!("no handler for command `{name}`")),
        }
    };
    send_reply(&client, reply_to.as_deref(), &reply, None, &instance).await;
    Outcome::Done
}

/// Waits until this instance serves (its epoch), or until its worker's
/// term ends (how its commands go back): what a command taken during a
/// lapse of the lease waits for.
async fn serving_again(
    leadership: &Leadership,
    mut terms: watch::Receiver<Term>,
) -> Result<u64, HandBack> {
    loop {
        if let Some(epoch) = leadership.serving_epoch() {
            return Ok(epoch);
        }
        match *terms.borrow_and_update() {
            Term::Ended => return Err(HandBack::AtOnce),
            Term::Lost => return Err(HandBack::AfterAckWait),
            Term::Serving(_) | Term::Lapsed(_) | Term::Doubted { .. } => {}
        }
        tokio::select! {
            changed = terms.changed() => {
                if changed.is_err() {
                    // The worker is gone: as its term last stood.
                    return Err(HandBack::of(*terms.borrow(), true));
                }
            }
            () = tokio::time::sleep(LEADERSHIP_CHECK) => {}
        }
    }
}

/// Resolves when a command running under a leader-only worker is to be
/// handed back: [`HANDLER_STOP_WAIT`] after its term's lapse came into
/// doubt ([`Term::Doubted`]), unless the instance served again before.
/// A deposal that follows the doubt keeps its clock; one without a doubt
/// before it is the pull loop's stop, which has its own. Never resolves
/// otherwise.
async fn doubt_runs_out(leadership: &Leadership, mut terms: watch::Receiver<Term>) {
    let mut due: Option<Instant> = None;
    loop {
        match *terms.borrow_and_update() {
            Term::Doubted { since, .. } => due = Some(since + HANDLER_STOP_WAIT),
            Term::Serving(_) | Term::Lapsed(_) => due = None,
            Term::Ended | Term::Lost => {}
        }
        let clock = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = terms.changed() => {
                if changed.is_err() {
                    // The worker is gone: its pull loop's stop bounds
                    // the command.
                    std::future::pending::<()>().await;
                }
            }
            () = clock => {
                if leadership.serving_epoch().is_none() {
                    return;
                }
                // Serving again: the term says so within a check.
                tokio::time::sleep(LEADERSHIP_CHECK).await;
            }
        }
    }
}

/// Sends `reply` to the sender, naming this worker's `instance` in
/// [`HEADER_INSTANCE`]; `not_run` (why) marks a command skipped unrun with
/// [`HEADER_NOT_RUN`].
async fn send_reply(
    client: &Client,
    reply_to: Option<&str>,
    reply: &CommandReply,
    not_run: Option<&str>,
    instance: &str,
) {
    let Some(reply_to) = reply_to else { return };
    match serde_json::to_vec(reply) {
        Ok(body) => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(HEADER_INSTANCE, instance);
            if let Some(why) = not_run {
                headers.insert(HEADER_NOT_RUN, why);
            }
            let sent = client
                .publish_with_headers(reply_to.to_owned(), headers, body.into())
                .await;
            if let Err(e) = sent {
                debug!(error = %crate::startup::Causes(&e), "could not send a command reply");
            }
        }
        Err(e) => warn!(error = %crate::startup::Causes(&e), "cannot encode a command reply"),
    }
}

/// A running command worker; [`shutdown`](Self::shutdown) finishes the
/// commands in progress first, for at most 10 s. Dropping it stops taking
/// commands without waiting: those running finish in the background, for
/// at most 10 s as well.
#[derive(Debug)]
#[must_use = "dropping the worker stops taking commands: keep it, and call shutdown() to stop"]
pub struct CommandWorker {
    tasks: Background,
    /// Its commands in `$SRV.INFO`, unlisted when it stops.
    _listing: Listing,
}

impl CommandWorker {
    /// Stops taking commands and waits, at most 10 s, for those in
    /// progress. One still running then is abandoned (logged) and handed
    /// back at once to another worker of the service, where it runs again:
    /// a handler must bear being cancelled and run twice.
    pub async fn shutdown(self) {
        let Self {
            tasks,
            _listing: listing,
        } = self;
        // Taking no more commands: no longer listed.
        drop(listing);
        tasks.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_command_without_a_handler_here_is_handed_back_while_its_deadline_allows() {
        // First time: a short hold (an idle worker with the handler takes it).
        assert_eq!(pass_on(1, 5, Some(10 * SECOND)), Some(PASS_ON_MIN));
        assert_eq!(pass_on(1, 5, None), Some(PASS_ON_MIN));
        // Back again: the three offers left share the eight seconds left...
        assert_eq!(pass_on(2, 5, Some(8 * SECOND)), Some(2 * SECOND));
        // ...never holding it longer than the longest hold, nor shorter
        // than the shortest.
        assert_eq!(pass_on(2, 5, None), Some(PASS_ON_MAX));
        assert_eq!(pass_on(2, 5, Some(3600 * SECOND)), Some(PASS_ON_MAX));
        assert_eq!(
            pass_on(2, 5, Some(Duration::from_millis(400))),
            Some(PASS_ON_MIN)
        );
    }

    #[test]
    fn a_lapse_longer_than_a_lease_or_while_disconnected_is_in_doubt_until_it_serves() {
        let lease = Duration::from_millis(400);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut lapse = Lapse::default();
        // A short lapse on a connected connection rides out.
        assert_eq!(
            lapse.judge(Term::Lapsed(7), ms(0), lease, true),
            Term::Lapsed(7)
        );
        assert_eq!(
            lapse.judge(Term::Lapsed(7), ms(399), lease, true),
            Term::Lapsed(7)
        );
        // A lease into it, it is in doubt, and stays so from then.
        let doubted = Term::Doubted {
            epoch: 7,
            since: ms(400),
        };
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(400), lease, true), doubted);
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(5000), lease, true), doubted);
        // Serving again ends it; the next lapse counts afresh.
        assert_eq!(
            lapse.judge(Term::Serving(7), ms(5100), lease, true),
            Term::Serving(7)
        );
        assert_eq!(
            lapse.judge(Term::Lapsed(7), ms(5200), lease, true),
            Term::Lapsed(7)
        );
        // Disconnected: in doubt at once, and still once connected again.
        let mut lapse = Lapse::default();
        let doubted = Term::Doubted {
            epoch: 7,
            since: ms(10),
        };
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(10), lease, false), doubted);
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(20), lease, true), doubted);
        assert_eq!(lapse.judge(Term::Ended, ms(30), lease, true), Term::Ended);
    }

    #[test]
    fn a_term_ended_in_doubt_or_while_disconnected_hands_its_commands_back_by_ack_wait() {
        let doubted = Term::Doubted {
            epoch: 7,
            since: Instant::now(),
        };
        // A clean deposal or stop, on a connected connection: a NAK at once.
        assert_eq!(term_end(Term::Serving(7), true), Term::Ended);
        assert_eq!(term_end(Term::Lapsed(7), true), Term::Ended);
        assert_eq!(HandBack::of(Term::Ended, true), HandBack::AtOnce);
        // After a doubt, or while disconnected: nothing that reopens it.
        assert_eq!(term_end(doubted, true), Term::Lost);
        assert_eq!(term_end(Term::Serving(7), false), Term::Lost);
        assert_eq!(HandBack::of(Term::Lost, true), HandBack::AfterAckWait);
        assert_eq!(HandBack::of(doubted, true), HandBack::AfterAckWait);
        // Left to ack_wait: a NAK the server takes as an in-progress ack.
        let ack_wait = Duration::from_secs(5);
        match HandBack::AfterAckWait.outcome(ack_wait, String::new()) {
            Outcome::Retry { delay, .. } => assert_eq!(delay, ack_wait),
            _ => panic!("not a hand-back"),
        }
        match HandBack::AtOnce.outcome(ack_wait, String::new()) {
            Outcome::Retry { delay, .. } => assert_eq!(delay, Duration::ZERO),
            _ => panic!("not a hand-back"),
        }
    }

    #[test]
    fn a_command_no_worker_handles_is_answered_before_it_expires() {
        // The last delivery answers, whatever the time left.
        assert_eq!(pass_on(5, 5, None), None);
        assert_eq!(pass_on(1, 1, Some(3600 * SECOND)), None);
        assert_eq!(pass_on(9, 5, None), None);
        // No limit on the server: never the last delivery, only the
        // deadline ends the holds.
        assert_eq!(pass_on(1, -1, Some(10 * SECOND)), Some(PASS_ON_MIN));
        assert_eq!(pass_on(1, 0, None), Some(PASS_ON_MIN));
        assert_eq!(pass_on(40, -1, None), Some(PASS_ON_MAX));
        assert_eq!(pass_on(40, -1, Some(Duration::from_millis(300))), None);
        // Too little time left for another offer and the answer.
        assert_eq!(pass_on(1, 5, Some(Duration::from_millis(300))), None);
        assert_eq!(pass_on(1, 5, Some(Duration::ZERO)), None);
        // Each offer leaves room for the answer before the deadline.
        for left_ms in (0..20_000).step_by(37) {
            let left = Duration::from_millis(left_ms);
            for delivered in 1..=5 {
                if let Some(pause) = pass_on(delivered, 5, Some(left)) {
                    assert!(pause + ANSWER_MARGIN <= left, "{left:?} {delivered}");
                }
            }
        }
    }
}
