//! API tokens: where they come from (the two configured tokens and the
//! hashed token file) and how a presented token is checked.
//!
//! Only SHA-256 digests are kept in memory. A presented token is hashed and
//! compared with every known digest in constant time (`subtle`), without
//! stopping at the first match, so neither timing nor length tells anything
//! about the configured tokens.
//!
//! The token file has one token per line, `role:name:sha256hex`, where
//! `role` is `admin` or `viewer`, `name` is what the audit trail records
//! (`[A-Za-z0-9_.@-]`, 1–64 characters) and the digest is the hex SHA-256 of
//! the token (`printf %s "$TOKEN" | sha256sum`). Blank lines and lines
//! starting with `#` are ignored.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::{ConstantTimeEq, ConstantTimeGreater};

use super::{Principal, Role};

/// Hex SHA-256 of `token`: the form the token file stores.
///
/// ```
/// assert_eq!(
///     aegis_monitor::auth::hash_token("abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes `s` spells in lower-case hex, as [`hex`] writes them; `None`
/// for anything else (odd length, upper case, a sign, a space). Each value
/// has exactly one accepted spelling: a session cookie is signed out by its
/// text, so a second spelling of its MAC would outlive the sign-out.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Why the token configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenConfigError {
    /// A configured token is empty.
    #[error("the {role} token is empty")]
    Empty {
        /// Which role.
        role: Role,
    },
    /// The token file cannot be read.
    #[error("cannot read token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the token file is malformed.
    #[error("token file {path}, line {line}: {reason} (expected role:name:sha256hex)")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The token file holds no token.
    #[error("token file {path} holds no token")]
    NoTokens {
        /// The file.
        path: PathBuf,
    },
    /// The admin and the viewer token are the same: the viewer token would
    /// sign in as admin (a token names one role, the higher one wins).
    #[error(
        "AEGIS_ADMIN_TOKEN (--admin-token) and AEGIS_VIEWER_TOKEN (--viewer-token) are the same \
         token, so whoever holds the viewer token would sign in as admin: give each role a \
         token of its own"
    )]
    SameToken,
}

