//! `aegis init` as the Helm chart's install/upgrade Job runs it, against a
//! real nats-server: with the config file the chart renders
//! (deploy/helm/aegis, templates/init-config.yaml) from a value set, and
//! the Job's arguments. A limit an operator raised by hand (`nats stream
//! edit`) survives the next `helm upgrade` unless the values set that
//! limit; one the values set is held as `aegis init` holds any.
//!
//! The chart is rendered with the pinned Helm engine the offline deploy
//! checks install (`scripts/deploy-check.sh`, a step of `make test` run
//! before the Rust tests, puts it in `.tools/deploy-venv`).

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

const MIB: i64 = 1024 * 1024;

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `aegis.toml` the chart's init ConfigMap holds when installed with
/// `values` (JSON, merged over the chart's values.yaml as `helm --values`
/// does).
fn chart_init_config(values: &serde_json::Value) -> String {
    render_init_config(&root().join("deploy/helm/aegis"), values)
}

/// [`chart_init_config`] of the chart in the folder `chart`.
fn render_init_config(chart: &std::path::Path, values: &serde_json::Value) -> String {
    let tools =
        std::env::var_os("AEGIS_TOOLS_DIR").map_or_else(|| root().join(".tools"), PathBuf::from);
    let python = tools.join("deploy-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/deploy-check.sh once (it installs the Helm engine this \
         test renders the chart with)",
        python.display()
    );
    let script = r#"
import json, sys
import helm_python as helm
import yaml
helm.disable_logging()
chart = helm.Chart.load(sys.argv[1])
files = chart.render(values=json.loads(sys.argv[2]), name="aegis", namespace="trading",
                     is_install=True)
text = next(t for n, t in files.items() if n.endswith("/init-config.yaml"))
sys.stdout.write(yaml.safe_load(text)["data"]["aegis.toml"])
"#;
    let out = Command::new(&python)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-c")
        .arg(script)
        .arg(chart)
        .arg(values.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rendering the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `aegis init` as the chart's Job does (`--showcase --replicas 1`,
/// the config file in AEGIS_CONFIG) with the file holding `config`; its
/// exit status and output.
fn init_as_the_chart(url: &str, dir: &tempfile::TempDir, config: &str) -> (Option<i32>, String) {
    let file = dir.path().join("aegis.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(common::AEGIS);
    for var in common::CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(["init", "--showcase", "--replicas", "1", "--nats-url", url])
        .env("AEGIS_CONFIG", &file)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), format!("{config}\n---\n{text}"))
}

/// Runs `work` with a JetStream context on the server at `url`.
fn with_jetstream<T>(url: &str, work: impl AsyncFnOnce(async_nats::jetstream::Context) -> T) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = async_nats::connect(url).await.unwrap();
            work(async_nats::jetstream::new(client)).await
        })
}

/// The stream `name`'s oldest message kept, bytes and messages.
fn limits_of(url: &str, name: &str) -> (Duration, i64, i64) {
    with_jetstream(url, async |js| {
        let info = js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .clone();
        (info.max_age, info.max_bytes, info.max_messages)
    })
}

/// Changes the stream `name`'s limits by hand (as `nats stream edit`).
fn edit_stream(
    url: &str,
    name: &str,
    edit: impl FnOnce(&mut async_nats::jetstream::stream::Config),
) {
    with_jetstream(url, async |js| {
        let mut stream = js.get_stream(name).await.unwrap();
        let mut config = stream.info().await.unwrap().config.clone();
        edit(&mut config);
        js.update_stream(config).await.unwrap();
    });
}

