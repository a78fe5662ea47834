//! Who may do what on the bus: the NATS users of the application account,
//! one per role, and the subjects each may publish and subscribe to.
//!
//! This is the one place the permission model lives. [`render_users`] turns
//! a list of [`User`]s into the `users: [...]` array of the server config's
//! application account; `aegis up` writes it into every node's config (see
//! `up::nats`), and the integration tests hand the very same text to the
//! testkit (`NatsServerBuilder::app_users`), so the tests check the config
//! the showcase runs.
//!
//! # Roles
//!
//! - **A service** ([`Role::Service`], user `svc-{service}`, one credential
//!   shared by its instances): serves only `rpc.{service}.>`; writes only its
//!   own registry keys (`$KV.service_registry.service-instances.{service}.*`)
//!   and election keys (`$KV.service_elections.sticky-active.{service}.*`)
//!   and the KV buckets it owns; publishes events only in its own domains;
//!   calls only the methods it names, of the services it names (never an
//!   admin method of a showcase service, see [`SHOWCASE_METHODS`]: those
//!   are the operator's); uses only its own durable
//!   consumers, each by its exact name (its command queue
//!   `{service}_commands` on `COMMANDS`, on its own filter
//!   `commands.{service}.*`, and the consumers on `EVENTS` its role names);
//!   answers the control subject `aegis.control.{service}.{instance}.*` of
//!   its instances.
//!   A service admitted next to the showcase (`aegis up --admit-service
//!   NAME`, see [`admitted_services`]) is such a role too: it calls the
//!   public methods of the showcase's services and every method of the
//!   other admitted ones, publishes in
//!   one domain, and owns no bucket, named event consumer or feed.
//! - **The monitor** ([`Role::Monitor`], user `monitor`): reads the
//!   registry, elections, metrics, logs and dead letters; writes only
//!   service definitions; creates and changes no stream or bucket (the
//!   operator's `aegis init` creates its own); asks instances for their
//!   (redacted) config on `aegis.control.*.*.config`, and nothing else of
//!   `aegis.control`.
//! - **The operator** ([`Role::Operator`], user `operator`; `aegis up`,
//!   `call`, `command`, `events tail`, `status`, `chaos`): calls any
//!   service, sends commands and reads their progress on its own inbox,
//!   follows `EVENTS` on ephemeral consumers of its own, owns
//!   the JetStream API of the account (it creates the streams and buckets,
//!   and backs up and restores them: `$JS.SNAPSHOT.>`) and is the only role
//!   that may publish to `aegis.control.>`.
//! - **The system user** (user [`SYSTEM_USER`] of the system account `SYS`,
//!   rendered by [`render_system_users`]): follows the connection
//!   advisories and asks the servers for their statistics and connections,
//!   and nothing else of `$SYS` (see [`system_grants`]): it may not kick a
//!   connection, reload a server or put it in lame duck mode.
//!
//! # Why passwords, not nkeys
//!
//! Users authenticate with user name and a random 192-bit password. The
//! user name is what the server prints in its logs, in connection
//! advisories and in permission violations ("Publish Violation - User
//! "svc-pricing-service""), which is what an operator reads when something
//! is refused; every Aegis component already takes `AEGIS_NATS_USER` /
//! `AEGIS_NATS_PASSWORD`. Nkeys would keep the secret out of the server's
//! config file (it holds only public keys), but the showcase keeps that file
//! in the same mode-0600 state directory as the secrets themselves, so they
//! would buy nothing there; a deployment that wants them can still use them
//! (the SDK takes `nkey_seed` and `.creds` files).
//!
//! # Replies
//!
//! Each user has its own reply-inbox prefix, `_INBOX_{user}` (see
//! [`inbox_prefix`]), and may subscribe only to that: no role reads the
//! replies another gets (an order's confirmation, the risk limits). A
//! service answers requests with `allow_responses` (once, on the request's
//! own reply subject) rather than a publish permission for others' inboxes,
//! so it cannot push a forged reply to a request it did not receive; only
//! command progress goes to an inbox named in the command, and only to the
//! operator's command inboxes of its own service
//! (`_INBOX_operator.cmd.{service}.*`, see
//! `aegis_sdk::commands::command_inbox`): never to another service's
//! commands, nor to the operator's request inboxes.
//!
//! # What subjects cannot express
//!
//! NATS permissions match whole tokens of a subject, never a request's
//! payload, and never part of a token. Durable consumers have fixed names,
//! granted exactly; but an ephemeral consumer (a KV watch, a feed) is made
//! with `CONSUMER.CREATE.{stream}`, whose payload may name any consumer of
//! that stream (the server then changes it), and is pulled under a name
//! the server picks. So a role that reads a stream on ephemeral consumers
//! (every role the registry and elections, risk-service `EVENTS`) may
//! change, look up and pull from other consumers of that stream. And all instances
//! of a service share one credential, so one instance could answer
//! another's control subject. `docs/security.md` lists these with the
//! threat model.

use std::fmt::Write as _;

use aegis_contracts::subjects::{
    COMMANDS_STREAM, DEAD_LETTER_STREAM, DEFINITIONS_BUCKET, ELECTION_KEY_PREFIX, ELECTIONS_BUCKET,
    EVENTS_STREAM, LOG_STREAM, METRICS_STREAM, REGISTRY_BUCKET, REGISTRY_KEY_PREFIX,
};
use aegis_contracts::trading::{ORDER_SERVICE, PRICING_SERVICE, RISK_SERVICE};

