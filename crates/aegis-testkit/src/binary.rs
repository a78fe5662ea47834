//! Finding a `nats-server` binary of a supported version.
//!
//! Order: `AEGIS_NATS_SERVER` (authoritative when set), then
//! `$AEGIS_TOOLS_DIR/bin/nats-server`, then `<workspace>/.tools/bin/nats-server`
//! (where `make bootstrap` installs it), then every `nats-server` on `PATH`.
//! Binaries older than [`MIN_VERSION`] are skipped and named in the error.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use crate::error::TestkitError;

/// The oldest supported `nats-server`: Aegis uses per-message TTLs and KV
/// limit markers, which arrived in 2.11.
pub const MIN_VERSION: (u64, u64, u64) = (2, 11, 0);

/// The workspace root, for the project-local `.tools` folder.
const WORKSPACE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Returns the `nats-server` to use, looked up once per process.
///
/// Looks at, in order: the `AEGIS_NATS_SERVER` environment variable (which
/// must then name an existing binary), `$AEGIS_TOOLS_DIR/bin/nats-server`,
/// `<workspace root>/.tools/bin/nats-server`, and `nats-server` on `PATH`.
/// Each candidate must report version 2.11 or newer; older ones found on
/// `PATH` are skipped.
///
/// # Errors
///
/// [`TestkitError::BinaryNotFound`] (its message says how to install one),
/// or [`TestkitError::TooOld`] / [`TestkitError::UnknownVersion`] when
/// `AEGIS_NATS_SERVER` names an unusable binary.
///
/// # Examples
///
/// ```no_run
/// let path = aegis_testkit::nats_server_binary()?;
/// println!("using {}", path.display());
/// # Ok::<(), aegis_testkit::TestkitError>(())
/// ```
pub fn nats_server_binary() -> Result<PathBuf, TestkitError> {
    static FOUND: OnceLock<Result<PathBuf, TestkitError>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        lookup(&Sources {
            explicit: env::var_os("AEGIS_NATS_SERVER").filter(|v| !v.is_empty()),
            tools_dir: env::var_os("AEGIS_TOOLS_DIR").filter(|v| !v.is_empty()),
            workspace_root: PathBuf::from(WORKSPACE_ROOT),
            path: env::var_os("PATH"),
        })
    });
    match found {
        Ok(path) => Ok(path.clone()),
        Err(e) => Err(e.clone_lookup()),
    }
}

