//! `aegis call SERVICE METHOD [BODY]`: one RPC through discovery (or to one
//! instance, or to a sticky group's leader), printing the reply and who
//! served it; with `--schema`, what the method takes and returns instead
//! (a command's name: what the command takes; no name: every method and
//! command of the service). Without a body, a method that takes no
//! argument is sent `null` (read from its request schema), any other `{}`.
//! A service name the registry has no record of is said to be one (with
//! the names it has), not reported as the service being unavailable; so is
//! an `--instance` that is not one of the service's registered instances.

use std::{process::ExitCode, time::Duration};

use aegis_sdk::{
    discovery::DiscoveryError,
    election::ElectionError,
    registry::RegistryError,
    rpc::{CallOptions, ErrorCode, RpcError, ServiceDescription},
    startup::Causes,
};
use anyhow::Context;
use clap::Args;

use crate::cli::ConnectArgs;

/// `aegis call`.
#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// Service name, e.g. `pricing-service`.
    pub service: String,
    /// Method name, e.g. `get_price`. With `--schema` it may be a command's
    /// name, or left out to list every method and command.
    #[arg(required_unless_present = "schema")]
    pub method: Option<String>,
    /// Request body as JSON; `-` reads it from standard input, `@PATH`
    /// from the file PATH (for a body too large for an argument, or kept
    /// in a file). Without one: `null` to a method that takes no argument
    /// (its request schema is `null`, a handler of `()`), `{}` to any
    /// other.
    pub body: Option<String>,
    /// Call this instance only.
    #[arg(long, conflicts_with = "active")]
    pub instance: Option<String>,
    /// Call the ACTIVE leader of a sticky single-active service.
    #[arg(long)]
    pub active: bool,
    /// The sticky group for `--active`.
    #[arg(long, default_value = "default")]
    pub group: String,
    /// Deadline in milliseconds (1 to 600000).
    #[arg(long, default_value_t = 5_000, value_parser = crate::cli::timeout_ms())]
    pub timeout_ms: u64,
    /// The method may run twice without harm (`create_order` is, by its
    /// client order id): within the deadline, an attempt that times out
    /// is sent again and an answer of SERVICE_UNAVAILABLE is asked again
    /// after a pause, rather than printed as the result.
    #[arg(long)]
    pub idempotent: bool,
    /// Print the method's description and the JSON Schemas of its request
    /// and reply (from `$SRV.INFO`) instead of calling it; for a command's
    /// name, the command's description and payload schema; without a
    /// name, every method and command of the service.
    #[arg(long)]
    pub schema: bool,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// Runs `aegis call`: prints the reply on stdout and who served it on