/// What one role of the application account is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The instances of one service.
    Service(ServiceRole),
    /// The monitor API (`aegis api`).
    Monitor,
    /// The operator's tools: `aegis up` (it creates the streams and
    /// buckets), `call`, `command`, `events tail`, `status`, `chaos`.
    Operator,
    /// A user defined by its own grants (the benchmarks' users, built
    /// from the roles above plus their own subjects).
    Custom {
        /// The user name.
        user: String,
        /// What it may do (its inbox prefix is added).
        grants: Grants,
    },
}

/// What a service's instances do on the bus besides serving their RPCs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRole {
    /// The service name, e.g. `order-service`.
    pub service: String,
    /// Event domains it publishes (`events.{domain}.>`), e.g. `order`.
    pub event_domains: Vec<String>,
    /// The services it calls over RPC, and which of their methods.
    pub calls: Vec<Callee>,
    /// KV buckets it owns (reads and writes; `aegis init` creates them),
    /// e.g. `orders`.
    pub buckets: Vec<String>,
    /// The durable consumers on `EVENTS` it subscribes with, by name, as
    /// `aegis_sdk::events` names them: `{service}_{pattern suffix}` in
    /// compete mode (`order.>` gives `risk-service_order_all`), and
    /// `{service}_{instance}_{pattern suffix}` in broadcast mode (one
    /// name per instance id). It may create, look up, pull, acknowledge,
    /// delete and dead-letter these and no other consumer of `EVENTS`.
    pub event_consumers: Vec<String>,
    /// Whether it reads `EVENTS` on ephemeral consumers of its own
    /// (`aegis_sdk::feed`, as risk-service follows the fills). Such a
    /// consumer is created without a name in the subject, and pulled and
    /// looked up under the name the server gives it, so the grant cannot be tied to the
    /// service: see "What subjects cannot express". It also hears
    /// JetStream's advisories that `EVENTS` was deleted, created or
    /// restored, after which the stream's sequences start over.
    pub event_feeds: bool,
}

/// A service a role calls, and the methods it may call there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callee {
    /// The service called, e.g. `risk-service`.
    pub service: String,
    /// The methods it may call.
    pub methods: Methods,
}

/// Which methods of a callee a role may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// These methods only, each granted in both subject forms:
    /// load-balanced `rpc.{service}.{method}` and instance-directed
    /// `rpc.{service}.*.{method}`.
    Only(Vec<String>),
    /// Every method (`rpc.{service}.>`): for a callee whose methods Aegis
    /// does not know (a service admitted next to the showcase). Never for
    /// a showcase service: that would grant its admin methods.
    All,
}

impl Callee {
    /// `methods` of `service`.
    pub fn only(service: &str, methods: &[&str]) -> Callee {
        Callee {
            service: service.to_owned(),
            methods: Methods::Only(methods.iter().map(|m| (*m).to_owned()).collect()),
        }
    }

    /// The subjects calling these methods publishes to: the methods', and
    /// the service's `$SRV.PING.{service}.*`, by which a `call_active` in
    /// flight on a replaced leader asks whether that leader still runs
    /// (`RpcError::LeaderGone`).
    fn subjects(&self) -> Vec<String> {
        let service = &self.service;
        let mut subjects = match &self.methods {
            Methods::All => vec![format!("rpc.{service}.>")],
            Methods::Only(methods) => methods
                .iter()
                .flat_map(|m| [format!("rpc.{service}.{m}"), format!("rpc.{service}.*.{m}")])
                .collect(),
        };
        subjects.push(format!("$SRV.PING.{service}.*"));
        subjects
    }
}

/// The methods of one showcase service: those its callers may be granted,
/// and its admin methods, which only the operator (`rpc.>`) may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceMethods {
    /// The service, e.g. `risk-service`.
    pub service: &'static str,
    /// Methods another service may be granted (reads, and the business
    /// calls it exists for).
    pub public: &'static [&'static str],
    /// Methods that change how the service judges or runs (its limits,
    /// its settings), or make it fail or stall on request (the drill hook
    /// `simulate_work`): the operator's alone.
    pub admin: &'static [&'static str],
}

/// Every method of the showcase's services, public or admin (the handlers
/// of `aegis_trading`; `rpc_method_grants.rs` checks this table against
/// what the running services list in `$SRV.INFO`, so a new method must be
/// put on one side).
pub const SHOWCASE_METHODS: [ServiceMethods; 3] = [
    ServiceMethods {
        service: ORDER_SERVICE,
        public: &["echo", "health", "create_order", "get_order", "list_orders"],
        // The drill hook: it fails on request and holds a handler for up
        // to 60 s. The operator's demos and benchmarks call it; no
        // service needs it.
        admin: &["simulate_work"],
    },
    ServiceMethods {
        service: PRICING_SERVICE,
        public: &["echo", "health", "get_price", "get_prices"],
        admin: &["simulate_work"],
    },
    ServiceMethods {
        service: RISK_SERVICE,
        public: &[
            "echo",
            "health",
            "assess_risk",
            "get_positions",
            "get_limits",
        ],
        // Raising the limits switches off the control that holds order
        // flow in check, and is stored: it outlives the caller.
        admin: &["simulate_work", "update_limits"],
    },
];

/// The methods of showcase service `service` ([`SHOWCASE_METHODS`]).
pub fn showcase_methods(service: &str) -> Option<&'static ServiceMethods> {
    SHOWCASE_METHODS.iter().find(|m| m.service == service)
}

