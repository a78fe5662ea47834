//! Settings the monitor refuses at start, and weak ones it warns about,
//! each against a real nats-server: without the check the monitor would
//! start on it, so a refusal here is the check's and not a missing NATS.
//! Refusals name the setting (and never a secret's value); a warning is
//! logged once, however many steps of the start look at the setting.

mod common;

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_monitor::{AppState, MonitorConfig};
use aegis_sdk::Secret;
use aegis_testkit::NatsServer;
use common::{ADMIN, config};
use tokio_util::sync::CancellationToken;
use tracing::{Level, instrument::WithSubscriber as _};
use tracing_subscriber::{Layer, layer::SubscriberExt as _};

/// Starts the monitor's state on `nats` with `config` as `tweak` leaves
/// it: the error it refuses to start with, or `None` when it started.
async fn start_error(nats: &NatsServer, tweak: impl FnOnce(&mut MonitorConfig)) -> Option<String> {
    let mut config = config(&nats.url());
    tweak(&mut config);
    match AppState::start(config, CancellationToken::new()).await {
        Ok(state) => {
            state.shutdown().await;
            None
        }
        Err(e) => Some(format!("{:#}", anyhow::Error::from(e))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_token_for_admin_and_viewer_is_refused_naming_both_settings() {
    let nats = NatsServer::start().expect("start nats-server");
    let shared = "the-same-token-for-both-roles-0123456789";
    let error = start_error(&nats, |c| {
        c.admin_token = Some(Secret::new(shared));
        c.viewer_token = Some(Secret::new(shared));
    })
    .await
    .expect("the same token for admin and viewer was accepted: the viewer token signs in as admin");
    assert!(
        error.contains("AEGIS_ADMIN_TOKEN") && error.contains("AEGIS_VIEWER_TOKEN"),
        "names both settings: {error}"
    );
    assert!(
        !error.contains(shared),
        "the token itself is shown: {error}"
    );

    // `aegis api` (what `aegis up` runs) refuses it before binding its port.
    let mut config = config(&nats.url());
    config.admin_token = Some(Secret::new(shared));
    config.viewer_token = Some(Secret::new(shared));
    config.port = 0;
    let served = tokio::time::timeout(
        Duration::from_secs(20),
        aegis_monitor::serve(config, CancellationToken::new()),
    )
    .await
    .expect("serve did not refuse the shared token");
    let error = format!("{:#}", served.expect_err("serve started"));
    assert!(error.contains("AEGIS_VIEWER_TOKEN"), "{error}");
    assert!(!error.contains(shared), "{error}");

    // A token file entry with the other role's token is refused as well,
    // naming the file's line and never the token.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        format!("viewer:grafana:{}\n", aegis_monitor::hash_token(ADMIN)).as_bytes(),
    )
    .unwrap();
    let error = start_error(&nats, |c| {
        c.viewer_token = None;
        c.token_file = Some(file.path().to_owned());
    })
    .await
    .expect("a viewer line in the token file with the admin token was accepted");
    assert!(
        error.contains("line 1") && error.contains("AEGIS_ADMIN_TOKEN"),
        "{error}"
    );
    assert!(!error.contains(ADMIN), "{error}");

    // Distinct tokens start as before.
    assert_eq!(start_error(&nats, |_| {}).await, None);
}

/// Every event logged, as `LEVEL message fields`.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Level, String)>>>);

#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
}

impl Recorder {
    fn lines(&self) -> Vec<(Level, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// `aegis api`'s whole start (the check before binding, the state's start,
/// serving) with a short admin token and a short session secret: each is
/// warned about once, at warn, without its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_token_or_session_secret_is_warned_about_once() {
    let nats = NatsServer::start().expect("start nats-server");
    let short_token = "short-admin-tok";
    let short_secret = "short-secret-xyz";
    let mut config = config(&nats.url());
    config.admin_token = Some(Secret::new(short_token));
    config.session_secret = Some(Secret::new(short_secret));
    config.port = 0;
    let recorder = Recorder::default();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(
        aegis_monitor::serve(config, shutdown.clone())
            .with_subscriber(tracing_subscriber::registry().with(recorder.clone())),
    );
    common::eventually(Duration::from_secs(30), "the monitor to listen", || {
        let lines = recorder.lines();
        async move {
            lines
                .iter()
                .any(|(_, l)| l.contains("monitor API listening"))
        }
    })
    .await;
    shutdown.cancel();
    served.await.unwrap().expect("the monitor ran");
    let lines = recorder.lines();
    let all: Vec<String> = lines.iter().map(|(l, f)| format!("{l} {f}")).collect();
    let all = all.join("\n");
    let about = |what: &str| {
        lines
            .iter()
            .filter(|(level, l)| *level == Level::WARN && l.contains(what))
            .count()
    };
    assert_eq!(about("admin token is shorter"), 1, "{all}");
    assert_eq!(about("session secret is shorter"), 1, "{all}");
    assert!(about("AEGIS_SESSION_SECRET") == 1, "{all}");
    assert!(
        !all.contains(short_token) && !all.contains(short_secret),
        "a secret is logged: {all}"
    );
}

/// A zero request timeout would answer every request 504, a zero header
/// read timeout would drop every connection, and a UI directory that is
/// not a built export would serve a JSON 404 at `/`: each is refused at
/// start, naming the setting (and the directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_break_the_monitor_are_refused_at_start() {
    let nats = NatsServer::start().expect("start nats-server");
    let error = start_error(&nats, |c| c.request_timeout = Duration::ZERO)
        .await
        .expect("a zero request timeout was accepted: every request is a 504");
    assert!(
        error.contains("AEGIS_API_REQUEST_TIMEOUT") && error.contains("--request-timeout"),
        "{error}"
    );
    let error = start_error(&nats, |c| c.header_read_timeout = Duration::ZERO)
        .await
        .expect("a zero header read timeout was accepted");
    assert!(error.contains("AEGIS_API_HEADER_READ_TIMEOUT"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (ui, why) in [
        (&missing, "no such directory"),
        (&file, "not a directory"),
        (&empty, "no index.html"),
    ] {
        let error = start_error(&nats, |c| c.ui_dir = Some(ui.clone()))
            .await
            .unwrap_or_else(|| panic!("--ui-dir {} was accepted", ui.display()));
        assert!(
            error.contains("AEGIS_UI_DIR")
                && error.contains(&ui.display().to_string())
                && error.contains(why),
            "{}: {error}",
            ui.display()
        );
    }
    // `aegis api` says so before binding its port.
    let mut config = config(&nats.url());
    config.ui_dir = Some(missing.clone());
    config.port = 0;
    let served = tokio::time::timeout(
        Duration::from_secs(20),
        aegis_monitor::serve(config, CancellationToken::new()),
    )
    .await
    .expect("serve did not refuse the missing UI directory");
    let error = format!("{:#}", served.expect_err("serve started"));
    assert!(error.contains(&missing.display().to_string()), "{error}");

    // A built export starts as before.
    std::fs::write(empty.join("index.html"), "<html></html>").unwrap();
    assert_eq!(start_error(&nats, |c| c.ui_dir = Some(empty)).await, None);
}
