//! Payload encodings: JSON (the default) and MessagePack (opt-in per request
//! with the `Aegis-Encoding: msgpack` header; the reply uses the same one).

use aegis_contracts::wire::{ENCODING_JSON, ENCODING_MSGPACK};
use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// How a payload is encoded on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// UTF-8 JSON (default; readable with any NATS tool).
    #[default]
    Json,
    /// MessagePack with named fields (smaller, faster for large payloads).
    MsgPack,
}

/// A payload that could not be encoded or decoded.
///
/// Its message names the encoding only; what was wrong (serde's error) is
/// its [`source`](std::error::Error::source), so a printed cause chain
/// (`anyhow`'s `{:#}`) says each once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// JSON failed.
    #[error("JSON")]
    Json(#[from] serde_json::Error),
    /// MessagePack encoding failed.
    #[error("MessagePack")]
    MsgPackEncode(#[from] rmp_serde::encode::Error),
    /// MessagePack decoding failed.
    #[error("MessagePack")]
    MsgPackDecode(#[from] rmp_serde::decode::Error),
    /// The `Aegis-Encoding` header names an encoding this SDK does not know.
    #[error("unknown encoding `{0}` (expected json or msgpack)")]
    Unknown(String),
}

impl CodecError {
    /// The encoding and what was wrong on one line (e.g. "JSON: missing
    /// field ..."), for a wire error's message, which carries no cause chain.
    pub(crate) fn with_cause(&self) -> String {
        match std::error::Error::source(self) {
            Some(cause) => format!("{self}: {cause}"),
            None => self.to_string(),
        }
    }
}

impl Encoding {
    /// The header value naming this encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => ENCODING_JSON,
            Encoding::MsgPack => ENCODING_MSGPACK,
        }
    }

    /// Reads the encoding a message declares; JSON when it declares none.
    ///
    /// # Errors
    /// [`CodecError::Unknown`] for an unsupported value.
    pub fn from_headers(headers: Option<&HeaderMap>) -> Result<Encoding, CodecError> {
        Self::from_header_value(
            headers
                .and_then(|h| h.get(super::headers::H_ENCODING))
                .map(|v| v.as_str()),
        )
    }

    /// The encoding an `Aegis-Encoding` value names; JSON for none.
    pub(crate) fn from_header_value(value: Option<&str>) -> Result<Encoding, CodecError> {
        match value {
            None => Ok(Encoding::Json),
            Some(s) if s.eq_ignore_ascii_case(ENCODING_JSON) => Ok(Encoding::Json),
            Some(s) if s.eq_ignore_ascii_case(ENCODING_MSGPACK) => Ok(Encoding::MsgPack),
            Some(other) => Err(CodecError::Unknown(other.to_owned())),
        }
    }

    /// Encodes a value.
    ///
    /// # Errors
    /// [`CodecError`] when the value cannot be represented.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, CodecError> {
        Ok(match self {
            Encoding::Json => Bytes::from(serde_json::to_vec(value)?),
            Encoding::MsgPack => Bytes::from(rmp_serde::to_vec_named(value)?),
        })
    }

    /// Decodes a value. An empty JSON payload decodes as `null`, so handlers
    /// taking `()` or `Option<T>` accept a bare request.
    ///
    /// # Errors
    /// [`CodecError`] when the bytes are not a valid `T`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        Ok(match self {
            Encoding::Json if bytes.is_empty() => serde_json::from_slice(b"null")?,
            Encoding::Json => serde_json::from_slice(bytes)?,
            Encoding::MsgPack => rmp_serde::from_slice(bytes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_contracts::wire::HEADER_ENCODING;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        symbol: String,
        quantity: u32,
    }

    #[test]
    fn round_trips_in_both_encodings() {
        let order = Order {
            symbol: "AAPL".into(),
            quantity: 5,
        };
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let bytes = enc.encode(&order).unwrap();
            assert_eq!(enc.decode::<Order>(&bytes).unwrap(), order);
        }
    }

    #[test]
    fn header_selects_encoding() {
        let mut h = HeaderMap::new();
        assert_eq!(Encoding::from_headers(None).unwrap(), Encoding::Json);
        h.insert(HEADER_ENCODING, "msgpack");
        assert_eq!(Encoding::from_headers(Some(&h)).unwrap(), Encoding::MsgPack);
        h.insert(HEADER_ENCODING, "xml");
        assert!(matches!(
            Encoding::from_headers(Some(&h)),
            Err(CodecError::Unknown(_))
        ));
    }

    /// Printed with its causes (as `anyhow`'s `{:#}` does), a codec error
    /// says which encoding failed and serde's error says what was wrong,
    /// each once.
    #[test]
    fn a_codec_error_says_its_cause_once() {
        let say_each_cause_once = crate::rpc::tests::say_each_cause_once;
        say_each_cause_once(Encoding::Json.decode::<Order>(b"{").unwrap_err());
        say_each_cause_once(Encoding::MsgPack.decode::<Order>(b"\xc1").unwrap_err());
        say_each_cause_once(CodecError::from(rmp_serde::encode::Error::Syntax(
            "a map key must be a string".to_owned(),
        )));
    }

    /// A wire error has no cause chain: its message carries serde's
    /// reason, so a caller sent `INVALID_REQUEST` learns which field.
    #[test]
    fn a_wire_message_keeps_what_was_wrong() {
        let err = Encoding::Json.decode::<Order>(b"{}").unwrap_err();
        assert_eq!(
            err.with_cause(),
            "JSON: missing field `symbol` at line 1 column 2"
        );
    }

    #[test]
    fn empty_json_is_null() {
        assert_eq!(Encoding::Json.decode::<()>(b"").unwrap(), ());
        assert!(Encoding::Json.decode::<Order>(b"").is_err());
    }
}