/// An operator raised `EVENTS`' bytes by hand on a release installed with
/// the chart's default values: the next upgrade's init Job succeeds and
/// keeps the raised limit (before, the chart wrote every default limit
/// into init's config file, so init took the hand-raised one for a
/// lowering and the Job failed with exit status 3). A fresh install still
/// gets the documented defaults, and a limit the values do set is held.
#[test]
fn the_chart_init_job_keeps_a_limit_raised_by_hand() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let defaults = chart_init_config(&serde_json::json!({}));

    // Install: the streams are created with the documented defaults.
    let (code, out) = init_as_the_chart(&url, &dir, &defaults);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        limits_of(&url, "EVENTS"),
        (Duration::from_secs(7 * 86_400), 128 * MIB, 1_000_000),
        "{out}"
    );
    assert_eq!(
        limits_of(&url, "AEGIS_LOG"),
        (Duration::from_secs(86_400), 32 * MIB, 500_000),
        "{out}"
    );

    // The operator raises EVENTS by hand; the upgrade's Job keeps it.
    edit_stream(&url, "EVENTS", |c| c.max_bytes = 512 * MIB);
    let (code, out) = init_as_the_chart(&url, &dir, &defaults);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("MISMATCH"), "{out}");
    assert!(
        out.contains(
            "the configuration file sets no stream limit: every existing stream keeps its own"
        ),
        "{out}"
    );
    assert_eq!(limits_of(&url, "EVENTS").1, 512 * MIB, "{out}");

    // Values that set the limit hold it: raised in place...
    let raised = chart_init_config(&serde_json::json!({
        "streams": { "events": { "maxBytes": 1024 * MIB } }
    }));
    let (code, out) = init_as_the_chart(&url, &dir, &raised);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("stream limits held to the configuration file: EVENTS max_bytes; every other"),
        "{out}"
    );
    assert!(
        out.contains("raised  EVENTS: max_bytes 536870912 -> 1073741824"),
        "{out}"
    );
    assert_eq!(limits_of(&url, "EVENTS").1, 1024 * MIB, "{out}");
    // ...the others set in the same values untouched.
    assert_eq!(limits_of(&url, "EVENTS").2, 1_000_000, "{out}");

    // ...and a lowering is still refused (exit 3) until --apply-limits.
    let lowered = chart_init_config(&serde_json::json!({
        "streams": { "events": { "maxBytes": 256 * MIB } }
    }));
    let (code, out) = init_as_the_chart(&url, &dir, &lowered);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("MISMATCH EVENTS: max_bytes 1073741824 -> 268435456 is a lowering"),
        "{out}"
    );
    assert_eq!(limits_of(&url, "EVENTS").1, 1024 * MIB, "{out}");
}

/// The stream `name`'s message count.
fn messages_in(url: &str, name: &str) -> u64 {
    with_jetstream(url, async |js| {
        js.get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    })
}

