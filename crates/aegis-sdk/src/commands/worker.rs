//! Consuming the commands of a service and reporting back to the sender.
//!
//! This file holds the handler's view ([`Command`], [`Progress`]), the
//! builder and its `start`, and the running [`CommandWorker`]; two parts
//! live apart:
//!
//! - `run`: running one command a worker took and answering its sender,
//!   or handing it back (no handler here, its deadline passed, its
//!   instance no longer leads).
//! - `term`: a [`leader_of`](CommandWorkerBuilder::leader_of) worker's
//!   term: where its instance stands in the leadership it follows (serving,
//!   lapsed, in doubt, ended), the pull loop that runs while it leads, and
//!   how a command goes back when the term lapses or ends.

mod run;
mod term;

use std::{collections::HashMap, fmt, future::Future, sync::Arc, time::Duration};

use aegis_contracts::{commands::CommandReply, names, subjects, wire::WireError};
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
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::{pull::Durable, rpc::Service, task::Background};

use super::{
    CommandError, Commands,
    catalog::{CommandInfo, Listing, consumer_name},
    ensure_commands_stream,
};

use run::{run_one, send_reply};
use term::{LeaderOf, Term, follow_leader};

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
            run::service_of(&self.acker.subject),
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