/// One NATS user of the application account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user name (see [`Role::user_name`]).
    pub name: String,
    /// Its password.
    pub password: String,
    /// What it may do.
    pub role: Role,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// The subjects a role may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants {
    /// `permissions.publish.allow`.
    pub publish: Vec<String>,
    /// `permissions.subscribe.allow`.
    pub subscribe: Vec<String>,
    /// `permissions.allow_responses`: may answer each request it receives
    /// once, on the request's own reply subject, without a publish
    /// permission for the asker's inbox.
    pub allow_responses: bool,
}

/// The user name of the monitor.
pub const MONITOR_USER: &str = "monitor";
/// The user name of the operator's tools.
pub const OPERATOR_USER: &str = "operator";
/// The user name of the system account's only user.
pub const SYSTEM_USER: &str = "sys";

impl Role {
    /// The role's user name: `svc-{service}`, `monitor` or `operator`.
    pub fn user_name(&self) -> String {
        match self {
            Role::Service(s) => format!("svc-{}", s.service),
            Role::Monitor => MONITOR_USER.to_owned(),
            Role::Operator => OPERATOR_USER.to_owned(),
            Role::Custom { user, .. } => user.clone(),
        }
    }

    /// The prefix of this role's reply inboxes, `_INBOX_{user}`: the only
    /// inboxes it may subscribe to, so no role reads another's replies.
    /// Its clients must be configured with it (`AEGIS_NATS_INBOX_PREFIX`;
    /// `aegis up` sets it for its children).
    pub fn inbox_prefix(&self) -> String {
        inbox_prefix(&self.user_name())
    }

    /// The subjects this role may use.
    pub fn grants(&self) -> Grants {
        let mut g = match self {
            Role::Service(s) => service_grants(s),
            Role::Monitor => monitor_grants(),
            Role::Operator => operator_grants(),
            Role::Custom { grants, .. } => grants.clone(),
        };
        g.subscribe.insert(0, format!("{}.>", self.inbox_prefix()));
        g
    }
}

/// The reply-inbox prefix of `user`: `_INBOX_{user}`.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// The roles of the showcase's example services (order, pricing, risk):
/// who publishes which events, calls whom and owns which buckets.
pub fn showcase_services() -> Vec<ServiceRole> {
    vec![
        ServiceRole {
            service: ORDER_SERVICE.to_owned(),
            event_domains: vec!["order".to_owned()],
            // What `aegis_trading::order` calls (`order/flow.rs`): a
            // price, then the risk check. Nothing else of either.
            calls: vec![
                Callee::only(PRICING_SERVICE, &["get_price"]),
                Callee::only(RISK_SERVICE, &["assess_risk"]),
            ],
            buckets: vec![aegis_trading::order::ORDERS_BUCKET.to_owned()],
            ..Default::default()
        },
        ServiceRole {
            service: PRICING_SERVICE.to_owned(),
            event_domains: vec!["price".to_owned()],
            ..Default::default()
        },
        ServiceRole {
            service: RISK_SERVICE.to_owned(),
            event_domains: vec!["risk".to_owned()],
            calls: Vec::new(),
            buckets: vec![
                aegis_trading::risk::RISK_LIMITS_BUCKET.to_owned(),
                aegis_trading::risk::RISK_POSITIONS_BUCKET.to_owned(),
            ],
            // Follows the order fills on a feed of its own.
            event_consumers: Vec::new(),
            event_feeds: true,
        },
    ]
}

/// The event domain of a service admitted next to the showcase
/// (`aegis up --admit-service`): its name without a trailing `-service`
/// (`fx-service` publishes `events.fx.>`), else its name as it is.
pub fn admitted_domain(service: &str) -> &str {
    service.strip_suffix("-service").unwrap_or(service)
}

/// Whether `name` may be admitted next to the showcase: a valid service
/// name (the SDK's own check), none of the showcase's own services, and
/// with an event domain ([`admitted_domain`]) none of them publishes in.
/// `Err` says why, as one sentence.
///
/// # Errors
/// When `name` cannot be admitted.
pub fn check_admitted_name(name: &str) -> Result<(), String> {
    aegis_contracts::names::validate_service_name(name)
        .map_err(|e| format!("`{name}` is not a service name: {e}"))?;
    let showcase = showcase_services();
    if showcase.iter().any(|s| s.service == name) {
        return Err(format!(
            "{name} is one of the showcase's own services (its user exists already); admit a service of your own"
        ));
    }
    let domain = admitted_domain(name);
    if let Some(owner) = showcase
        .iter()
        .find(|s| s.event_domains.iter().any(|d| d == domain))
    {
        return Err(format!(
            "{name} would publish events.{domain}.>, the event domain of {}; choose another name",
            owner.service
        ));
    }
    Ok(())
}

