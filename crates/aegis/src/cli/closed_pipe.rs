//! A command whose reader has gone (`aegis call … | head -25`) ends
//! quietly, as `cat` does in the same place: no panic, no stack trace, no
//! error line, exit status 141 (128 + SIGPIPE, what a shell shows for a
//! tool a closed pipe ended).
//!
//! Rust ignores SIGPIPE, so a write to a pipe without a reader fails with
//! `EPIPE`: `println!` panics on it, a `write!` returns it as an error.
//! SIGPIPE is not restored to its default action instead because that kills
//! the process on the spot, and `aegis up` and the benchmarks stop the
//! processes they started only when their handles are dropped. So the
//! panic unwinds (dropping those handles) with its report silenced, and
//! [`super::main`] turns it, or an error the closed pipe caused, into the
//! quiet exit. Whether the pipe is closed is asked of the kernel (`poll`
//! reports `POLLERR` on a pipe's write end once no reader is left), not
//! read from a message.

use std::{
    io::ErrorKind,
    os::fd::AsFd,
    sync::atomic::{AtomicBool, Ordering},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The exit status of a command whose output's reader has gone.
pub(super) const EXIT_STATUS: u8 = 128 + nix::libc::SIGPIPE as u8;

/// Set when a print failed because its reader had gone (the panic hook
/// silenced the report).
static PRINT_CUT_OFF: AtomicBool = AtomicBool::new(false);

/// Whether the reader of stdout or of stderr has gone (each is a pipe
/// whose read end is closed).
pub(super) fn output_gone() -> bool {
    reader_gone(std::io::stdout().as_fd()) || reader_gone(std::io::stderr().as_fd())
}

fn reader_gone(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
}

/// Installs a panic hook that says nothing for a print that failed because
/// its reader had gone (std's print macros panic in `io/stdio.rs`), and
/// leaves every other panic to the default report.
pub(super) fn silence_cut_off_prints() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_print = info.location().is_some_and(|at| {
            at.file()
                .replace('\\', "/")
                .ends_with("std/src/io/stdio.rs")
        });
        if in_print && output_gone() {
            PRINT_CUT_OFF.store(true, Ordering::SeqCst);
        } else {
            default(info);
        }
    }));
}

/// Whether a print was cut off (its panic silenced by the hook).
pub(super) fn print_cut_off() -> bool {
    PRINT_CUT_OFF.load(Ordering::SeqCst)
}

/// Whether `error` is a write that failed because the output's reader had
/// gone (a command that writes with `write!` and returns the error).
pub(super) fn caused(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    }) && output_gone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_without_a_reader_is_gone_and_one_with_a_reader_is_not() {
        let (reader, writer) = std::io::pipe().unwrap();
        assert!(!reader_gone(writer.as_fd()));
        drop(reader);
        assert!(reader_gone(writer.as_fd()));
    }
}
