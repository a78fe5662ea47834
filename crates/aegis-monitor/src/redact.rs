//! Secrets taken out of JSON the monitor relays from instances, before any
//! viewer sees it.
//!
//! The SDK redacts the configuration an instance answers with, but an
//! instance on another or an older SDK, or any process allowed to answer
//! its control subject, may not; so the monitor redacts again. Replaced by
//! [`REDACTED`] (the SDK's spelling):
//!
//! - the value of every key that names a secret (`password`, `pass`,
//!   `token`, `secret`, `nkey`, `seed`, `jwt`, `creds`, `credentials`,
//!   `privateKey`, `apiKey`, ...), at any depth, whatever the case or
//!   separator (`nkeySeed`, `NKEY_SEED`, `db-password`); a key whose last
//!   word is `file`, `path` or `dir` (`creds_file`) names where a secret
//!   is kept, not the secret, and keeps its value;
//! - the password (or the token) in `scheme://user:pass@host` wherever it
//!   appears in a string or a key, shown as `scheme://user:<redacted>@host`
//!   (`scheme://<redacted>@host` for a token), as the SDK shows its server
//!   URLs; also without the scheme in values of keys naming servers or
//!   URLs (`servers: ["alice:pw@host:4222"]`);
//! - a whole string holding a private key, JWT or seed block
//!   (`-----BEGIN ... PRIVATE KEY-----`, a `.creds` file's content), and
//!   any word of a string that reads as an NKey seed (`SU...`, 58
//!   characters).
//!
//! An instance's connection settings are first kept to the keys the SDK
//! writes ([`keep_sdk_shape`]); everything else in them (users, servers
//! without passwords, timeouts) is left exactly as it came. `null` and
//! booleans are kept under a secret key too: they say whether a secret is
//! set, not what it is.

use aegis_sdk::config::REDACTED;
use serde_json::{Map, Value};

/// Words that make a key name a secret, compared with the key's words
/// (split at separators and camelCase, lowercased).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "token",
    "tokens",
    "secret",
    "secrets",
    "nkey",
    "seed",
    "jwt",
    "creds",
    "cred",
    "credential",
    "credentials",
    "apikey",
    "privatekey",
    "authorization",
    "bearer",
];

/// Two words in a row that name a secret (`private_key`, `apiKey`).
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("private", "key"),
    ("api", "key"),
    ("access", "key"),
    ("signing", "key"),
    ("secret", "key"),
];

/// Found inside a key's words run together (`dbpassword`, `clientsecret`).
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "privatekey",
    "apikey",
    "nkeyseed",
];

/// A key ending in one of these names where a secret is kept.
const LOCATION_WORDS: &[&str] = &["file", "path", "dir", "filename"];

/// Keys whose string values are server addresses, redacted as URLs even
/// without a scheme.
const ADDRESS_WORDS: &[&str] = &["server", "servers", "url", "urls", "uri", "uris"];

/// `connection` (an instance's connection settings, which the SDK writes
/// as its `AegisConfig`) kept to the keys the SDK writes, at every depth:
/// a key it does not write, an object or a list of objects where it
/// writes a value, or a value where it writes an object, is left out. A
/// name list cannot know every shape a secret comes in (an env list's
/// `value`, a `pw`, a connection string); what the SDK never writes is
/// not shown at all. Then [`redact_secrets`] redacts what is left.
pub(crate) fn keep_sdk_shape(connection: &Value) -> Value {
    static SHAPE: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| aegis_sdk::AegisConfig::default().redacted());
    let mut kept = shaped(connection, &SHAPE).unwrap_or_else(|| Value::Object(Map::new()));
    redact_secrets(&mut kept);
    kept
}

/// `value` kept to `shape` (see [`keep_sdk_shape`]); `None` to leave out.
fn shaped(value: &Value, shape: &Value) -> Option<Value> {
    let scalar = |v: &Value| !matches!(v, Value::Object(_) | Value::Array(_));
    match (value, shape) {
        (Value::Object(fields), Value::Object(known)) => Some(Value::Object(
            fields
                .iter()
                .filter_map(|(key, v)| Some((key.clone(), shaped(v, known.get(key)?)?)))
                .collect(),
        )),
        (_, Value::Object(_)) | (Value::Object(_), _) => None,
        (Value::Array(items), _) => items.iter().all(scalar).then(|| value.clone()),
        _ => Some(value.clone()),
    }
}

/// `value` with every secret in it replaced by [`REDACTED`] (see the
/// module documentation for what counts as one).
pub(crate) fn redact_secrets(value: &mut Value) {
    redact_value(value, false);
}