/// stderr; an RPC error is printed with its code and exits non-zero.
///
/// # Errors
/// A body that is not JSON, or no connection to NATS.
pub async fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    if args.schema {
        return print_schema(&args).await;
    }
    let Some(method) = args.method.clone() else {
        anyhow::bail!("name the method to call (or pass --schema to list them)");
    };
    crate::cli::check_service_name(&args.service)?;
    let given = args.body.as_deref().map(request_body).transpose()?;
    let conn = args.nats.connect_as_operator().await?;
    let body = match given {
        Some(body) => body,
        // `{}` does not decode into `()`: ask the method what it takes.
        None => {
            default_body(request_schema(&conn, &args.service, &method, describe_wait(&args)).await)
        }
    };
    let mut opts = CallOptions::timeout(Duration::from_millis(args.timeout_ms));
    opts.idempotent = args.idempotent;
    let rpc = conn.rpc();
    let result = match &args.instance {
        None if args.active => {
            rpc.call_active::<_, serde_json::Value>(
                &args.service,
                &args.group,
                &method,
                &body,
                &opts,
            )
            .await
        }
        Some(instance) => {
            rpc.call_instance::<_, serde_json::Value>(
                &args.service,
                instance,
                &method,
                &body,
                &opts,
            )
            .await
        }
        None => {
            rpc.call_with::<_, serde_json::Value>(&args.service, &method, &body, &opts)
                .await
        }
    };
    match result {
        Ok(reply) => {
            println!("{}", serde_json::to_string_pretty(&reply.value)?);
            eprintln!(
                "served by {}",
                reply.instance_id.as_deref().unwrap_or("unknown instance")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // No instance to send to, of a name the registry has no record
            // of: a slip, not an outage (a service whose records are all
            // down is the outage the error says).
            if matches!(
                e,
                RpcError::NoInstances { .. }
                    | RpcError::NoResponders { .. }
                    | RpcError::NoLeader { .. }
                    | RpcError::NotSingleActive { .. }
                    | RpcError::UnknownGroup { .. }
            ) && let Some(unknown) =
                crate::status::unknown_to_registry(&conn, &args.service).await
            {
                eprintln!("error: {unknown}");
                return Ok(ExitCode::FAILURE);
            }
            // Nobody serves the instance named: a slip when the service
            // has no such registered instance (or it is another's).
            if let (Some(instance), RpcError::NoResponders { .. }) = (&args.instance, &e)
                && let Some(slip) = not_an_instance_of(&conn, &args.service, instance).await
            {
                eprintln!("error: {slip}");
                return Ok(ExitCode::FAILURE);
            }
            let code = e.code();
            // A method the service does not have: say which it has, and
            // whether the name is one of its commands.
            let described = match &e {
                RpcError::NoSuchMethod { service, .. } => {
                    describe_service(&conn, service, describe_wait(&args))
                        .await
                        .ok()
                }
                _ => None,
            };
            let is_command = described
                .as_ref()
                .is_some_and(|d| d.commands.iter().any(|c| c.name == method));
            let known = described.map(|d| d.methods.into_iter().map(|m| m.name).collect());
            // A body the method refused: `{}` to one that takes nothing.
            let takes_nothing = e
                .remote()
                .is_some_and(|w| w.code == ErrorCode::InvalidRequest)
                && !body.is_null()
                && request_schema(&conn, &args.service, &method, describe_wait(&args))
                    .await
                    .is_some_and(|s| takes_nothing(&s));
            // Records, none ACTIVE, of a single-active service: its leader
            // may lead on unhealthy (degraded), which `--active` reaches.
            let leads_on = if matches!(&e, RpcError::NoInstances { records, .. } if *records > 0)
                && args.instance.is_none()
            {
                single_active_groups(&conn, &args.service).await
            } else {
                Vec::new()
            };
            // With its causes: "the service registry is unavailable" alone
            // does not say that the registry view did not load in time.
            let mut line = call_error(e, known);
            if !leads_on.is_empty() {
                line.push_str(&format!(
                    "\n{} is single-active (group {}): a plain call reaches only instances whose \
                     record says ACTIVE, and a leader that leads on unhealthy (degraded: no \
                     healthy instance could take over) says UNHEALTHY; `aegis call --active` \
                     reaches the leader",
                    args.service,
                    leads_on.join(", ")
                ));
            }
            if is_command {
                line.push_str(&format!(
                    "\n{method} is a command of {}: send it with `aegis command {} {method} [PAYLOAD]`",
                    args.service, args.service
                ));
            }
            if takes_nothing {
                line.push_str(&format!(
                    "\n{} takes no argument: pass `null`, or no body",
                    method
                ));
            }
            eprintln!("error [{code}]: {line}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The single-active groups the registered records of `service` name,
/// sorted; empty when it has none or the registry cannot be read.
async fn single_active_groups(conn: &aegis_sdk::Connection, service: &str) -> Vec<String> {
    let Ok(reader) = aegis_sdk::RegistryReader::start(conn).await else {
        return Vec::new();
    };
    let mut groups: Vec<String> = reader
        .by_service(service)
        .into_iter()
        .filter_map(|i| i.sticky_active_group)
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// What is wrong with `--instance instance` when the registry has no
/// record of it as an instance of `service`: that, the service it is an
/// instance of when it is another's, and the service's registered
/// instances (and the close one); `None` when it is one of them (it is
/// then down, as the error says) or the registry cannot be read.
async fn not_an_instance_of(
    conn: &aegis_sdk::Connection,
    service: &str,
    instance: &str,
) -> Option<String> {
    let reader = aegis_sdk::RegistryReader::start(conn).await.ok()?;
    let all = reader.all();
    if all
        .iter()
        .any(|i| i.service_name == service && i.instance_id == instance)
    {
        return None;
    }
    let head = match all.iter().find(|i| i.instance_id == instance) {
        Some(other) => format!(
            "{instance} is an instance of {}, not of {service}",
            other.service_name
        ),
        None => format!("{instance} is not a registered instance of {service}"),
    };
    let own = all
        .into_iter()
        .filter(|i| i.service_name == service)
        .map(|i| i.instance_id);
    Some(format!(
        "{head}{}",
        crate::status::names_and_close_one(
            instance,
            own,
            &format!("instances of {service}"),
            &format!("{service} has no registered instance"),
        )
    ))
}

/// The request body `given` stands for, parsed: JSON text as it is, `-`
/// standard input, `@PATH` the file PATH (neither is JSON, so no JSON
/// body is taken for one).
///
/// # Errors
/// When standard input or the file cannot be read, or what is read is not
/// JSON; the error gives its size, and quotes a short prefix of a body
/// given as an argument (a body can be megabytes). A body read from a pipe
/// or a file is not quoted: it may be a secret passed by mistake (a token
/// file), which must not reach a terminal or a CI log.
fn request_body(given: &str) -> anyhow::Result<serde_json::Value> {
    let (text, from) = if given == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the request body from standard input")?;
        (text, " (from standard input)".to_owned())
    } else if let Some(path) = given.strip_prefix('@') {
        anyhow::ensure!(
            !path.is_empty(),
            "`@` names no file: pass the request body as `@PATH`"
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the request body from {path}"))?;
        (text, format!(" (from {path})"))
    } else {
        (given.to_owned(), String::new())
    };
    serde_json::from_str(&text).map_err(|e| {
        let was = if from.is_empty() {
            quoted_prefix(&text)
        } else {
            format!("{} bytes, not quoted", text.len())
        };
        anyhow::anyhow!("the request body{from} is not JSON: {e}; it was {was}")
    })
}

/// How much of a body an error quotes, in characters.
const QUOTED: usize = 60;

/// `text` in backticks, cut to its first [`QUOTED`] characters with `…`
/// and its size when longer; control characters (a newline of a body read
/// from a file) escaped, so that it stays on one line.
fn quoted_prefix(text: &str) -> String {
    let shown: String = text
        .chars()
        .take(QUOTED)
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if text.chars().count() > QUOTED {
        format!("`{shown}…` ({} bytes)", text.len())
    } else {
        format!("`{shown}`")
    }
}

/// An error and its causes on one line.
fn with_causes(error: impl std::error::Error + 'static) -> String {
    Causes(&error).to_string()
}

/// How long a call waits for the service's description (to list its
/// methods, or read what a method takes), at most.
const DESCRIBE_WAIT: Duration = Duration::from_secs(1);

/// The wait for the service's description: [`DESCRIBE_WAIT`], or the
/// call's own deadline when shorter.
fn describe_wait(args: &CallArgs) -> Duration {
    DESCRIBE_WAIT.min(Duration::from_millis(args.timeout_ms))
}

/// The request schema `method` of `service` publishes (`$SRV.INFO`), if
/// an instance answers in `wait` and lists it.
async fn request_schema(
    conn: &aegis_sdk::Connection,
    service: &str,
    method: &str,
    wait: Duration,
) -> Option<serde_json::Value> {
    let described = aegis_sdk::rpc::describe(conn.client(), service, wait)
        .await
        .ok()?;
    described
        .methods
        .into_iter()
        .find(|m| m.name == method)?
        .request_schema
}

/// Whether a request schema admits `null` alone: the method takes no
/// argument (a handler of `()`), and `{}` does not decode into it.
fn takes_nothing(schema: &serde_json::Value) -> bool {
    match schema.get("type") {
        Some(serde_json::Value::String(t)) => t == "null",
        Some(serde_json::Value::Array(types)) => {
            !types.is_empty() && types.iter().all(|t| t == "null")
        }
        _ => false,
    }
}

/// The body of a call given none: `null` to a method that takes no
/// argument, else `{}` (also when its schema is unknown: the service did
/// not answer in time, or an older one publishes none).
fn default_body(schema: Option<serde_json::Value>) -> serde_json::Value {
    if schema.as_ref().is_some_and(takes_nothing) {
        serde_json::Value::Null
    } else {
        serde_json::json!({})
    }
}

/// A call's error with its causes, in the command's words: what to do when
/// the view it routes by did not load in time (a new connection loads it
/// on its first call; JetStream serves it), the methods the service has
/// (`known`) when it lacks the one called, and the details of the
/// service's own error.
fn call_error(error: RpcError, known: Option<Vec<String>>) -> String {
    let view_late = matches!(
        error,
        RpcError::Election(ElectionError::NotSynced(_))
            | RpcError::Discovery(DiscoveryError::Registry(RegistryError::NotSynced(_)))
    );
    let details = error.remote().and_then(|w| w.details.clone());
    // The SDK's error lists the methods itself when the records list them.
    let known = known.filter(
        |_| !matches!(&error, RpcError::NoSuchMethod { methods, .. } if !methods.is_empty()),
    );
    let mut line = match error {
        RpcError::NotSingleActive { service } => {
            format!("{service} is not single-active (it has no leader to call): drop --active")
        }
        error => with_causes(error),
    };
    if let Some(known) = known.filter(|k| !k.is_empty()) {
        line.push_str(&format!(" (it has: {})", known.join(", ")));
    }
    if let Some(details) = details {
        line.push_str(&format!("\ndetails: {details}"));
    }
    if view_late {
        line.push_str(
            ". JetStream serves this view; just after a NATS node stops it can be \
             silent for seconds while it elects new leaders: try again, or give \
             --timeout-ms more time",
        );
    }
    line
}

/// What every running instance of `service` says it serves
/// (`$SRV.INFO`), merged: the methods of the first to answer, then any
/// other's it lacks (a rolling upgrade), and the commands any of them
/// lists (each lists those its own process's workers take).
///
/// # Errors
/// As [`aegis_sdk::rpc::describe_all`]: no instance answered in `wait`,
/// or the request could not be sent.
pub(crate) async fn describe_service(
    conn: &aegis_sdk::Connection,
    service: &str,
    wait: Duration,
) -> Result<ServiceDescription, RpcError> {
    let mut all = aegis_sdk::rpc::describe_all(conn.client(), service, wait)
        .await?
        .into_iter();
    let Some(mut merged) = all.next() else {
        return Err(RpcError::NoResponders {
            subject: format!("$SRV.INFO.{service}"),
        });
    };
    for other in all {
        for m in other.methods {
            if !merged.methods.iter().any(|k| k.name == m.name) {
                merged.methods.push(m);
            }
        }
        for c in other.commands {
            if !merged.commands.iter().any(|k| k.name == c.name) {
                merged.commands.push(c);
            }
        }
    }
    Ok(merged)
}

/// `methods: a, b` and `commands: c, d`, one line each (`none` for an
/// empty list).
pub(crate) fn summary(described: &ServiceDescription) -> String {
    let list = |names: Vec<&str>| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    format!(
        "methods: {}\ncommands: {}",
        list(described.methods.iter().map(|m| m.name.as_str()).collect()),
        list(described.commands.iter().map(|c| c.name.as_str()).collect()),
    )
}

/// `aegis call SERVICE [NAME] --schema`: what a method or a command takes
/// (and a method returns), or, without a name, the service's every method
/// and command.
async fn print_schema(args: &CallArgs) -> anyhow::Result<ExitCode> {
    let conn = args.nats.connect_as_operator().await?;
    let described = match describe_service(
        &conn,
        &args.service,
        Duration::from_millis(args.timeout_ms),
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            if matches!(e, RpcError::NoResponders { .. })
                && let Some(unknown) =
                    crate::status::unknown_to_registry(&conn, &args.service).await
            {
                eprintln!("error: {unknown}");
            } else {
                eprintln!("error [{}]: {}", e.code(), with_causes(e));
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let by = format!(
        "described by {} (version {})",
        described.instance_id, described.version
    );
    let Some(name) = &args.method else {
        println!("{}", serde_json::to_string_pretty(&described)?);
        eprintln!("{}\n{by}", summary(&described));
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(method) = described.methods.iter().find(|m| &m.name == name) {
        println!("{}", serde_json::to_string_pretty(method)?);
        eprintln!("{by}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(command) = described.commands.iter().find(|c| &c.name == name) {
        println!("{}", serde_json::to_string_pretty(command)?);
        eprintln!(
            "a command of {service}: send it with `aegis command {service} {name} [PAYLOAD]`\n{by}",
            service = args.service
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} has no method or command `{name}`\n{}",
        args.service,
        summary(&described)
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{}` does not decode into `()`: a method whose request schema is
    /// `null` gets `null` when no body is given, any other `{}`.
    #[test]
    fn no_body_is_null_to_a_method_that_takes_nothing() {
        use serde_json::json;
        let unit = serde_json::to_value(aegis_sdk::schemars::schema_for!(())).unwrap();
        assert!(takes_nothing(&unit), "{unit}");
        assert_eq!(default_body(Some(unit)), json!(null));
        assert!(takes_nothing(&json!({ "type": ["null"] })));
        for other in [
            json!({ "type": "object" }),
            json!({ "type": ["object", "null"] }),
            json!(true),
            json!({}),
        ] {
            assert!(!takes_nothing(&other), "{other}");
            assert_eq!(default_body(Some(other)), json!({}));
        }
        assert_eq!(default_body(None), json!({}));
    }

    #[test]
    fn a_body_that_is_not_json_is_quoted_short() {
        assert_eq!(quoted_prefix("{oops"), "`{oops`");
        assert_eq!(quoted_prefix("{\n}x"), "`{\\n}x`");
        let long = format!("{}é", "[".repeat(100));
        assert_eq!(
            quoted_prefix(&long),
            format!("`{}…` (102 bytes)", "[".repeat(QUOTED))
        );
        let err = request_body("{\"a\": }").unwrap_err().to_string();
        assert!(
            err.starts_with("the request body is not JSON: expected value")
                && err.ends_with("; it was `{\"a\": }`"),
            "{err}"
        );
        assert_eq!(request_body("\"-\"").unwrap(), serde_json::json!("-"));
        assert!(
            request_body("@")
                .unwrap_err()
                .to_string()
                .contains("names no file")
        );
    }

    #[test]
    fn an_error_is_printed_with_its_causes() {
        let err = RpcError::Election(ElectionError::NotSynced(Duration::from_secs(3)));
        assert_eq!(
            with_causes(err),
            "cannot read the election keys: the election keys did not load within 3s"
        );
    }

    #[test]
    fn a_view_that_did_not_load_in_time_says_what_to_do() {
        let late = [
            RpcError::Election(ElectionError::NotSynced(Duration::from_secs(3))),
            RpcError::Discovery(DiscoveryError::Registry(RegistryError::NotSynced(
                Duration::from_secs(3),
            ))),
        ];
        for err in late {
            let line = call_error(err, None);
            assert!(
                line.contains("did not load within 3s") && line.contains("try again"),
                "{line}"
            );
        }
        let other = call_error(
            RpcError::NoInstances {
                service: "order-service".into(),
                records: 2,
                similar: Vec::new(),
            },
            None,
        );
        assert_eq!(
            other,
            "no ACTIVE instance of order-service is registered (2 records, none ACTIVE)"
        );
    }

    /// Tried as a new user would: a mistyped method did not say which
    /// methods there are, `--active` on a plain service answered in the
    /// SDK's words ("use call, not call_active"), and the service's error
    /// lost its details.
    #[test]
    fn a_failed_call_says_what_the_command_can_do_about_it() {
        let missing = RpcError::NoSuchMethod {
            service: "fx-service".into(),
            method: "get_ratez".into(),
            methods: Vec::new(),
        };
        assert_eq!(
            call_error(missing, Some(vec!["get_rate".into(), "convert".into()])),
            "no instance of fx-service serves get_ratez (it has: get_rate, convert)"
        );
        // The SDK's error names them itself when the records list them.
        let listed = RpcError::NoSuchMethod {
            service: "fx-service".into(),
            method: "get_ratez".into(),
            methods: vec!["convert".into(), "get_rate".into()],
        };
        assert_eq!(
            call_error(listed, Some(vec!["get_rate".into(), "convert".into()])),
            "no instance of fx-service serves get_ratez (it has: convert, get_rate)"
        );
        let plain = RpcError::NotSingleActive {
            service: "fx-service".into(),
        };
        assert_eq!(
            call_error(plain, None),
            "fx-service is not single-active (it has no leader to call): drop --active"
        );
        let refused = RpcError::Remote {
            subject: "rpc.fx-service.fx-1.get_rate".into(),
            error: aegis_sdk::rpc::WireError::not_found("no rate for XXX")
                .with_details(serde_json::json!({ "pair": "XXX" })),
        };
        let line = call_error(refused, None);
        assert!(line.ends_with("\ndetails: {\"pair\":\"XXX\"}"), "{line}");
    }
}
