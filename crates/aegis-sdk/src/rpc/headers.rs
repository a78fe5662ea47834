//! Header names as constants built at compile time: looking a header up by a
//! `&str` allocates and validates the name on every call, a `HeaderName`
//! constant does not (this is on the path of every request and reply).

use aegis_contracts::wire::{self, ErrorCode};
use async_nats::{HeaderMap, HeaderName, HeaderValue, service};

use super::{Encoding, WireError};

pub(crate) const H_INSTANCE: HeaderName = HeaderName::from_static(wire::HEADER_INSTANCE);
pub(crate) const H_WANT_INSTANCE: HeaderName = HeaderName::from_static(wire::HEADER_WANT_INSTANCE);
pub(crate) const H_ENCODING: HeaderName = HeaderName::from_static(wire::HEADER_ENCODING);
pub(crate) const H_REQUEST_ID: HeaderName = HeaderName::from_static(wire::HEADER_REQUEST_ID);
pub(crate) const H_ERROR_CODE: HeaderName = HeaderName::from_static(wire::HEADER_ERROR_CODE);
pub(crate) const H_ERROR_DETAILS: HeaderName = HeaderName::from_static(wire::HEADER_ERROR_DETAILS);
pub(crate) const H_EPOCH: HeaderName = HeaderName::from_static(wire::HEADER_EPOCH);
pub(crate) const H_SERVICE_ERROR: HeaderName = HeaderName::from_static(service::NATS_SERVICE_ERROR);
pub(crate) const H_SERVICE_ERROR_CODE: HeaderName =
    HeaderName::from_static(service::NATS_SERVICE_ERROR_CODE);

/// The headers a caller reads from a reply, found in one pass over the map.
///
/// Looking a name up hashes it, and a successful reply used to be looked
/// up five times (instance, two error codes, encoding, epoch); a reply
/// carries at most a handful of headers, so walking them once and
/// comparing names is cheaper.
#[derive(Debug, Default)]
pub(crate) struct ReplyHeaders<'a> {
    /// `Aegis-Instance`: who served a load-balanced call, or refused one.
    pub(crate) instance: Option<&'a str>,
    encoding: Option<&'a str>,
    epoch: Option<&'a str>,
    error_code: Option<&'a str>,
    error_details: Option<&'a str>,
    service_error: Option<&'a str>,
    service_error_code: Option<&'a str>,
}

impl<'a> ReplyHeaders<'a> {
    /// Reads the first value of each header the caller cares about.
    pub(crate) fn read(headers: Option<&'a HeaderMap>) -> Self {
        let mut found = Self::default();
        for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
            let slot = if *name == H_INSTANCE {
                &mut found.instance
            } else if *name == H_ENCODING {
                &mut found.encoding
            } else if *name == H_EPOCH {
                &mut found.epoch
            } else if *name == H_ERROR_CODE {
                &mut found.error_code
            } else if *name == H_ERROR_DETAILS {
                &mut found.error_details
            } else if *name == H_SERVICE_ERROR {
                &mut found.service_error
            } else if *name == H_SERVICE_ERROR_CODE {
                &mut found.service_error_code
            } else {
                continue;
            };
            *slot = values.first().map(HeaderValue::as_str);
        }
        found
    }

    /// The encoding the reply declares (JSON when it declares none), or
    /// `requested` when it names one this SDK does not know.
    pub(crate) fn encoding(&self, requested: Encoding) -> Encoding {
        Encoding::from_header_value(self.encoding).unwrap_or(requested)
    }

    /// The leader's fencing epoch (`Aegis-Epoch`), when the reply has one.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.epoch.and_then(|v| v.parse().ok())
    }

    /// The error an error reply carries: our `Aegis-Error-Code`, or else the
    /// services protocol's numeric `Nats-Service-Error-Code` (so non-Aegis
    /// services map too). `None` for a successful reply.
    pub(crate) fn error(&self) -> Option<WireError> {
        let code = match self.error_code {
            Some(code) => code.parse::<ErrorCode>().unwrap_or(ErrorCode::Internal),
            None => ErrorCode::from_status(self.service_error_code?.parse::<u16>().ok()?),
        };
        Some(WireError {
            code,
            message: self.service_error.unwrap_or_default().to_owned(),
            details: self
                .error_details
                .and_then(|v| serde_json::from_str(v).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successful_reply_names_its_instance_and_no_error() {
        let mut h = HeaderMap::new();
        h.insert(H_INSTANCE, "pricing-1");
        h.insert(H_EPOCH, "7");
        h.insert("X-Other", "ignored");
        let read = ReplyHeaders::read(Some(&h));
        assert_eq!(read.instance, Some("pricing-1"));
        assert_eq!(read.epoch(), Some(7));
        assert_eq!(read.encoding(Encoding::MsgPack), Encoding::Json);
        assert!(read.error().is_none());
        assert!(ReplyHeaders::read(None).error().is_none());
    }

    #[test]
    fn an_error_reply_reads_ours_or_the_services_protocol_code() {
        let mut ours = HeaderMap::new();
        ours.insert(H_SERVICE_ERROR, "no such order");
        ours.insert(H_SERVICE_ERROR_CODE, "404");
        ours.insert(H_ERROR_CODE, "NOT_ACTIVE");
        ours.insert(H_ERROR_DETAILS, r#"{"leader":"order-1"}"#);
        let err = ReplyHeaders::read(Some(&ours)).error().expect("an error");
        assert_eq!(err.code, ErrorCode::NotActive);
        assert_eq!(err.message, "no such order");
        assert_eq!(err.details, Some(serde_json::json!({"leader": "order-1"})));

        let mut theirs = HeaderMap::new();
        theirs.insert(H_SERVICE_ERROR, "gone");
        theirs.insert(H_SERVICE_ERROR_CODE, "404");
        let err = ReplyHeaders::read(Some(&theirs)).error().expect("an error");
        assert_eq!(err.code, ErrorCode::from_status(404));

        let mut odd = HeaderMap::new();
        odd.insert(H_SERVICE_ERROR_CODE, "not a number");
        assert!(ReplyHeaders::read(Some(&odd)).error().is_none());
    }
}