/// The roles of the services admitted next to the showcase (`aegis up
/// --admit-service NAME`), one per name (a name given twice counts once),
/// each checked with [`check_admitted_name`]. Each may call the public
/// methods of the showcase's services ([`SHOWCASE_METHODS`]; their admin
/// methods are the operator's) and every method of the other admitted
/// ones, and publish events in its
/// own domain ([`admitted_domain`]); it owns no bucket, and has no named
/// event consumer and no feed. Its commands queue (`{name}_commands`) is
/// its own, as every service's.
///
/// # Errors
/// A name [`check_admitted_name`] refuses, or two names with the same
/// event domain (`fx` and `fx-service`).
pub fn admitted_services(names: &[String]) -> Result<Vec<ServiceRole>, String> {
    let mut unique: Vec<&str> = Vec::new();
    for name in names {
        check_admitted_name(name)?;
        if let Some(other) = unique
            .iter()
            .find(|u| **u != name && admitted_domain(u) == admitted_domain(name))
        {
            return Err(format!(
                "{other} and {name} would both publish events.{}.>; admit only one of them",
                admitted_domain(name)
            ));
        }
        if !unique.contains(&name.as_str()) {
            unique.push(name);
        }
    }
    Ok(unique
        .iter()
        .map(|name| ServiceRole {
            service: (*name).to_owned(),
            event_domains: vec![admitted_domain(name).to_owned()],
            // The showcase's public methods (never an admin one), and
            // every method of the other admitted services.
            calls: SHOWCASE_METHODS
                .iter()
                .map(|m| Callee::only(m.service, m.public))
                .chain(
                    unique
                        .iter()
                        .filter(|other| *other != name)
                        .map(|other| Callee {
                            service: (*other).to_owned(),
                            methods: Methods::All,
                        }),
                )
                .collect(),
            ..Default::default()
        })
        .collect())
}

/// Every role of the showcase: its three services, the monitor and the
/// operator.
pub fn showcase_roles() -> Vec<Role> {
    let mut roles: Vec<Role> = showcase_services().into_iter().map(Role::Service).collect();
    roles.push(Role::Monitor);
    roles.push(Role::Operator);
    roles
}

/// The `users: [...]` array of the application account: each user with its
/// password and its `permissions` block.
pub fn render_users(users: &[User]) -> String {
    render_entries(
        users
            .iter()
            .map(|u| (u.name.clone(), quote(&u.password), u.role.grants())),
    )
}

/// The `users: [...]` array of the application account for `roles`, each
/// password a reference to the variable [`password_variable`] names
/// (`password: $PASSWORD_SVC_ORDER_SERVICE`), which nats-server resolves
/// from its environment: the config then holds no secret and can be
/// generated, checked in and shared (the Helm chart, the podman check),
/// while the passwords come from a Kubernetes Secret or an env file.
pub fn render_users_from_env(roles: &[Role]) -> String {
    render_entries(roles.iter().map(|r| {
        let name = r.user_name();
        (
            name.clone(),
            format!("${}", password_variable(&name)),
            r.grants(),
        )
    }))
}

/// The `users: [...]` array of the system account `SYS`: its one user
/// [`SYSTEM_USER`] with `password` and the [`system_grants`].
pub fn render_system_users(password: &str) -> String {
    render_system_entry(quote(password))
}

/// [`render_system_users`] with the password a reference to the variable
/// [`password_variable`] names (`$PASSWORD_SYS`), as in
/// [`render_users_from_env`].
pub fn render_system_users_from_env() -> String {
    render_system_entry(format!("${}", password_variable(SYSTEM_USER)))
}

fn render_system_entry(password: String) -> String {
    render_entries(std::iter::once((
        SYSTEM_USER.to_owned(),
        password,
        system_grants(),
    )))
}

/// The server config's `accounts` block and `system_account` line: the
/// application account `AEGIS` (JetStream on) with the `users: [...]`
/// array `users`, and the system account `SYS` with `system_users` (as
/// [`render_users`] / [`render_system_users`] or their `_from_env` forms
/// render them). `aegis up` and `aegis nats-config` write the same block.
pub fn render_accounts(users: &str, system_users: &str) -> String {
    format!(
        "accounts {{\n  AEGIS: {{\n    jetstream: enabled\n    users: {users}\n  }}\n  \
         SYS: {{\n    users: {system_users}\n  }}\n}}\nsystem_account: SYS\n"
    )
}

/// What the system user may do: what Aegis does with it, and no request
/// that changes a server (`$SYS.REQ.SERVER.{id}.KICK`, `.LDM`, `.RELOAD`),
/// reads its settings (`VARZ`, `ACCOUNTZ`, ...) or acts on an account.
///
/// - The monitor's fleet view and `aegis status` (`aegis_monitor::fleet`,
///   its `liveness` module) follow the connection advisories
///   (`$SYS.ACCOUNT.*.CONNECT` / `DISCONNECT`: a crash is seen at once)
///   and the servers' own notices that they are leaving (`$SYS.SERVER.*.*`
///   for `.LAMEDUCK` and `.SHUTDOWN`; the server's periodic `.STATSZ`
///   arrives on it too), and ask every server for its connections
///   (`$SYS.REQ.SERVER.PING.CONNZ`: at start, after a reconnect, and twice
///   a second as the pings that the NATS health view reads).
/// - `aegis status` (`status/closed.rs`) also counts the cluster's servers
///   with `$SYS.REQ.SERVER.PING.STATSZ` before it reads their closed
///   connections.
/// - `nats server list` (and `scripts/nats-tooling.py`, which sends what
///   it sends) asks `$SYS.REQ.SERVER.PING`.
///
/// Replies: the system connection keeps the inbox prefix of the
/// connection it is made beside (the monitor's `_INBOX_monitor`,
/// `aegis status`'s operator `_INBOX_operator`), and the NATS tools use
/// the default `_INBOX`. The system account has no other user, so these
/// inboxes carry only the system user's own replies.
///
/// Connection details (CONNZ) are what crash detection reads, so the
/// system user still sees every connection's name, account, user and
/// address; `docs/security.md` says so.
pub fn system_grants() -> Grants {
    Grants {
        publish: vec![
            "$SYS.REQ.SERVER.PING".to_owned(),
            "$SYS.REQ.SERVER.PING.STATSZ".to_owned(),
            "$SYS.REQ.SERVER.PING.CONNZ".to_owned(),
        ],
        subscribe: vec![
            "_INBOX.>".to_owned(),
            format!("{}.>", inbox_prefix(MONITOR_USER)),
            format!("{}.>", inbox_prefix(OPERATOR_USER)),
            "$SYS.ACCOUNT.*.CONNECT".to_owned(),
            "$SYS.ACCOUNT.*.DISCONNECT".to_owned(),
            "$SYS.SERVER.*.*".to_owned(),
        ],
        allow_responses: false,
    }
}