/// One known token: who it is and the digest of its secret.
#[derive(Clone)]
pub(crate) struct TokenEntry {
    pub(crate) principal: Principal,
    pub(crate) digest: [u8; 32],
    /// Where it was configured, as an error names it: the setting, or the
    /// token file's line.
    origin: String,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Every token the monitor accepts.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl TokenSet {
    pub(crate) fn add_plain(&mut self, role: Role, token: &str) -> Result<(), TokenConfigError> {
        if token.trim().is_empty() {
            return Err(TokenConfigError::Empty { role });
        }
        let digest = digest(token);
        if self.entries.iter().any(|e| e.digest == digest) {
            return Err(TokenConfigError::SameToken);
        }
        let origin = match role {
            Role::Admin => "AEGIS_ADMIN_TOKEN (--admin-token)",
            Role::Viewer => "AEGIS_VIEWER_TOKEN (--viewer-token)",
        };
        self.entries.push(TokenEntry {
            principal: Principal {
                name: role.as_str().to_owned(),
                role,
            },
            digest,
            origin: origin.to_owned(),
        });
        Ok(())
    }

    pub(crate) fn add_file(&mut self, path: &Path) -> Result<(), TokenConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let before = self.entries.len();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| TokenConfigError::BadLine {
                path: path.to_owned(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let mut parts = line.splitn(3, ':');
            let (Some(role), Some(name), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("not three ':'-separated fields"));
            };
            let role = match role.trim() {
                "admin" => Role::Admin,
                "viewer" => Role::Viewer,
                _ => return Err(bad("role must be admin or viewer")),
            };
            let name = name.trim();
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c));
            if !name_ok {
                return Err(bad("name must be 1-64 characters of [A-Za-z0-9_.@-]"));
            }
            let digest: [u8; 32] = unhex(&hash.trim().to_ascii_lowercase())
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| bad("the digest must be 64 hex digits (SHA-256)"))?;
            // One token, two roles: whoever holds it as the lower role
            // would sign in as the higher one.
            if let Some(other) = self
                .entries
                .iter()
                .find(|e| e.digest == digest && e.principal.role != role)
            {
                return Err(bad(&format!(
                    "the {role} `{name}` has the same token as {} (role {}): give each role \
                     a token of its own",
                    other.origin, other.principal.role
                )));
            }
            self.entries.push(TokenEntry {
                principal: Principal {
                    name: name.to_owned(),
                    role,
                },
                digest,
                origin: format!(
                    "the {role} `{name}` on line {} of {}",
                    i + 1,
                    path.display()
                ),
            });
        }
        if self.entries.len() == before {
            return Err(TokenConfigError::NoTokens {
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose token is `token`, checked in constant time against
    /// every entry. When two entries share a digest the admin one wins.
    pub(crate) fn verify(&self, token: &str) -> Option<&TokenEntry> {
        let presented = digest(token);
        self.find_digest(&presented)
    }

    /// The entry with this digest, in constant time over all entries.
    pub(crate) fn find_digest(&self, presented: &[u8; 32]) -> Option<&TokenEntry> {
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.entries {
            let matches: bool = entry.digest.ct_eq(presented).into();
            if matches {
                let better = match found {
                    None => true,
                    Some(prev) => {
                        bool::from((entry.principal.role as u8).ct_gt(&(prev.principal.role as u8)))
                    }
                };
                if better {
                    found = Some(entry);
                }
            }
        }
        found
    }

    pub(crate) fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn plain_tokens_verify_and_wrong_ones_do_not() {
        let mut set = TokenSet::default();
        set.add_plain(Role::Admin, "admin-secret-0123456789")
            .unwrap();
        set.add_plain(Role::Viewer, "viewer-secret-0123456789")
            .unwrap();
        assert_eq!(
            set.verify("admin-secret-0123456789")
                .unwrap()
                .principal
                .role,
            Role::Admin
        );
        let v = set.verify("viewer-secret-0123456789").unwrap();
        assert_eq!(
            (v.principal.role, v.principal.name.as_str()),
            (Role::Viewer, "viewer")
        );
        assert!(set.verify("admin-secret-012345678").is_none());
        assert!(set.verify("").is_none());
        assert!(matches!(
            set.add_plain(Role::Admin, " "),
            Err(TokenConfigError::Empty { role: Role::Admin })
        ));
    }

    #[test]
    fn token_file_parses_and_reports_bad_lines() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "# ops tokens").unwrap();
        writeln!(f).unwrap();
        writeln!(f, "admin:ops-team:{}", hash_token("t-admin")).unwrap();
        writeln!(f, "viewer:grafana:{}", hash_token("t-view").to_uppercase()).unwrap();
        let mut set = TokenSet::default();
        set.add_file(f.path()).unwrap();
        assert_eq!(set.entries().len(), 2);
        assert_eq!(set.verify("t-admin").unwrap().principal.name, "ops-team");
        assert_eq!(set.verify("t-view").unwrap().principal.role, Role::Viewer);

        for (bad, line) in [
            ("root:x:00", 1),
            ("admin:bad name:00", 1),
            ("admin:x:abc", 1),
            ("admin:x", 1),
        ] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            writeln!(f, "{bad}").unwrap();
            match TokenSet::default().add_file(f.path()) {
                Err(TokenConfigError::BadLine { line: l, .. }) => assert_eq!(l, line),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            TokenSet::default().add_file(empty.path()),
            Err(TokenConfigError::NoTokens { .. })
        ));
        assert!(matches!(
            TokenSet::default().add_file(Path::new("/nonexistent/tokens")),
            Err(TokenConfigError::Read { .. })
        ));
    }

    /// One token never holds two roles: the lower one would sign in as the
    /// higher. The refusal names where each was configured, not the token.
    #[test]
    fn one_token_for_two_roles_is_refused() {
        let mut set = TokenSet::default();
        set.add_plain(Role::Admin, "shared-token-0123456789")
            .unwrap();
        let error = set
            .add_plain(Role::Viewer, "shared-token-0123456789")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("AEGIS_ADMIN_TOKEN") && error.contains("AEGIS_VIEWER_TOKEN"),
            "{error}"
        );
        assert!(!error.contains("shared-token"), "{error}");

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "admin:ops:{}", hash_token("t-ops")).unwrap();
        writeln!(f, "viewer:grafana:{}", hash_token("t-ops")).unwrap();
        let error = TokenSet::default()
            .add_file(f.path())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2")
                && error.contains("`grafana`")
                && error.contains("`ops` on line 1"),
            "{error}"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), [0, 1, 254, 255]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    /// Hex has one spelling: lower-case digits, no sign. A `+` or an
    /// upper-case digit would give one value several texts (a session
    /// cookie's MAC, signed out by its text, came back upper-cased).
    #[test]
    fn unhex_takes_only_lower_case_digits() {
        assert_eq!(unhex("0aff").unwrap(), [0x0a, 0xff]);
        for other in ["0AFF", "0aFf", "+aff", "0a+f", "-aff", " aff", "0a f"] {
            assert!(unhex(other).is_none(), "{other}");
        }
    }
}
