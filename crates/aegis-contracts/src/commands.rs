//! Messages of the command progress protocol.
//!
//! A command is published on `commands.{service}.{command}` with a
//! `Aegis-Command-Id` and an `Aegis-Reply-To` header; the handler sends any
//! number of [`CommandReply::Progress`] messages there, then exactly one
//! terminal [`CommandReply::Completed`] or [`CommandReply::Failed`]. The JSON
//! is tagged by `kind` (`progress`, `completed`, `failed`).
//!
//! Each reply names the instance id of the worker that sent it in the
//! [`HEADER_INSTANCE`](crate::wire::HEADER_INSTANCE) header
//! (`Aegis-Instance`), so the issuer can tell which worker runs the command
//! and that it runs on another after its worker went silent; the JSON does
//! not carry it, and a reply without the header (an older worker) is as
//! valid.

use serde::{Deserialize, Serialize};

use crate::wire::WireError;

/// One message sent back to the issuer of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum CommandReply {
    /// Work is under way.
    Progress {
        /// Completion in percent, 0 to 100.
        percent: f32,
        /// What is happening now.
        message: String,
    },
    /// The command finished; terminal.
    Completed {
        /// The handler's result.
        result: serde_json::Value,
    },
    /// The command failed; terminal.
    Failed {
        /// Why.
        error: WireError,
    },
}

impl CommandReply {
    /// A progress message; `percent` is clamped to 0..=100 (NaN becomes 0).
    pub fn progress(percent: f32, message: impl Into<String>) -> Self {
        let percent = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0)
        };
        Self::Progress {
            percent,
            message: message.into(),
        }
    }

    /// Whether this is the last message for its command.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Progress { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorCode;
    use serde_json::json;

    #[test]
    fn tagged_json() {
        let cases = [
            (
                CommandReply::progress(50.0, "half"),
                json!({"kind": "progress", "percent": 50.0, "message": "half"}),
            ),
            (
                CommandReply::Completed {
                    result: json!({"ok": true}),
                },
                json!({"kind": "completed", "result": {"ok": true}}),
            ),
            (
                CommandReply::Failed {
                    error: WireError::timeout("slow"),
                },
                json!({"kind": "failed", "error": {"code": "TIMEOUT", "message": "slow"}}),
            ),
        ];
        for (reply, expected) in cases {
            assert_eq!(serde_json::to_value(&reply).unwrap(), expected);
            assert_eq!(
                serde_json::from_value::<CommandReply>(expected).unwrap(),
                reply
            );
        }
        assert!(serde_json::from_value::<CommandReply>(json!({"kind": "other"})).is_err());
    }

    #[test]
    fn terminal_and_clamping() {
        assert!(!CommandReply::progress(1.0, "").is_terminal());
        assert!(
            CommandReply::Completed {
                result: json!(null)
            }
            .is_terminal()
        );
        let failed = CommandReply::Failed {
            error: WireError::new(ErrorCode::Internal, "x"),
        };
        assert!(failed.is_terminal());
        for (input, clamped) in [(-5.0, 0.0), (150.0, 100.0), (f32::NAN, 0.0), (42.5, 42.5)] {
            let CommandReply::Progress { percent, .. } = CommandReply::progress(input, "") else {
                unreachable!()
            };
            assert_eq!(percent, clamped);
        }
    }
}