/// The environment variable a server config generated by
/// [`render_users_from_env`] reads `user`'s password from:
/// `PASSWORD_` and the user name in upper case, every character that is
/// not a letter or digit an underscore (`svc-order-service` ->
/// `PASSWORD_SVC_ORDER_SERVICE`).
pub fn password_variable(user: &str) -> String {
    let name: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PASSWORD_{name}")
}

/// One user per line, in the nats-server config syntax; `password` is
/// written as given (a quoted literal or a `$VARIABLE`).
fn render_entries(users: impl Iterator<Item = (String, String, Grants)>) -> String {
    let mut out = String::from("[\n");
    for (name, password, grants) in users {
        let _ = writeln!(
            out,
            "      {{ user: {}, password: {}, permissions: {{\n        publish: {{ allow: {} }}\n        subscribe: {{ allow: {} }}\n        allow_responses: {}\n      }} }}",
            quote(&name),
            password,
            list(&grants.publish),
            list(&grants.subscribe),
            grants.allow_responses,
        );
    }
    out.push_str("    ]");
    out
}

fn list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What every role needs: the account's JetStream info (the SDK checks it
/// on connect). Its own reply inboxes are added by [`Role::grants`].
fn base() -> Grants {
    Grants {
        publish: vec!["$JS.API.INFO".into()],
        ..Grants::default()
    }
}

/// Reading KV bucket `bucket`: its stream info, direct and stored gets, and
/// the ephemeral consumers of watches (created, looked up, with their
/// flow-control replies), pulled from by `kv::follow`'s feed. Not deleting
/// a consumer: the ephemeral ones have server-chosen names, so a grant to
/// delete one's own is a grant to delete every reader's (the monitor's
/// registry watch included). A watch that ends leaves its consumer to
/// the server, which removes it once unused for its inactive threshold
/// (10 s), as after a crash; only a bucket's owner may delete consumers
/// of its stream.
fn kv_read(g: &mut Grants, bucket: &str) {
    let stream = format!("KV_{bucket}");
    g.publish.extend([
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.FC.{stream}.>"),
    ]);
}

/// Owning KV bucket `bucket`: reading it and writing any key. Not creating
/// it: a create also chooses the stream's subjects, sources and mirrors,
/// so while the bucket is missing (a restore, a fresh install whose
/// service starts before the init Job) its owner could make it capture
/// any subject. The operator's `aegis init` creates every bucket.
fn kv_own(g: &mut Grants, bucket: &str) {
    kv_read(g, bucket);
    g.publish.extend([
        format!("$KV.{bucket}.>"),
        // Its readers are its own (and the operator's, who may anyway).
        format!("$JS.API.CONSUMER.DELETE.KV_{bucket}.*"),
    ]);
}

/// Consuming from `stream` with consumers of any filter: create (or look
/// up) durable and ephemeral consumers, pull and acknowledge. Deleting a
/// consumer is not granted: one service must not remove another's.
fn stream_consume(g: &mut Grants, stream: &str) {
    g.publish.extend([
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.ACK.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]);
}

/// The durable consumer of `service`'s commands on `COMMANDS`, as the
/// SDK's command worker names it (`aegis_sdk::commands`).
pub fn command_consumer(service: &str) -> String {
    format!("{service}_commands")
}

/// Using the durable consumer `consumer` of `stream`, and no other: create
/// or change it (only on `filter` when given: the server refuses a config
/// whose filter differs from the subject's), look it up, pull, acknowledge
/// (`+ACK`, `+NAK`, `+WPI`, `+TERM` on its own ack subjects), delete it,
/// dead-letter what it gives up on (`aegis.dead.{stream}.{consumer}`) and
/// hear the server's max-deliveries advisories about it. Every subject
/// names the consumer as one exact token, so one service cannot reach
/// another's. The forms that hide the name (`CONSUMER.DURABLE.CREATE`,
/// and `CONSUMER.CREATE.{stream}`, whose payload may name any consumer)
/// are not granted.
fn own_durable(g: &mut Grants, stream: &str, consumer: &str, filter: Option<&str>) {
    g.publish.extend([
        match filter {
            Some(filter) => format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter}"),
            None => format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
        },
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
        aegis_contracts::subjects::dead_letter_subject(stream, consumer),
    ]);
    g.subscribe.push(format!(
        "{}.{stream}.{consumer}",
        aegis_contracts::dead_letter::MAX_DELIVERIES_ADVISORY_PREFIX
    ));
}

