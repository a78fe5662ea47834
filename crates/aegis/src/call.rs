//! `aegis call SERVICE METHOD [BODY]`: one RPC through discovery (or to one
//! instance, or to a sticky group's leader), printing the reply and who
//! served it; with `--schema`, what the method takes and returns instead.

use std::{process::ExitCode, time::Duration};

use aegis_sdk::{
    discovery::DiscoveryError,
    election::ElectionError,
    registry::RegistryError,
    rpc::{CallOptions, RpcError},
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
    /// Method name, e.g. `get_price`.
    pub method: String,
    /// Request body as JSON.
    #[arg(default_value = "{}")]
    pub body: String,
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
    /// and reply (from `$SRV.INFO`) instead of calling it.
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
    let body: serde_json::Value = serde_json::from_str(&args.body)
        .with_context(|| format!("the request body is not JSON: {}", args.body))?;
    let conn = args.nats.connect_as_operator().await?;
    let mut opts = CallOptions::timeout(Duration::from_millis(args.timeout_ms));
    opts.idempotent = args.idempotent;
    let rpc = conn.rpc();
    let result = match &args.instance {
        None if args.active => {
            rpc.call_active::<_, serde_json::Value>(
                &args.service,
                &args.group,
                &args.method,
                &body,
                &opts,
            )
            .await
        }
        Some(instance) => {
            rpc.call_instance::<_, serde_json::Value>(
                &args.service,
                instance,
                &args.method,
                &body,
                &opts,
            )
            .await
        }
        None => {
            rpc.call_with::<_, serde_json::Value>(&args.service, &args.method, &body, &opts)
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
            // A method the service does not have: say which it has.
            let known = match &e {
                RpcError::NoSuchMethod { service, .. } => {
                    aegis_sdk::rpc::describe(conn.client(), service, DESCRIBE_WAIT)
                        .await
                        .ok()
                        .map(|d| d.methods.into_iter().map(|m| m.name).collect())
                }
                _ => None,
            };
            // With its causes: "the service registry is unavailable" alone
            // does not say that the registry view did not load in time.
            eprintln!("error [{}]: {}", e.code(), call_error(e, known));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// An error and its causes on one line.
fn with_causes(error: impl std::error::Error + 'static) -> String {
    Causes(&error).to_string()
}

/// How long a failed call waits for the service's description (to list
/// its methods).
const DESCRIBE_WAIT: Duration = Duration::from_secs(1);

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

/// `aegis call SERVICE METHOD --schema`: what the method takes and returns.
async fn print_schema(args: &CallArgs) -> anyhow::Result<ExitCode> {
    let conn = args.nats.connect_as_operator().await?;
    let described = match aegis_sdk::rpc::describe(
        conn.client(),
        &args.service,
        Duration::from_millis(args.timeout_ms),
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error [{}]: {}", e.code(), with_causes(e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(method) = described.methods.iter().find(|m| m.name == args.method) else {
        let known: Vec<&str> = described.methods.iter().map(|m| m.name.as_str()).collect();
        eprintln!(
            "{} has no method `{}` (it has: {})",
            args.service,
            args.method,
            known.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    };
    println!("{}", serde_json::to_string_pretty(method)?);
    eprintln!(
        "described by {} (version {})",
        described.instance_id, described.version
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            },
            None,
        );
        assert_eq!(other, "no ACTIVE instance of order-service is registered");
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
        };
        assert_eq!(
            call_error(missing, Some(vec!["get_rate".into(), "convert".into()])),
            "no instance of fx-service serves get_ratez (it has: get_rate, convert)"
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