fn redact_value(value: &mut Value, address: bool) {
    match value {
        Value::String(s) => {
            if let Some(shown) = redact_text(s, address) {
                *s = shown;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, address)),
        Value::Object(map) => redact_object(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn redact_object(map: &mut Map<String, Value>) {
    let renamed = map.keys().any(|k| redact_text(k, false).is_some());
    if renamed {
        let old = std::mem::take(map);
        for (key, value) in old {
            let key = redact_text(&key, false).unwrap_or(key);
            map.insert(key, value);
        }
    }
    for (key, value) in map.iter_mut() {
        let words = key_words(key);
        if names_secret(&words) {
            if !matches!(value, Value::Null | Value::Bool(_)) {
                *value = Value::String(REDACTED.to_owned());
            }
        } else {
            let address = words.iter().any(|w| ADDRESS_WORDS.contains(&w.as_str()));
            redact_value(value, address);
        }
    }
}

/// `key` split into lowercase words at non-alphanumerics and camelCase
/// humps (`nkeySeed`, `NKEY_SEED`, `userJWT`, `JWTToken`).
fn key_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    for part in key.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<char> = part.chars().collect();
        let mut word = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let hump = c.is_uppercase()
                && prev.is_some_and(|p| {
                    p.is_lowercase()
                        || p.is_numeric()
                        || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
                });
            if hump && !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            word.extend(c.to_lowercase());
        }
        if !word.is_empty() {
            words.push(word);
        }
    }
    words
}

fn names_secret(words: &[String]) -> bool {
    if words
        .last()
        .is_some_and(|w| LOCATION_WORDS.contains(&w.as_str()))
    {
        return false;
    }
    if words.iter().any(|w| SECRET_WORDS.contains(&w.as_str())) {
        return true;
    }
    if words
        .windows(2)
        .any(|p| SECRET_PAIRS.contains(&(p[0].as_str(), p[1].as_str())))
    {
        return true;
    }
    let joined = words.concat();
    SECRET_PARTS.iter().any(|part| joined.contains(part))
}

/// `text` with its secrets redacted, or `None` when it has none. With
/// `address`, a text without `://` is read as one server address too
/// (`alice:pw@host:4222`).
fn redact_text(text: &str, address: bool) -> Option<String> {
    if holds_key_block(text) {
        return Some(REDACTED.to_owned());
    }
    let mut shown = redact_urls_in(text);
    if address && !text.contains("://") && !text.contains(char::is_whitespace) {
        shown = redact_authority(&shown, 0);
    }
    let shown = redact_seeds(&shown);
    (shown != text).then_some(shown)
}

/// A PEM-style block of a private key, a JWT or a seed (a `.creds` file).
fn holds_key_block(text: &str) -> bool {
    text.contains("-----BEGIN")
        && ["PRIVATE", "KEY", "JWT", "SEED"]
            .iter()
            .any(|label| text.contains(label))
}

/// Every `scheme://user:pass@host` in `text` with its password (or token)
/// redacted.
fn redact_urls_in(text: &str) -> String {
    let mut out = text.to_owned();
    let mut from = 0;
    while let Some(found) = out[from..].find("://") {
        let start = from + found + 3;
        out = redact_authority(&out, start);
        from = start.min(out.len());
    }
    out
}

/// `text` with the user info of the authority starting at byte `start`
/// redacted: the authority runs to the first `/`, `?`, `#` or whitespace,
/// or to the next URL's `://`; its user info is everything before its
/// last `@`. A password may itself hold `@`, `:` or `,`.
fn redact_authority(text: &str, start: usize) -> String {
    let rest = &text[start..];
    let mut end = rest
        .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
        .unwrap_or(rest.len());
    if let Some(next) = rest[..end].find("://") {
        end = next;
    }
    let Some(at) = rest[..end].rfind('@').filter(|&at| at > 0) else {
        return text.to_owned();
    };
    let hidden = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{}{hidden}{}", &text[..start], &rest[at..])
}

