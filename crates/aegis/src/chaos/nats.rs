//! `aegis chaos kill-nats` and `restart-nats`: a NATS node of the running
//! showcase stopped — crashed (SIGKILL), stopped quickly (SIGTERM) or in
//! lame duck mode (SIGUSR2) — and started again, through the supervisor's
//! control files (see [`Remote`]): `hold-nats-nN` keeps a node down once it
//! exits, `restart-nats-nN` starts it again.
//!
//! Only the local showcase's nodes: a process is signalled, and no NATS
//! request stops a server. The connection flags these actions take (so
//! that one `--credentials FILE` suffix works on every chaos command) must
//! name that showcase; naming anything else is refused
//! ([`check_connection_flags`]), never silently ignored.

use std::{path::Path, time::Duration};

use anyhow::bail;
use nix::sys::signal::Signal;

use crate::{
    cli::ConnectArgs,
    up::remote::{LAME_DUCK_EXIT, QUICK_EXIT, Remote},
};

/// How long the supervisor (which looks at its control files every 200 ms)
/// may take to start a node it was asked to.
const START_WITHIN: Duration = Duration::from_secs(10);

/// The child name of node `node` (`nats-n2`), when the showcase runs it.
///
/// # Errors
/// When it runs no such node, or has not said which it runs.
fn child_name(remote: &Remote, node: usize) -> anyhow::Result<String> {
    check_node(remote.nats_nodes().as_deref(), node)
}

/// [`child_name`] on the node names the showcase wrote (`None`: none).
fn check_node(nodes: Option<&[String]>, node: usize) -> anyhow::Result<String> {
    let Some(nodes) = nodes else {
        bail!(
            "the showcase has not said which NATS nodes it runs (no `{}` in its state \
             directory: `aegis up` writes it once its nodes are healthy)",
            crate::up::nats::NODES_FILE
        );
    };
    let name = format!("n{node}");
    if nodes.contains(&name) {
        return Ok(format!("nats-{name}"));
    }
    match nodes.len() {
        0 => bail!(
            "the showcase runs no NATS node of its own (it was started with --nats-url): \
             nothing to kill or restart"
        ),
        1 => bail!("no such NATS node {node} (the showcase runs node 1 only)"),
        n => bail!("no such NATS node {node} (the showcase runs nodes 1-{n})"),
    }
}

/// Refuses connection flags of `kill-nats`/`restart-nats` (`action`) that
/// name anything but the showcase in `dir` (`given` when named by
/// `--state-dir`): a `--nats-url` with a server that is none of its nodes
/// (or an exported `AEGIS_NATS_URL`, unless `given`, as every tool takes
/// it), the `--credentials` of another state
/// directory, or a `--config`/`--nats-creds` (no connection is made).
///
/// # Errors
/// Naming the flag, and that these actions act only on the local
/// showcase's nodes.
pub(super) fn check_connection_flags(
    dir: &Path,
    given: bool,
    nats: &ConnectArgs,
    action: &str,
) -> anyhow::Result<()> {
    let refuse = |why: String| {
        anyhow::anyhow!(
            "`aegis chaos {action}` acts only on the NATS nodes of the local showcase \
             (`aegis up` with its state in {}): it signals their processes, and cannot stop \
             a server elsewhere; {why}",
            dir.display()
        )
    };
    let connection = &nats.connection;
    if nats.url_given_with(given) {
        let ours = crate::up::credentials::read_nats_url(dir).unwrap_or_default();
        let ours: Vec<String> = ours.split(',').filter_map(server_of).collect();
        let foreign: Vec<&str> = connection
            .nats_url
            .split(',')
            .filter(|u| server_of(u).is_some_and(|s| !ours.contains(&s)))
            .collect();
        if !foreign.is_empty() {
            let theirs = if ours.is_empty() {
                "no showcase runs there".to_owned()
            } else {
                format!("its nodes are {}", ours.join(","))
            };
            return Err(refuse(format!(
                "{} {} is none of its nodes ({theirs})",
                if crate::cli::url_flag_given() {
                    "--nats-url"
                } else {
                    "AEGIS_NATS_URL"
                },
                crate::up::redacted(&foreign.join(","))
            )));
        }
    }
    if let Some(file) = &nats.credentials {
        let parent = crate::cli::dir_of_credentials(file);
        if !crate::cli::same_dir(parent, dir) {
            return Err(refuse(format!(
                "--credentials {} is another state directory's file (pass --state-dir {} \
                 to act on the showcase there)",
                file.display(),
                parent.display()
            )));
        }
    }
    for (flag, given) in [
        ("--config", connection.config.is_some()),
        ("--nats-creds", connection.nats_creds.is_some()),
    ] {
        if given {
            return Err(refuse(format!(
                "{flag} configures a NATS connection, which this action does not make \
                 (leave it out)"
            )));
        }
    }
    Ok(())
}

/// The server a URL names, as `host:port` (scheme and user info dropped,
/// `localhost` as `127.0.0.1`), to tell whether two URLs name one server.
fn server_of(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    if host_port.is_empty() {
        return None;
    }
    let host_port = host_port.to_ascii_lowercase();
    let host_port = match host_port.strip_prefix("localhost") {
        Some(port) => format!("127.0.0.1{port}"),
        None => host_port,
    };
    Some(if host_port.contains(':') && !host_port.ends_with(']') {
        host_port
    } else {
        format!("{host_port}:4222")
    })
}

