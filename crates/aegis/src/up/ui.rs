//! Which UI export `aegis up` serves, and building it first when it is run
//! from a checkout whose export is missing or older than the UI's sources
//! (the same rule as the Makefile's `ui/out/index.html` target, so `make up`
//! and a bare `aegis up` behave alike).
//!
//! A build that cannot run (no npm, a failing build) does not stop the
//! showcase: the API and the services are still worth having, so it says
//! what failed and how to build by hand, and serves the old export if there
//! is one.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::SystemTime,
};

use tokio_util::sync::CancellationToken;

/// The UI's sources, relative to the UI's directory: what the export is
/// built from (keep in step with `UI_SOURCES` in the Makefile).
const SOURCE_DIRS: [&str; 4] = ["app", "components", "hooks", "lib"];
const SOURCE_FILES: [&str; 5] = [
    "package.json",
    "package-lock.json",
    "next.config.ts",
    "postcss.config.mjs",
    "tsconfig.json",
];

/// Why the export in `ui/out` has to be (re)built, or `None` when it is
/// current. `ui` is the UI's directory (holding `package.json`).
pub fn stale_reason(ui: &Path) -> Option<String> {
    let index = ui.join("out").join("index.html");
    let Some(built) = modified(&index) else {
        return Some(format!("{} is missing", index.display()));
    };
    let newest = newest_source(ui)?;
    (newest.1 > built).then(|| format!("{} changed after the export was built", newest.0.display()))
}

/// The UI directory to serve: `explicit` as given (never built, whatever
/// `build` says); otherwise `ui/out` under the current directory, built
/// first when stale unless `build` is false. `None` when there is nothing
/// to serve (the API still runs).
///
/// # Errors
/// An `explicit` directory with no `index.html`: the UI it would advertise
/// would answer 404.
pub async fn resolve(
    explicit: Option<PathBuf>,
    build: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = explicit {
        if !dir.join("index.html").is_file() {
            anyhow::bail!(
                "--ui-dir {}: no index.html there, so there is no UI to serve; pass the directory of a built export (`make ui` builds ui/out), or leave --ui-dir out",
                dir.display()
            );
        }
        return Ok(Some(dir));
    }
    Ok(resolve_default(build, shutdown).await)
}

/// `ui/out`, built first when stale and `build`; see [`resolve`].
async fn resolve_default(build: bool, shutdown: &CancellationToken) -> Option<PathBuf> {
    let ui = PathBuf::from("ui");
    let out = ui.join("out");
    let exists = out.join("index.html").is_file();
    if !ui.join("package.json").is_file() {
        // Not a checkout: serve an export someone placed here, if any.
        return exists.then_some(out);
    }
    match stale_reason(&ui) {
        None => return Some(out),
        Some(reason) if !build => {
            println!(
                "  ! the UI export is stale ({reason}); --no-ui-build given, serving it as it is"
            );
            return exists.then_some(out);
        }
        Some(reason) => println!("  … building the UI ({reason}; about a minute)"),
    }
    match build_export(&ui, shutdown).await {
        Ok(()) => Some(out),
        Err(e) => {
            println!(
                "  ! could not build the UI: {e}\n    build it by hand with `make ui` (or `cd ui && npm ci && npm run build`); {}",
                if exists {
                    "serving the previous export meanwhile"
                } else {
                    "the API runs without a UI meanwhile"
                }
            );
            exists.then_some(out)
        }
    }
}

/// `npm ci` when the packages are missing, then `npm run build`, with their
/// output in `ui/build.log`.
async fn build_export(ui: &Path, shutdown: &CancellationToken) -> Result<(), String> {
    let log_path = ui.join("build.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
    let mut steps = Vec::new();
    if !ui.join("node_modules").is_dir() {
        steps.push(["ci", "--no-audit", "--no-fund"].as_slice());
    }
    steps.push(["run", "build"].as_slice());
    for args in steps {
        let out = log.try_clone().map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut npm = tokio::process::Command::new("npm");
        // npm runs the packages' own scripts: none of the shell's
        // credentials (see `super::not_inherited`).
        for var in super::not_inherited(true, false) {
            npm.env_remove(var);
        }
        let mut child = npm
            .args(args)
            .current_dir(ui)
            .env("NEXT_TELEMETRY_DISABLED", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run npm ({e}); Node.js 20+ with npm is needed"))?;
        let status = tokio::select! {
            () = shutdown.cancelled() => return Err("stopped while building".into()),
            status = child.wait() => status.map_err(|e| e.to_string())?,
        };
        if !status.success() {
            return Err(format!(
                "`npm {}` failed ({status}); its output is in {}",
                args.join(" "),
                log_path.display()
            ));
        }
    }
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The most recently changed source file and when.
fn newest_source(ui: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    let mut consider = |path: PathBuf| {
        if let Some(t) = modified(&path)
            && newest.as_ref().is_none_or(|(_, n)| t > *n)
        {
            newest = Some((path, t));
        }
    };
    for file in SOURCE_FILES {
        consider(ui.join(file));
    }
    let mut dirs: Vec<PathBuf> = SOURCE_DIRS.iter().map(|d| ui.join(d)).collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => consider(path),
                _ => {}
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn touch(path: &Path, at: SystemTime) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(path).unwrap();
        file.set_modified(at).unwrap();
    }

    #[tokio::test]
    async fn an_explicit_directory_is_served_as_given_only_with_an_index_html() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        for given in [dir.path().to_owned(), dir.path().join("nonexistent")] {
            let err = resolve(Some(given.clone()), true, &shutdown)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("--ui-dir"), "{err}");
            assert!(err.contains("index.html"), "{err}");
            assert!(err.contains(&given.display().to_string()), "{err}");
        }
        touch(&dir.path().join("index.html"), SystemTime::now());
        let served = resolve(Some(dir.path().to_owned()), true, &shutdown).await;
        assert_eq!(served.unwrap().as_deref(), Some(dir.path()));
    }

    #[test]
    fn a_missing_export_is_built() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("package.json"), SystemTime::now());
        let reason = stale_reason(dir.path()).unwrap();
        assert!(reason.contains("index.html is missing"), "{reason}");
    }

    #[test]
    fn an_export_older_than_a_nested_source_is_rebuilt_and_a_newer_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let then = SystemTime::now() - Duration::from_secs(600);
        let now = SystemTime::now();
        touch(&dir.path().join("package.json"), then);
        touch(
            &dir.path().join("out/index.html"),
            then + Duration::from_secs(60),
        );
        touch(&dir.path().join("components/dashboard/card.tsx"), then);
        assert_eq!(stale_reason(dir.path()), None);

        touch(&dir.path().join("components/dashboard/card.tsx"), now);
        let reason = stale_reason(dir.path()).unwrap();
        assert!(reason.contains("card.tsx changed"), "{reason}");

        // Files outside the sources (tests, the export itself) do not count.
        touch(
            &dir.path().join("out/index.html"),
            now + Duration::from_secs(1),
        );
        touch(
            &dir.path().join("tests/x.test.tsx"),
            now + Duration::from_secs(2),
        );
        assert_eq!(stale_reason(dir.path()), None);
    }
}
