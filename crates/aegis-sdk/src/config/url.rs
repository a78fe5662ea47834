//! The server URLs of a configuration: which ones name a NATS server
//! ([`is_server_url`]), the credentials their user info may carry
//! ([`url_auth`]), and the URLs as printed (redacted) and as handed to the
//! client (without user info).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, REDACTED, Secret, invalid};

/// `url` with the password (or the token) its user info may carry
/// replaced by [`REDACTED`]: `nats://alice:s3cret@host:4222` is shown as
/// `nats://alice:<redacted>@host:4222`, `nats://tok3n@host` as
/// `nats://<redacted>@host`. For printing a server URL a user gave; one
/// that is no valid server URL (a raw `/` in its password) has all but
/// the user hidden up to its last `@`.
///
/// ```
/// use aegis_sdk::config::redact_url;
/// assert_eq!(redact_url("nats://alice:s3cret@host:4222"), "nats://alice:<redacted>@host:4222");
/// assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
/// assert_eq!(redact_url("nats://alice:p/w@host:4222"), "nats://alice:<redacted>@host:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    // A URL the client would not take as a server (a password holding
    // `/`, `#` or `?` makes its authority end early) is cut at its last
    // `@` instead, so no part of such a password shows.
    if !is_server_url(url) {
        return redact_unparsed(url);
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    userinfo_hidden(scheme, rest, at)
}

/// `scheme` + `rest` with the user info before `rest[at]` (an `@`) shown
/// as `user:<redacted>`, or [`REDACTED`] when it is a token.
fn userinfo_hidden(scheme: &str, rest: &str, at: usize) -> String {
    let hidden = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{scheme}{hidden}{}", &rest[at..])
}

/// Credentials a server URL carries in its user info.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum UrlAuth {
    /// `nats://user:password@host`.
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: Secret,
    },
    /// `nats://token@host`.
    Token(Secret),
}

/// The credentials the server URLs carry in their user info (decoded from
/// the URL's percent-encoding), the same in every URL that carries any;
/// `None` when none does. The NATS client leaves a URL's user info unsent,
/// so the connection signs in with these itself.
///
/// # Errors
/// [`ConfigError::Invalid`] when two URLs carry different credentials, a
/// URL a password without a user, or user info that is not UTF-8.
pub(crate) fn url_auth(servers: &[String]) -> Result<Option<UrlAuth>, ConfigError> {
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| {
                invalid(
                    "nats.servers",
                    "the user info of a server URL is not UTF-8 once decoded",
                )
            })
    };
    let mut found: Option<UrlAuth> = None;
    for url in servers {
        let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
            continue;
        };
        let parsed = addr.into_inner();
        let auth = match (parsed.username(), parsed.password()) {
            ("", None) => continue,
            ("", Some(_)) => {
                return Err(invalid(
                    "nats.servers",
                    format!("`{}` has a password but no user", redact_url(url)),
                ));
            }
            (user, Some(password)) => UrlAuth::UserPassword {
                user: decode(user)?,
                password: Secret::new(decode(password)?),
            },
            (token, None) => UrlAuth::Token(Secret::new(decode(token)?)),
        };
        match &found {
            Some(seen) if *seen != auth => {
                return Err(invalid(
                    "nats.servers",
                    "the server URLs carry different credentials: give the same \
                     user:password (or token) in each that carries any",
                ));
            }
            _ => found = Some(auth),
        }
    }
    Ok(found)
}

/// `servers` without the user info they may carry, for the NATS client:
/// it does not sign in with a URL's user info (the connection hands it
/// over itself, see [`url_auth`]), and its DEBUG lines print each address
/// it tries, password and all. A URL without user info is left as given.
pub(crate) fn without_userinfo(servers: &[String]) -> Vec<String> {
    servers
        .iter()
        .map(|url| {
            let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
                return url.clone();
            };
            let mut parsed = addr.into_inner();
            if parsed.username().is_empty() && parsed.password().is_none() {
                return url.clone();
            }
            // Both fail only for a URL that cannot have user info at all.
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        })
        .collect()
}

/// `url`, which does not parse, with everything between its scheme and
/// its last `@` but a user name redacted: a password holding `/`, `#` or
/// `?` (what may make it unparseable) is hidden too. More than a password
/// may be hidden; that is the price of never showing one.
pub(super) fn redact_unparsed(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    match rest.rfind('@') {
        Some(at) => userinfo_hidden(scheme, rest, at),
        None => url.to_owned(),
    }
}

/// Every URL of `servers`, redacted as [`redact_url`] does.
pub(crate) fn redact_urls(servers: &[String]) -> Vec<String> {
    servers.iter().map(|s| redact_url(s)).collect()
}

pub(super) fn serialize_redacted_urls<S: Serializer>(
    servers: &[String],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    redact_urls(servers).serialize(serializer)
}

/// Whether `url` names a NATS server as the client reads it: `nats://`,
/// `tls://`, `ws://` or `wss://` then a host (port optional), or a bare
/// `host[:port]`. Checked here, not at connect time, because the client
/// reads a typo such as `nats//host:4222` as host `nats` with a path and
/// fails on a DNS lookup: an error that looks transient and is retried.
/// Only WebSocket URLs may carry a path.
pub(super) fn is_server_url(url: &str) -> bool {
    if url.trim().is_empty() || url.contains(char::is_whitespace) {
        return false;
    }
    let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
        return false;
    };
    let parsed = addr.into_inner();
    let websocket = matches!(parsed.scheme(), "ws" | "wss");
    parsed.host_str().is_some_and(|h| !h.is_empty())
        && (websocket || matches!(parsed.path(), "" | "/"))
        && parsed.query().is_none()
        && parsed.fragment().is_none()
}

pub(super) fn split_servers(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => split_servers(&s),
        Either::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client is handed the server URLs without their user info; the
    /// rest of each URL is kept.
    #[test]
    fn the_client_gets_the_urls_without_user_info() {
        let given: Vec<String> = [
            "nats://alice:s3cret@h:4222",
            "ws://tok3n@h:8080/nats",
            "tls://h:4443",
            "127.0.0.1:4222",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            without_userinfo(&given),
            [
                "nats://h:4222",
                "ws://h:8080/nats",
                "tls://h:4443",
                "127.0.0.1:4222"
            ]
        );
    }
}