fn service_grants(s: &ServiceRole) -> Grants {
    let name = &s.service;
    let mut g = base();
    // Answers RPCs, `$SRV` pings and control requests on their own reply
    // subjects; command progress and results go to the inbox the operator
    // names in the command, which carries the service's name
    // (`_INBOX_operator.cmd.{service}.{id}`): only this service's, so it
    // cannot forge the result of a command sent to another, and never the
    // operator's request replies (`_INBOX_operator.{nuid}.{n}`).
    g.allow_responses = true;
    g.publish.push(aegis_sdk::commands::command_inbox(
        &inbox_prefix(OPERATOR_USER),
        name,
        "*",
    ));
    // Registry and election: read everything (discovery, call_active),
    // write only this service's keys.
    kv_read(&mut g, REGISTRY_BUCKET);
    kv_read(&mut g, ELECTIONS_BUCKET);
    g.publish.extend([
        format!("$KV.{REGISTRY_BUCKET}.{REGISTRY_KEY_PREFIX}.{name}.*"),
        format!("$KV.{ELECTIONS_BUCKET}.{ELECTION_KEY_PREFIX}.{name}.*"),
    ]);
    for bucket in &s.buckets {
        kv_own(&mut g, bucket);
    }
    // RPC: serve its own subjects (load-balanced and instance-directed)
    // and the NATS services protocol; call only the methods it names.
    g.subscribe.extend([
        format!("rpc.{name}.>"),
        "$SRV.*".to_owned(),
        format!("$SRV.*.{name}"),
        format!("$SRV.*.{name}.*"),
    ]);
    // Per method, never `rpc.{callee}.>`: that would grant the callee's
    // admin methods too (risk-service's `update_limits`).
    for callee in &s.calls {
        g.publish.extend(callee.subjects());
    }
    // Whether another process serves an instance id before taking it.
    g.publish.push(format!("$SRV.PING.{name}.*"));
    // Events: publish in its own domains; read the stream (an event by
    // sequence or subject); consume only through its own durable
    // consumers, and its own feeds when it has any.
    for domain in &s.event_domains {
        g.publish.push(format!("events.{domain}.>"));
    }
    g.publish.extend([
        format!("$JS.API.STREAM.INFO.{EVENTS_STREAM}"),
        format!("$JS.API.STREAM.MSG.GET.{EVENTS_STREAM}"),
        format!("$JS.API.DIRECT.GET.{EVENTS_STREAM}"),
        format!("$JS.API.DIRECT.GET.{EVENTS_STREAM}.>"),
    ]);
    for consumer in &s.event_consumers {
        own_durable(&mut g, EVENTS_STREAM, consumer, None);
    }
    if s.event_feeds {
        // A feed's consumer is made without a name and pulled under the
        // one the server gives it (no acks: it reads with AckPolicy::None).
        // async-nats looks the consumer up after each reconnect of a pull
        // (`CONSUMER.INFO`, to know whether its pull is still waiting):
        // refused, that was a permissions violation per reconnect. Like the
        // pull, the look-up cannot be tied to the feed's own consumers (the
        // server names them); it only reads, which the unnamed create and
        // the pull above already go beyond.
        g.publish.extend([
            format!("$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}"),
            format!("$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.*"),
        ]);
        // Told at once when `EVENTS` is deleted, created or restored: its
        // sequences start over, and a feed's reader must not take the old
        // stream's for the new one's (risk-service's positions). Only
        // these advisories, only of `EVENTS`.
        for action in ["DELETED", "CREATED", "RESTORE_COMPLETE"] {
            g.subscribe.push(format!(
                "$JS.EVENT.ADVISORY.STREAM.{action}.{EVENTS_STREAM}"
            ));
        }
    }
    // Commands: only its own queue, on its own filter.
    let commands = command_consumer(name);
    g.publish
        .push(format!("$JS.API.STREAM.INFO.{COMMANDS_STREAM}"));
    own_durable(
        &mut g,
        COMMANDS_STREAM,
        &commands,
        Some(&aegis_contracts::subjects::command_filter(name)),
    );
    // Dead letters: only of its own consumers (granted with each above).
    g.publish
        .push(format!("$JS.API.STREAM.INFO.{DEAD_LETTER_STREAM}"));
    // Telemetry of its own instances; the control subject of its own
    // instances (answered with `allow_responses`). Its events are sent to
    // the stream capturing their subject and looked for by that subject
    // when nobody takes them (STREAM.NAMES: stream names only).
    g.publish.extend([
        format!("aegis.metrics.{name}.*"),
        format!("aegis.log.{name}.*"),
        format!("aegis.heartbeat.{name}.*"),
        "$JS.API.STREAM.NAMES".to_owned(),
    ]);
    g.subscribe.push(format!("aegis.control.{name}.>"));
    g
}

fn monitor_grants() -> Grants {
    let mut g = base();
    kv_read(&mut g, REGISTRY_BUCKET);
    kv_read(&mut g, ELECTIONS_BUCKET);
    // Its bucket and its two streams are created (and bounded) by the
    // operator (`aegis init`): a create or update would also let it choose
    // their subjects, sources and mirrors, and so copy any bucket or any
    // role's replies into them. It writes definitions and reads.
    kv_own(&mut g, DEFINITIONS_BUCKET);
    for stream in [METRICS_STREAM, LOG_STREAM] {
        // Its readers of these are the only consumers on them.
        g.publish
            .push(format!("$JS.API.CONSUMER.DELETE.{stream}.*"));
        stream_consume(&mut g, stream);
    }
    for stream in [EVENTS_STREAM, COMMANDS_STREAM] {
        // Reads (an instance's recent events) but never consumes work.
        g.publish.extend([
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
        ]);
    }
    stream_consume(&mut g, DEAD_LETTER_STREAM);
    g.publish.extend([
        "$JS.API.STREAM.NAMES".to_owned(),
        "$JS.API.STREAM.LIST".to_owned(),
        // Any stream's info: the NATS banner asks each stream without a
        // leader (the services' buckets too) until it is led again.
        // STREAM.LIST answers the same for every stream; no message of a
        // stream it does not read is in it.
        "$JS.API.STREAM.INFO.*".to_owned(),
        "aegis.control.*.*.config".to_owned(),
        // Method schemas (`/api/services/{s}/methods`) from the services protocol.
        "$SRV.INFO.*".to_owned(),
    ]);
    g.subscribe.push("aegis.heartbeat.>".to_owned());
    g
}

