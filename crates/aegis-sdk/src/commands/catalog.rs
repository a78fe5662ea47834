//! Which commands the running workers of a connection take, so that the
//! instances of their service on that connection list them in their
//! services-protocol answer (`$SRV.INFO`) next to their methods.
//!
//! A worker lists its commands when it starts and unlists them when it
//! stops (or is dropped): an instance lists only commands that a worker in
//! its process takes now. A worker started with
//! [`leader_of`](super::CommandWorkerBuilder::leader_of) is listed by the
//! instance it follows only; any other by every instance of its service on
//! its connection.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use aegis_contracts::subjects;
use serde_json::Value;

/// The endpoint metadata key saying what an endpoint is; `command` for a
/// command (a method has none).
pub(crate) const META_KIND: &str = "kind";
/// [`META_KIND`]'s value for a command.
pub(crate) const KIND_COMMAND: &str = "command";

/// One command a worker takes.
#[derive(Debug, Clone)]
pub(crate) struct CommandInfo {
    /// The command name.
    pub(crate) name: String,
    /// JSON Schema of its payload, from the handler's type.
    pub(crate) payload_schema: Value,
    /// The payload type's doc comment, if any.
    pub(crate) description: Option<String>,
    /// Whether only the leader of a single-active service takes it.
    pub(crate) leader_only: bool,
}

impl CommandInfo {
    /// The services-protocol endpoint metadata of this command of `service`.
    pub(crate) fn metadata(&self, service: &str) -> BTreeMap<String, String> {
        let mut metadata = BTreeMap::from([
            (META_KIND.to_owned(), KIND_COMMAND.to_owned()),
            ("leader_only".to_owned(), self.leader_only.to_string()),
            ("stream".to_owned(), subjects::COMMANDS_STREAM.to_owned()),
            ("consumer".to_owned(), consumer_name(service)),
            ("request_schema".to_owned(), self.payload_schema.to_string()),
        ]);
        if let Some(d) = &self.description {
            metadata.insert("description".to_owned(), d.clone());
        }
        metadata
    }
}

/// The durable consumer the workers of `service` share.
pub(crate) fn consumer_name(service: &str) -> String {
    format!("{service}_commands")
}

/// The commands of one running worker.
struct Listed {
    id: u64,
    service: String,
    /// Listed by this instance only (a leader-only worker's), else by
    /// every instance of the service.
    instance: Option<String>,
    commands: Vec<CommandInfo>,
}

/// The commands the running workers of one connection take.
#[derive(Default)]
pub(crate) struct CommandCatalog {
    next: AtomicU64,
    workers: Mutex<Vec<Listed>>,
}

impl fmt::Debug for CommandCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandCatalog").finish_non_exhaustive()
    }
}

impl CommandCatalog {
    /// Lists a worker's commands until the returned [`Listing`] drops.
    pub(crate) fn list(
        self: &Arc<Self>,
        service: &str,
        instance: Option<&str>,
        commands: Vec<CommandInfo>,
    ) -> Listing {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Listed {
            id,
            service: service.to_owned(),
            instance: instance.map(str::to_owned),
            commands,
        });
        Listing {
            catalog: Arc::downgrade(self),
            id,
        }
    }

    /// The commands instance `instance` of `service` lists: those of the
    /// workers running for it, in the order they started and declared
    /// them, each name once.
    pub(crate) fn of(&self, service: &str, instance: &str) -> Vec<CommandInfo> {
        let mut out: Vec<CommandInfo> = Vec::new();
        for listed in self.lock().iter() {
            if listed.service != service
                || listed.instance.as_deref().is_some_and(|i| i != instance)
            {
                continue;
            }
            for command in &listed.commands {
                if !out.iter().any(|c| c.name == command.name) {
                    out.push(command.clone());
                }
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listed>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running worker's place in its connection's [`CommandCatalog`]; its
/// commands are unlisted when it drops.
pub(crate) struct Listing {
    catalog: std::sync::Weak<CommandCatalog>,
    id: u64,
}

impl fmt::Debug for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listing").field("id", &self.id).finish()
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        if let Some(catalog) = self.catalog.upgrade() {
            catalog.lock().retain(|l| l.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> CommandInfo {
        CommandInfo {
            name: name.to_owned(),
            payload_schema: Value::Bool(true),
            description: None,
            leader_only: false,
        }
    }

    fn names(catalog: &CommandCatalog, service: &str, instance: &str) -> Vec<String> {
        catalog
            .of(service, instance)
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_worker_is_listed_by_its_service_until_it_drops() {
        let catalog = Arc::new(CommandCatalog::default());
        let all = catalog.list("ledger", None, vec![info("b"), info("a")]);
        let leader = catalog.list("ledger", Some("l-1"), vec![info("a"), info("c")]);
        let _other = catalog.list("pricing", None, vec![info("x")]);
        assert_eq!(names(&catalog, "ledger", "l-1"), ["b", "a", "c"]);
        assert_eq!(names(&catalog, "ledger", "l-2"), ["b", "a"]);
        drop(all);
        assert_eq!(names(&catalog, "ledger", "l-1"), ["a", "c"]);
        drop(leader);
        assert!(names(&catalog, "ledger", "l-1").is_empty());
        assert_eq!(names(&catalog, "pricing", "p-1"), ["x"]);
    }

    #[test]
    fn a_command_is_marked_as_one_with_its_schema() {
        let mut c = info("rebuild");
        c.description = Some("Rebuilds.".to_owned());
        let m = c.metadata("ledger");
        assert_eq!(m[META_KIND], KIND_COMMAND);
        assert_eq!(m["consumer"], "ledger_commands");
        assert_eq!(m["stream"], "COMMANDS");
        assert_eq!(m["request_schema"], "true");
        assert_eq!(m["description"], "Rebuilds.");
        assert_eq!(m["leader_only"], "false");
    }
}
