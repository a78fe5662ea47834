//! Header names as constants built at compile time: looking a header up by a
//! `&str` allocates and validates the name on every call, a `HeaderName`
//! constant does not (this is on the path of every request and reply).

use aegis_contracts::wire;
use async_nats::{HeaderName, service};

pub(crate) const H_INSTANCE: HeaderName = HeaderName::from_static(wire::HEADER_INSTANCE);
pub(crate) const H_ENCODING: HeaderName = HeaderName::from_static(wire::HEADER_ENCODING);
pub(crate) const H_REQUEST_ID: HeaderName = HeaderName::from_static(wire::HEADER_REQUEST_ID);
pub(crate) const H_ERROR_CODE: HeaderName = HeaderName::from_static(wire::HEADER_ERROR_CODE);
pub(crate) const H_ERROR_DETAILS: HeaderName = HeaderName::from_static(wire::HEADER_ERROR_DETAILS);
pub(crate) const H_EPOCH: HeaderName = HeaderName::from_static(wire::HEADER_EPOCH);
pub(crate) const H_SERVICE_ERROR: HeaderName = HeaderName::from_static(service::NATS_SERVICE_ERROR);
pub(crate) const H_SERVICE_ERROR_CODE: HeaderName =
    HeaderName::from_static(service::NATS_SERVICE_ERROR_CODE);
