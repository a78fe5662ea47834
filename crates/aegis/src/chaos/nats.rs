//! `aegis chaos kill-nats` and `restart-nats`: a NATS node of the running
//! showcase stopped — crashed (SIGKILL), stopped quickly (SIGTERM) or in
//! lame duck mode (SIGUSR2) — and started again, through the supervisor's
//! control files (see [`Remote`]): `hold-nats-nN` keeps a node down once it
//! exits, `restart-nats-nN` starts it again.

use std::time::Duration;

use anyhow::bail;
use nix::sys::signal::Signal;

use crate::up::remote::{LAME_DUCK_EXIT, QUICK_EXIT, Remote};

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

/// SIGKILLs node `node` and keeps it down (held) until `restart-nats`.
///
/// # Errors
/// When the showcase runs no such node, or it does not run or cannot be
/// signalled.
pub(super) fn kill(remote: &Remote, node: usize) -> anyhow::Result<()> {
    let name = child_name(remote, node)?;
    anyhow::ensure!(remote.alive(&name), "NATS node {node} is not running");
    remote.hold(&name)?;
    let pid = remote
        .signal(&name, Signal::SIGKILL)
        .inspect_err(|_| remote.unhold(&name))?;
    println!(
        "SIGKILLed NATS node {node} (pid {pid}); `aegis chaos restart-nats {node}` brings it back"
    );
    Ok(())
}

/// Restarts node `node`: a running one is stopped (SIGTERM, or lame duck
/// mode when `graceful`) and kept down until it exited, then started again;
/// a stopped one is started. Returns once the new process runs.
///
/// # Errors
/// When the showcase runs no such node, when `graceful` and the node does
/// not run, when it does not exit in time, or when the supervisor does not
/// start it again; no request is left for the supervisor then.
pub(super) async fn restart(remote: &Remote, node: usize, graceful: bool) -> anyhow::Result<()> {
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
             `aegis chaos restart-nats {node}` starts it"
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
}