/// An operator made `DEAD_LETTER` unbounded by hand (`nats stream edit
/// --max-bytes=-1 --max-msgs=-1`) and it grew past the default 32 MiB: an
/// upgrade's init Job with values that set no limit keeps it unbounded and
/// deletes nothing (before, init bounded it to the defaults at once,
/// deleting the oldest messages, and said only "ok"). Values that do set
/// a limit lower than none are a lowering, refused until --apply-limits.
#[test]
fn the_chart_init_job_keeps_a_stream_made_unbounded_by_hand() {
    const SENT: u64 = 2_200;
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let defaults = chart_init_config(&serde_json::json!({}));
    let (code, out) = init_as_the_chart(&url, &dir, &defaults);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(limits_of(&url, "DEAD_LETTER").1, 32 * MIB, "{out}");

    edit_stream(&url, "DEAD_LETTER", |c| {
        c.max_bytes = -1;
        c.max_messages = -1;
    });
    // 2,200 dead letters of 16 KiB: about 34 MiB, past the default bytes.
    with_jetstream(&url, async |js| {
        let body = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
        let mut acks = Vec::new();
        for _ in 0..SENT {
            acks.push(js.publish("aegis.dead.x", body.clone()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    });
    assert_eq!(messages_in(&url, "DEAD_LETTER"), SENT);

    let (code, out) = init_as_the_chart(&url, &dir, &defaults);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("MISMATCH"), "{out}");
    assert!(
        out.contains("messages; no byte or message limit, kept: it may fill the disk)"),
        "{out}"
    );
    assert_eq!(
        limits_of(&url, "DEAD_LETTER"),
        (Duration::from_secs(7 * 86_400), -1, -1),
        "{out}"
    );
    assert_eq!(messages_in(&url, "DEAD_LETTER"), SENT, "{out}");

    // Values that set a byte limit: a lowering from none, refused.
    let bounded = chart_init_config(&serde_json::json!({
        "streams": { "deadLetter": { "maxBytes": 32 * MIB } }
    }));
    let (code, out) = init_as_the_chart(&url, &dir, &bounded);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("MISMATCH DEAD_LETTER: max_bytes none -> 33554432 is a lowering"),
        "{out}"
    );
    assert_eq!(limits_of(&url, "DEAD_LETTER").1, -1, "{out}");
    assert_eq!(messages_in(&url, "DEAD_LETTER"), SENT, "{out}");
}

/// The `streams` block of chart 0.3.0's values.yaml, which set every
/// default limit.
const STREAMS_0_3_0: &str = "streams:
  events: { maxAge: 7d, maxBytes: 134217728, maxMessages: 1000000 }
  commands: { maxAge: 24h, maxBytes: 33554432, maxMessages: 100000 }
  deadLetter: { maxAge: 7d, maxBytes: 33554432, maxMessages: 100000 }
  metrics: { maxAge: 1h, maxBytes: 67108864, maxMessages: 1000000 }
  log: { maxAge: 24h, maxBytes: 33554432, maxMessages: 500000 }
";

/// Copies the folder `from` into `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// This chart as `helm upgrade --reuse-values` from a 0.3.0 release
/// renders it: Helm sets the new chart's values to the old release's
/// (chart 0.3.0's values.yaml under what the release was given), and
/// stores it so, for every later `--reuse-values` upgrade too. Here: this
/// chart, its `streams` block replaced by 0.3.0's, in `dir`.
fn chart_reusing_0_3_0_values(dir: &tempfile::TempDir) -> PathBuf {
    let chart = dir.path().join("aegis-chart");
    copy_dir(&root().join("deploy/helm/aegis"), &chart);
    let values = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
    let start = values
        .find("\nstreams:\n")
        .expect("values.yaml has a streams block")
        + 1;
    let end = start
        + values[start..]
            .find("\n\n")
            .expect("the streams block ends")
        + 1;
    let reused = format!("{}{STREAMS_0_3_0}{}", &values[..start], &values[end..]);
    std::fs::write(chart.join("values.yaml"), reused).unwrap();
    chart
}

/// A release installed with chart 0.3.0 and default values, EVENTS' bytes
/// raised by hand: `helm upgrade --reuse-values` to this chart still
/// renders 0.3.0's 15 default limits (Helm reuses the old chart's values),
/// so the init Job fails on the raised limit (exit 3) and would every
/// later `--reuse-values` upgrade. The ways out docs/deployment.md gives
/// work: `--set streams.events.maxBytes=null` over the reused values, or
/// one upgrade with `--reset-then-reuse-values` (Helm 3.14+) or
/// `--reset-values -f <your values>`, which render this chart's own values
/// (no limit) under what the release was given (nothing here).
#[test]
fn an_upgrade_from_0_3_0_reusing_its_values_and_the_documented_ways_out() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let reused_chart = chart_reusing_0_3_0_values(&dir);
    let reused = render_init_config(&reused_chart, &serde_json::json!({}));
    assert_eq!(reused.matches("max_").count(), 15, "{reused}");

    // Installed with 0.3.0 (the same 15 limits); EVENTS raised by hand.
    let (code, out) = init_as_the_chart(&url, &dir, &reused);
    assert_eq!(code, Some(0), "{out}");
    edit_stream(&url, "EVENTS", |c| c.max_bytes = 512 * MIB);

    // `helm upgrade --reuse-values`: the old defaults are held.
    let (code, out) = init_as_the_chart(&url, &dir, &reused);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("MISMATCH EVENTS: max_bytes 536870912 -> 134217728 is a lowering"),
        "{out}"
    );
    assert_eq!(limits_of(&url, "EVENTS").1, 512 * MIB, "{out}");

    // `--reuse-values --set streams.events.maxBytes=null`: that one is
    // left out, the others are still held.
    let nulled = render_init_config(
        &reused_chart,
        &serde_json::json!({ "streams": { "events": { "maxBytes": null } } }),
    );
    let (code, out) = init_as_the_chart(&url, &dir, &nulled);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("stream limits held to the configuration file: EVENTS max_age, max_messages;"),
        "{out}"
    );
    assert_eq!(limits_of(&url, "EVENTS").1, 512 * MIB, "{out}");

    // `--reset-then-reuse-values` (or `--reset-values -f` the release's
    // own values, none here): this chart's values, no limit held.
    let reset = chart_init_config(&serde_json::json!({}));
    let (code, out) = init_as_the_chart(&url, &dir, &reset);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("the configuration file sets no stream limit"),
        "{out}"
    );
    assert_eq!(limits_of(&url, "EVENTS").1, 512 * MIB, "{out}");

    // The upgrade docs name these ways out for a 0.3.0 release.
    let docs = std::fs::read_to_string(root().join("docs/deployment.md")).unwrap();
    let upgrade = &docs[docs
        .find("## Rolling upgrade")
        .expect("the upgrade section")..];
    let upgrade = &upgrade[..upgrade[3..].find("\n## ").map_or(upgrade.len(), |i| i + 3)];
    for way in [
        "--reset-then-reuse-values",
        "--reset-values -f",
        "=null",
        "0.3.1",
    ] {
        assert!(
            upgrade.contains(way),
            "the upgrade section names {way}:\n{upgrade}"
        );
    }
}