/// Every word of `text` that reads as an NKey seed (`S` and 57 more
/// base32 characters) replaced.
fn redact_seeds(text: &str) -> String {
    let is_seed = |w: &str| {
        w.len() == 58
            && w.starts_with('S')
            && w.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    };
    if !text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(is_seed)
    {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if is_seed(word) {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn redacted(mut v: Value) -> Value {
        redact_secrets(&mut v);
        v
    }

    /// The SDK's own settings, every field set, pass as the SDK wrote
    /// them: the shape follows the SDK, so a field it adds is not lost.
    #[test]
    fn the_sdks_own_connection_settings_pass_unchanged() {
        let mut config =
            aegis_sdk::AegisConfig::with_servers("nats://alice:pw@h1:4222,nats://h2:4222");
        config.nats.user = Some("alice".into());
        config.nats.password = Some(aegis_sdk::Secret::new("pw"));
        config.nats.inbox_prefix = Some("_INBOX_alice".into());
        config.nats.creds_file = Some("/etc/aegis/alice.creds".into());
        config.nats.reconnect.max_reconnects = Some(5);
        let written = config.redacted();
        assert_eq!(keep_sdk_shape(&written), written);
        assert!(!written.to_string().contains(":pw@"), "{written}");
    }

    #[test]
    fn what_the_sdk_does_not_write_is_left_out() {
        let kept = keep_sdk_shape(&json!({
            "nats": {"user": "a", "pw": "x", "env": [{"value": "y"}], "servers": ["nats://h:1"],
                     "reconnect": "not an object"},
            "other": {"user": "b"}
        }));
        assert_eq!(
            kept,
            json!({"nats": {"user": "a", "servers": ["nats://h:1"]}})
        );
        assert_eq!(keep_sdk_shape(&json!("a string")), json!({}));
    }

    #[test]
    fn keys_naming_secrets_are_redacted_at_any_depth() {
        let v = redacted(json!({
            "Password": "a", "nkeySeed": "b", "NKEY_SEED": "c", "user_jwt": "d",
            "api-key": "e", "clientSecret": "f", "dbpassword": 7,
            "deep": [{"x": {"TOKEN": ["g"]}}],
            "tokenRequired": true, "password": null,
            "creds_file": "/etc/x.creds", "tls_key": "/etc/tls.key",
            "user": "alice", "passive": "yes", "compass": "n", "timeoutMs": 5
        }));
        assert_eq!(
            v,
            json!({
                "Password": REDACTED, "nkeySeed": REDACTED, "NKEY_SEED": REDACTED,
                "user_jwt": REDACTED, "api-key": REDACTED, "clientSecret": REDACTED,
                "dbpassword": REDACTED,
                "deep": [{"x": {"TOKEN": REDACTED}}],
                "tokenRequired": true, "password": null,
                "creds_file": "/etc/x.creds", "tls_key": "/etc/tls.key",
                "user": "alice", "passive": "yes", "compass": "n", "timeoutMs": 5
            })
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted_anywhere() {
        let cases = [
            ("nats://alice:pw@h:4222", "nats://alice:<redacted>@h:4222"),
            ("tls://tok@h/ws", "tls://<redacted>@h/ws"),
            ("nats://h:4222", "nats://h:4222"),
            ("ws://h/path@x", "ws://h/path@x"),
            ("nats://u:p@ss:w,rd@h", "nats://u:<redacted>@h"),
            (
                "nats://a:b@h1,nats://c:d@h2 and nats://h3",
                "nats://a:<redacted>@h1,nats://c:<redacted>@h2 and nats://h3",
            ),
            (
                "see https://u:p@h/x?y=1 now",
                "see https://u:<redacted>@h/x?y=1 now",
            ),
            ("mail bob@example.com", "mail bob@example.com"),
            ("√ nats://ü:p@h", "√ nats://ü:<redacted>@h"),
            ("://", "://"),
            ("x://@h", "x://@h"),
        ];
        for (text, want) in cases {
            assert_eq!(
                redacted(json!({ "note": text })),
                json!({ "note": want }),
                "{text}"
            );
        }
        assert_eq!(
            redacted(json!({"servers": ["alice:pw@h:4222", "h:4222"], "note": "a:b@c"})),
            json!({"servers": ["alice:<redacted>@h:4222", "h:4222"], "note": "a:b@c"})
        );
        assert_eq!(
            redacted(json!({"nats://u:p@h": 1})),
            json!({"nats://u:<redacted>@h": 1})
        );
    }

    #[test]
    fn key_blocks_and_seeds_are_redacted_under_any_key() {
        let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";
        let v = redacted(json!({
            "a": "-----BEGIN NATS USER JWT-----\nxyz\n------END NATS USER JWT------",
            "b": "-----BEGIN EC PRIVATE KEY-----\nxyz",
            "c": format!("seed={seed}."),
            "d": "-----BEGIN CERTIFICATE-----\nxyz",
        }));
        assert_eq!(
            v,
            json!({
                "a": REDACTED, "b": REDACTED, "c": "seed=<redacted>.",
                "d": "-----BEGIN CERTIFICATE-----\nxyz"
            })
        );
    }

    #[test]
    fn key_words_split_at_humps_and_separators() {
        assert_eq!(key_words("nkeySeed"), ["nkey", "seed"]);
        assert_eq!(key_words("JWTToken"), ["jwt", "token"]);
        assert_eq!(key_words("user_JWT"), ["user", "jwt"]);
        assert_eq!(key_words("tls-key2File"), ["tls", "key2", "file"]);
        assert!(key_words("").is_empty());
    }
}