/// Runs `path --version` and parses `nats-server: v2.15.1` into `(2, 15, 1)`.
///
/// # Errors
///
/// [`TestkitError::Spawn`] when the binary cannot be run,
/// [`TestkitError::UnknownVersion`] when its output has no version.
///
/// # Examples
///
/// ```no_run
/// let bin = aegis_testkit::nats_server_binary()?;
/// let (major, minor, patch) = aegis_testkit::server_version(&bin)?;
/// assert!((major, minor) >= (2, 11));
/// # let _ = patch;
/// # Ok::<(), aegis_testkit::TestkitError>(())
/// ```
pub fn server_version(path: &Path) -> Result<(u64, u64, u64), TestkitError> {
    let mut attempt = 0;
    let output = loop {
        match Command::new(path).arg("--version").output() {
            Ok(output) => break output,
            // ETXTBSY: another thread forked while this binary was still open
            // for writing (freshly installed); it clears within moments.
            Err(e) if e.raw_os_error() == Some(26) && attempt < 5 => {
                attempt += 1;
                thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(TestkitError::Spawn {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_version(&text).ok_or_else(|| TestkitError::UnknownVersion {
        path: path.to_path_buf(),
        output: text.trim().to_owned(),
    })
}

/// Checks that `path` runs and is at least [`MIN_VERSION`].
pub(crate) fn check_binary(path: &Path) -> Result<(), TestkitError> {
    let version = server_version(path)?;
    if version < MIN_VERSION {
        return Err(TestkitError::TooOld {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(())
}

/// Parses the first `vMAJOR.MINOR.PATCH` in `text`; a suffix such as
/// `-beta.1` is ignored.
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    text.split_whitespace().find_map(|word| {
        let mut parts = word.strip_prefix('v')?.splitn(3, '.');
        let mut number = || -> Option<u64> {
            let part = parts.next()?;
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some((number()?, number()?, number()?))
    })
}

/// The environment the lookup reads, separated out so it can be tested
/// without touching the process environment.
struct Sources {
    explicit: Option<OsString>,
    tools_dir: Option<OsString>,
    workspace_root: PathBuf,
    path: Option<OsString>,
}

fn lookup(sources: &Sources) -> Result<PathBuf, TestkitError> {
    if let Some(explicit) = &sources.explicit {
        let path = PathBuf::from(explicit);
        if !path.is_file() {
            return Err(TestkitError::BinaryNotFound {
                rejected: vec![format!(
                    "AEGIS_NATS_SERVER={}: no such file",
                    path.display()
                )],
            });
        }
        check_binary(&path)?;
        return Ok(path);
    }

    let mut candidates = Vec::new();
    if let Some(dir) = &sources.tools_dir {
        candidates.push(Path::new(dir).join("bin/nats-server"));
    }
    candidates.push(sources.workspace_root.join(".tools/bin/nats-server"));
    if let Some(path_var) = &sources.path {
        candidates.extend(env::split_paths(path_var).map(|dir| dir.join("nats-server")));
    }

    let mut rejected = Vec::new();
    for candidate in candidates {
        if !candidate.is_file() {
            continue;
        }
        match check_binary(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(TestkitError::TooOld {
                version: (a, b, c), ..
            }) => rejected.push(format!(
                "{}: version {a}.{b}.{c} is older than 2.11.0",
                candidate.display()
            )),
            Err(e) => rejected.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(TestkitError::BinaryNotFound { rejected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn fake_server(dir: &Path, version: &str) -> PathBuf {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let path = bin.join("nats-server");
        fs::write(&path, format!("#!/bin/sh\necho 'nats-server: {version}'\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn sources(root: &Path) -> Sources {
        Sources {
            explicit: None,
            tools_dir: None,
            workspace_root: root.join("no-workspace"),
            path: None,
        }
    }

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(
            parse_version("nats-server: v2.11.0-beta.2"),
            Some((2, 11, 0))
        );
        assert_eq!(parse_version("nats-server: unknown"), None);
    }

    #[test]
    fn too_old_on_path_is_skipped_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let old = fake_server(&tmp.path().join("old"), "v2.9.25");
        let mut s = sources(tmp.path());
        s.path = Some(old.parent().unwrap().as_os_str().to_owned());
        match lookup(&s) {
            Err(TestkitError::BinaryNotFound { rejected }) => {
                assert_eq!(rejected.len(), 1);
                assert!(rejected[0].contains("2.9.25"), "{rejected:?}");
            }
            other => panic!("unexpected {other:?}"),
        }

        let new = fake_server(&tmp.path().join("new"), "v2.15.1");
        s.path = Some(env::join_paths([old.parent().unwrap(), new.parent().unwrap()]).unwrap());
        assert_eq!(lookup(&s).unwrap(), new);
    }

    #[test]
    fn tools_dir_comes_before_path() {
        let tmp = tempfile::tempdir().unwrap();
        let tools = tmp.path().join("tools");
        let in_tools = fake_server(&tools, "v2.12.0");
        let on_path = fake_server(&tmp.path().join("path"), "v2.15.1");
        let mut s = sources(tmp.path());
        s.tools_dir = Some(tools.into_os_string());
        s.path = Some(on_path.parent().unwrap().as_os_str().to_owned());
        assert_eq!(lookup(&s).unwrap(), in_tools);
    }

    #[test]
    fn explicit_binary_must_exist_and_be_new_enough() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = sources(tmp.path());
        s.explicit = Some(tmp.path().join("missing").into_os_string());
        assert!(matches!(
            lookup(&s),
            Err(TestkitError::BinaryNotFound { .. })
        ));

        let old = fake_server(tmp.path(), "v2.10.0");
        s.explicit = Some(old.into_os_string());
        assert!(matches!(
            lookup(&s),
            Err(TestkitError::TooOld {
                version: (2, 10, 0),
                ..
            })
        ));
    }
}