/// SIGKILLs node `node` and keeps it down (held) until `restart-nats`,
/// whose command it prints with `again` (the `--state-dir` given).
///
/// # Errors
/// When the showcase runs no such node, or it does not run or cannot be
/// signalled.
pub(super) fn kill(remote: &Remote, node: usize, again: &str) -> anyhow::Result<()> {
    let name = child_name(remote, node)?;
    anyhow::ensure!(remote.alive(&name), "NATS node {node} is not running");
    remote.hold(&name)?;
    let pid = remote
        .signal(&name, Signal::SIGKILL)
        .inspect_err(|_| remote.unhold(&name))?;
    println!(
        "SIGKILLed NATS node {node} (pid {pid}); `aegis chaos restart-nats {node}{again}` brings it \
         back"
    );
    Ok(())
}

/// Restarts node `node`: a running one is stopped (SIGTERM, or lame duck
/// mode when `graceful`) and kept down until it exited, then started again;
/// a stopped one is started. Returns once the new process runs. `again`
/// (the `--state-dir` given) is added to a command it names.
///
/// # Errors
/// When the showcase runs no such node, when `graceful` and the node does
/// not run, when it does not exit in time, or when the supervisor does not
/// start it again; no request is left for the supervisor then.
pub(super) async fn restart(
    remote: &Remote,
    node: usize,
    graceful: bool,
    again: &str,
) -> anyhow::Result<()> {
    let name = child_name(remote, node)?;
    // The process to replace; a pid file naming one that exited (not yet
    // reaped by the supervisor) still tells the new process from the old.
    let old = remote.pid(&name);
    if remote.alive(&name) {
        let (signal, how, within) = if graceful {
            // SIGUSR2 is nats-server's lame duck mode, the planned stop
            // (`nats-server --signal ldm`): it steps down from the raft
            // groups it leads (a follower takes over within a second
            // instead of after the 4-9 s an election takes when a leader
            // vanishes), stops taking clients and tells its own, which the
            // SDK moves to another node at a moment with no request in
            // flight; after its grace period it closes the clients left
            // (spread over `lame_duck_duration`) and exits.
            (
                Signal::SIGUSR2,
                "gracefully (lame duck mode)",
                LAME_DUCK_EXIT,
            )
        } else {
            // SIGTERM is its quick stop: every client is closed at once
            // (the SDK reconnects them to the other nodes), a request in
            // flight on it is cut off, and it exits within a second.
            (Signal::SIGTERM, "(SIGTERM)", QUICK_EXIT)
        };
        remote.hold(&name)?;
        let pid = remote
            .signal(&name, signal)
            .inspect_err(|_| remote.unhold(&name))?;
        println!("NATS node {node} (pid {pid}) is stopping {how}");
        // Not exited in time: no longer held, so the supervisor starts it
        // again whenever it does exit.
        let took = remote
            .wait_gone(&name, pid, within)
            .await
            .inspect_err(|_| remote.unhold(&name))?;
        println!("NATS node {node} exited after {took:.1?}");
    } else if graceful {
        bail!(
            "NATS node {node} is not running, so it cannot stop gracefully; \
             `aegis chaos restart-nats {node}{again}` starts it"
        );
    }
    remote.release(&name)?;
    let new = remote
        .wait_new_process(&name, old, START_WITHIN)
        .await
        .inspect_err(|_| remote.withdraw(&name))?;
    match old {
        Some(old) => println!("NATS node {node} restarted: pid {new} (was pid {old})"),
        None => println!("NATS node {node} started: pid {new}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn a_node_is_one_the_showcase_runs() {
        assert_eq!(check_node(Some(&nodes(3)), 2).unwrap(), "nats-n2");
        let err = check_node(Some(&nodes(3)), 9).unwrap_err().to_string();
        assert_eq!(err, "no such NATS node 9 (the showcase runs nodes 1-3)");
        let err = check_node(Some(&nodes(3)), 0).unwrap_err().to_string();
        assert_eq!(err, "no such NATS node 0 (the showcase runs nodes 1-3)");
        let err = check_node(Some(&nodes(1)), 2).unwrap_err().to_string();
        assert_eq!(err, "no such NATS node 2 (the showcase runs node 1 only)");
        let err = check_node(Some(&[]), 1).unwrap_err().to_string();
        assert!(err.contains("started with --nats-url"), "{err}");
        let err = check_node(None, 1).unwrap_err().to_string();
        assert!(err.contains("has not said which NATS nodes"), "{err}");
    }

    #[test]
    fn urls_of_one_server_compare_equal() {
        let s = |u| server_of(u).unwrap();
        assert_eq!(s("nats://127.0.0.1:4222"), s("localhost:4222"));
        assert_eq!(s("nats://u:p@127.0.0.1:4222/"), "127.0.0.1:4222");
        assert_eq!(s("tls://Host.example"), "host.example:4222");
        assert_ne!(s("nats://127.0.0.1:4222"), s("nats://127.0.0.1:4223"));
        assert_eq!(server_of(" "), None);
    }
}
