//! A nats-server with the showcase's users (plus one service of the
//! test's own) and the operator's credentials file as `aegis up` writes
//! it: the CLI's operator tools run against it as the operator, the
//! test's SDK workers and publishers as their own restricted users.

use std::{path::PathBuf, process::Command};

use aegis::permissions::{Role, ServiceRole, User, render_users, showcase_roles};
use aegis_sdk::{AegisConfig, Connection, Secret};
use aegis_testkit::NatsServer;

use super::{AEGIS, CREDENTIAL_VARS};

pub struct OperatorBus {
    pub server: NatsServer,
    users: Vec<User>,
    _dir: tempfile::TempDir,
    pub credentials: PathBuf,
}

impl OperatorBus {
    /// Starts the server with the showcase's roles and `service`'s.
    pub fn start(service: ServiceRole) -> OperatorBus {
        let mut roles = showcase_roles();
        roles.push(Role::Service(service));
        let users: Vec<User> = roles
            .into_iter()
            .map(|role| User {
                name: role.user_name(),
                password: format!("pw-{}", nuid::next()),
                role,
            })
            .collect();
        let server = NatsServer::builder()
            .app_users(render_users(&users))
            .start()
            .expect("start nats-server (run `make bootstrap`)");
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let operator = users.iter().find(|u| u.name == "operator").unwrap();
        std::fs::write(
            &credentials,
            format!(
                "AEGIS_NATS_USER=operator\nAEGIS_NATS_PASSWORD={}\n",
                operator.password
            ),
        )
        .unwrap();
        OperatorBus {
            server,
            users,
            _dir: dir,
            credentials,
        }
    }

    /// An SDK connection as `user`.
    pub async fn sdk(&self, user: &str) -> Connection {
        let password = &self.users.iter().find(|u| u.name == user).unwrap().password;
        let mut config = AegisConfig::with_servers(self.server.url());
        config.nats.user = Some(user.to_owned());
        config.nats.password = Some(Secret::new(password));
        config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(user));
        Connection::connect(config).await.unwrap()
    }

    /// `ARGS` with the flags that connect as the operator.
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--nats-url".to_owned(),
            self.server.url(),
            "--credentials".to_owned(),
            self.credentials.display().to_string(),
        ]);
        all
    }

    /// Runs `aegis ARGS` as the operator; returns (exit code, stdout, stderr).
    pub async fn aegis(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let all = self.args(args);
        tokio::task::spawn_blocking(move || run_plain(&all))
            .await
            .unwrap()
    }
}

/// `aegis` with none of the environment that would give it other
/// credentials or logging.
pub fn plain_command(args: &[String]) -> Command {
    let mut cmd = Command::new(AEGIS);
    cmd.args(args).env("NO_COLOR", "1");
    for var in CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs [`plain_command`]; returns (exit code, stdout, stderr).
pub fn run_plain(args: &[String]) -> (Option<i32>, String, String) {
    let out = plain_command(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