fn operator_grants() -> Grants {
    let mut g = base();
    g.publish.extend([
        "$JS.API.>".to_owned(),
        "$JS.ACK.>".to_owned(),
        "$JS.FC.>".to_owned(),
        // `nats stream backup` acks each snapshot chunk on
        // `$JS.SNAPSHOT.ACK.{stream}.*`; `nats stream restore` uploads the
        // chunks to `$JS.SNAPSHOT.RESTORE.{stream}.*` (docs/deployment.md,
        // "Backup of the buckets"). Without these a backup stalls once its
        // first window of chunks is out, and a restore is refused.
        "$JS.SNAPSHOT.ACK.>".to_owned(),
        "$JS.SNAPSHOT.RESTORE.>".to_owned(),
        "$KV.service_definitions.>".to_owned(),
        "rpc.>".to_owned(),
        "commands.>".to_owned(),
        "aegis.control.>".to_owned(),
        "$SRV.>".to_owned(),
    ]);
    g.subscribe
        .extend(["aegis.heartbeat.>".to_owned(), "$SRV.>".to_owned()]);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> Role {
        showcase_roles()
            .into_iter()
            .find(|r| r.user_name() == name)
            .unwrap()
    }

    #[test]
    fn each_showcase_role_has_its_own_user() {
        let names: Vec<String> = showcase_roles().iter().map(Role::user_name).collect();
        assert_eq!(
            names,
            [
                "svc-order-service",
                "svc-pricing-service",
                "svc-risk-service",
                "monitor",
                "operator"
            ]
        );
    }

    #[test]
    fn only_the_operator_publishes_to_control_beyond_config() {
        for r in showcase_roles() {
            let g = r.grants();
            let broad = g.publish.iter().any(|s| s == "aegis.control.>");
            assert_eq!(broad, r == Role::Operator, "{}", r.user_name());
            if let Role::Service(_) = r {
                assert!(!g.publish.iter().any(|s| s.starts_with("aegis.control")));
            }
        }
    }

    #[test]
    fn a_service_writes_only_its_own_keys() {
        let g = role("svc-pricing-service").grants();
        let kv: Vec<&String> = g.publish.iter().filter(|s| s.starts_with("$KV.")).collect();
        assert_eq!(
            kv,
            [
                "$KV.service_registry.service-instances.pricing-service.*",
                "$KV.service_elections.sticky-active.pricing-service.*"
            ]
        );
        assert!(
            !g.subscribe
                .iter()
                .any(|s| s.starts_with("rpc.order-service"))
        );
    }

    /// What `aegis up --admit-service fx-service --admit-service book`
    /// writes into the server config for `svc-fx-service`: it serves only
    /// its own subjects, calls the showcase and the other admitted
    /// service, publishes only `events.fx.>`, and owns no bucket, named
    /// event consumer or feed.
    #[test]
    fn an_admitted_service_is_rendered_with_its_own_subjects_only() {
        let roles = admitted_services(&[
            "fx-service".to_owned(),
            "book".to_owned(),
            "fx-service".to_owned(),
        ])
        .unwrap();
        assert_eq!(roles.len(), 2, "a name given twice counts once");
        let role = Role::Service(roles[0].clone());
        assert_eq!(role.user_name(), "svc-fx-service");
        let text = render_users(&[User {
            name: role.user_name(),
            password: "pw".into(),
            role: role.clone(),
        }]);
        assert!(text.contains(r#"user: "svc-fx-service", password: "pw""#));
        for subject in [
            "rpc.order-service.create_order",
            "rpc.order-service.*.create_order",
            "rpc.pricing-service.get_price",
            "rpc.risk-service.get_limits",
            "rpc.risk-service.*.assess_risk",
            "rpc.book.>",
            "events.fx.>",
            "$KV.service_registry.service-instances.fx-service.*",
            "_INBOX_svc-fx-service.>",
            "aegis.control.fx-service.>",
        ] {
            assert!(
                text.contains(&format!("\"{subject}\"")),
                "{subject}:\n{text}"
            );
        }
        let g = role.grants();
        assert!(g.subscribe.contains(&"rpc.fx-service.>".to_owned()));
        assert!(
            !g.subscribe
                .iter()
                .any(|s| s.starts_with("rpc.") && s != "rpc.fx-service.>")
        );
        assert!(!g.publish.contains(&"rpc.fx-service.>".to_owned()));
        let events: Vec<&String> = g
            .publish
            .iter()
            .filter(|s| s.starts_with("events."))
            .collect();
        assert_eq!(events, ["events.fx.>"]);
        let kv: Vec<&String> = g.publish.iter().filter(|s| s.starts_with("$KV.")).collect();
        assert_eq!(
            kv,
            [
                "$KV.service_registry.service-instances.fx-service.*",
                "$KV.service_elections.sticky-active.fx-service.*"
            ]
        );
        // No feed, no named consumer on EVENTS; its own command queue only.
        assert!(
            !g.publish
                .iter()
                .any(|s| s.starts_with("$JS.API.CONSUMER.CREATE.EVENTS"))
        );
        assert!(
            !g.publish
                .iter()
                .any(|s| s.contains("CONSUMER") && s.contains(".EVENTS."))
        );
        assert!(
            g.publish.contains(
                &"$JS.API.CONSUMER.CREATE.COMMANDS.fx-service_commands.commands.fx-service.*"
                    .to_owned()
            )
        );
        assert!(roles[1].calls.iter().any(|c| c.service == "fx-service"));
        assert!(!text.contains("update_limits"), "{text}");
        assert!(!text.contains("simulate_work"), "{text}");
        assert!(!text.contains("\"rpc.risk-service.>\""), "{text}");
        assert_eq!(roles[1].event_domains, ["book"]);
    }

    /// No role but the operator may publish to an admin method of a
    /// showcase service, in either subject form, nor to a wildcard that
    /// covers one; order-service calls exactly what its code calls.
    #[test]
    fn admin_methods_are_the_operators_alone() {
        let admitted = admitted_services(&["fx-service".to_owned()]).unwrap();
        let roles = showcase_roles()
            .into_iter()
            .chain(admitted.into_iter().map(Role::Service));
        for r in roles {
            let g = r.grants();
            for m in &SHOWCASE_METHODS {
                let svc = m.service;
                for subject in &g.publish {
                    let wide = [
                        "rpc.>".to_owned(),
                        format!("rpc.{svc}.>"),
                        format!("rpc.{svc}.*"),
                    ];
                    if r != Role::Operator {
                        assert!(!wide.contains(subject), "{}: {subject}", r.user_name());
                        for admin in m.admin {
                            assert!(
                                !subject.ends_with(&format!(".{admin}")),
                                "{}: {subject}",
                                r.user_name()
                            );
                        }
                    }
                }
            }
        }
        let order: Vec<String> = role("svc-order-service")
            .grants()
            .publish
            .into_iter()
            .filter(|s| s.starts_with("rpc."))
            .collect();
        assert_eq!(
            order,
            [
                "rpc.pricing-service.get_price",
                "rpc.pricing-service.*.get_price",
                "rpc.risk-service.assess_risk",
                "rpc.risk-service.*.assess_risk",
            ]
        );
        // What a service is granted of a showcase callee is public there.
        for s in showcase_services() {
            for callee in &s.calls {
                let Methods::Only(methods) = &callee.methods else {
                    panic!("{} calls every method of {}", s.service, callee.service);
                };
                let known = showcase_methods(&callee.service).unwrap();
                for method in methods {
                    assert!(known.public.contains(&method.as_str()), "{method}");
                }
            }
        }
    }

    /// A service may publish to the operator's command inboxes of its own
    /// service only: not another's, not the operator's request replies.
    #[test]
    fn a_service_answers_only_its_own_commands() {
        for s in showcase_services() {
            let g = Role::Service(s.clone()).grants();
            let inboxes: Vec<&String> = g
                .publish
                .iter()
                .filter(|p| p.starts_with("_INBOX"))
                .collect();
            assert_eq!(
                inboxes,
                [&format!("_INBOX_operator.cmd.{}.*", s.service)],
                "{}",
                s.service
            );
        }
    }

    #[test]
    fn names_that_cannot_be_admitted_are_refused_with_the_reason() {
        let refused = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            admitted_services(&names).unwrap_err()
        };
        assert!(
            refused(&["Fx"]).contains("not a service name"),
            "{}",
            refused(&["Fx"])
        );
        assert!(refused(&["fx--service"]).contains("--"));
        assert!(refused(&["pricing-service"]).contains("showcase's own"));
        assert!(refused(&["price-service"]).contains("events.price.>"));
        assert!(refused(&["ledger", "ledger-service"]).contains("both publish events.ledger.>"));
        assert_eq!(admitted_domain("fx-service"), "fx");
        assert_eq!(admitted_domain("ledger"), "ledger");
    }

    #[test]
    fn renders_quoted_users_and_never_debug_prints_passwords() {
        let user = User {
            name: "monitor".into(),
            password: "pw\"x".into(),
            role: Role::Monitor,
        };
        let text = render_users(std::slice::from_ref(&user));
        assert!(text.contains(r#"user: "monitor", password: "pw\"x""#));
        assert!(text.contains(r#""$JS.API.INFO""#));
        assert!(!format!("{user:?}").contains("pw"));
    }

    #[test]
    fn the_system_user_asks_only_what_changes_no_server() {
        let g = system_grants();
        for subject in &g.publish {
            assert!(subject.starts_with("$SYS.REQ.SERVER.PING"), "{subject}");
            assert!(
                !subject.contains('*') && !subject.contains('>'),
                "{subject}"
            );
        }
        assert!(!g.allow_responses);
        let text = render_system_users("pw");
        assert!(text.contains(r#"user: "sys", password: "pw", permissions"#));
        assert!(text.contains(r#""$SYS.REQ.SERVER.PING.CONNZ""#));
        assert!(render_system_users_from_env().contains("password: $PASSWORD_SYS,"));
    }

    #[test]
    fn env_rendering_references_a_variable_per_user_and_holds_no_password() {
        let text = render_users_from_env(&showcase_roles());
        assert!(
            text.contains(r#"user: "svc-order-service", password: $PASSWORD_SVC_ORDER_SERVICE,"#)
        );
        assert!(text.contains(r#"user: "operator", password: $PASSWORD_OPERATOR,"#));
        assert_eq!(text.matches("password: $PASSWORD_").count(), 5);
        assert_eq!(password_variable("svc-a.b c"), "PASSWORD_SVC_A_B_C");
    }
}
