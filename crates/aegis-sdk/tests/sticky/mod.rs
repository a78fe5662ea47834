//! The sticky service the `leader_of` command tests run their workers
//! under (`commands_leader.rs`, `commands_partition.rs`): one instance of
//! a single-active service, and a worker that follows its leadership.
#![allow(dead_code, unreachable_pub)]

use aegis_sdk::{
    Connection,
    commands::{CommandWorker, CommandWorkerBuilder},
    rpc::Service,
};
use serde_json::{Value, json};

/// The service's name.
pub const SERVICE: &str = "book-service";

/// Starts instance `id` of the sticky service [`SERVICE`] on `conn`, in
/// the group `default`, with one method any role answers, `ping`.
pub async fn sticky_service(conn: &Connection, id: &str) -> Service {
    conn.service(SERVICE, "1.0.0")
        .instance_id(id)
        .single_active("default")
        .handler_any_role("ping", |_: Value| async move { Ok(json!({"ok": true})) })
        .start()
        .await
        .unwrap()
}

/// Starts the command worker `declare` makes of a `leader_of(service)`
/// worker of [`SERVICE`].
pub async fn leader_worker(
    conn: &Connection,
    service: &Service,
    declare: impl FnOnce(CommandWorkerBuilder) -> CommandWorkerBuilder,
) -> CommandWorker {
    declare(conn.commands().worker(SERVICE).leader_of(service))
        .start()
        .await
        .unwrap()
}
