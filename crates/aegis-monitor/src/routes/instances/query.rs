//! The query of the instance lists: its filters and paging read into a
//! [`Selection`] (400 on a bad value), and the `Link` to the next page.

use std::str::FromStr;

use aegis_contracts::{
    InstanceStatus,
    names::{validate_instance_id, validate_service_name},
};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use crate::{
    error::{ApiError, Echoed, INSTANCE_ID_CHARS, QUERY_VALUE_CHARS, SERVICE_NAME_CHARS},
    fleet::Selection,
};

/// Filters and paging of the instance list; all optional, and without any
/// the whole fleet is listed.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only these services (comma-separated names).
    #[param(
        example = "order-service,risk-service",
        pattern = "^[a-z](?:[a-z0-9]|-(?!-)){1,62}[a-z0-9](?:,[a-z](?:[a-z0-9]|-(?!-)){1,62}[a-z0-9])*$"
    )]
    service: Option<String>,
    /// Only these derived statuses (comma-separated: ACTIVE, UNHEALTHY,
    /// STANDBY).
    #[param(
        example = "UNHEALTHY,STANDBY",
        pattern = "^(?:ACTIVE|UNHEALTHY|STANDBY)(?:,(?:ACTIVE|UNHEALTHY|STANDBY))*$"
    )]
    status: Option<String>,
    /// At most this many instances (1–1000). When more match, the response
    /// carries `Link: <…>; rel="next"` with the query of the next page.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only instances sorted after this one, given as `{service}/{instanceId}`
    /// (the last one of the previous page).
    #[param(
        example = "order-service/order-1",
        pattern = "^[a-z](?:[a-z0-9]|-(?!-)){1,62}[a-z0-9]/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
    )]
    after: Option<String>,
}

impl ListQuery {
    /// The selection it asks for; 400 on a bad value.
    pub(super) fn selection(&self) -> Result<Selection, ApiError> {
        let services = match &self.service {
            None => None,
            Some(list) => {
                let mut names = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    validate_service_name(name).map_err(|e| {
                        let given = Echoed::new(name, SERVICE_NAME_CHARS);
                        let error = ApiError::bad_param("service", format!("{given}: {e}"))
                            .with_detail("value", given.shown);
                        match given.length {
                            Some(length) => error.with_detail("length", length),
                            None => error,
                        }
                    })?;
                    names.push(name.to_owned());
                }
                if names.is_empty() {
                    return Err(ApiError::bad_param("service", "name at least one service"));
                }
                names.sort_unstable();
                names.dedup();
                Some(names)
            }
        };
        let statuses = match &self.status {
            None => None,
            Some(list) => {
                let mut statuses = Vec::new();
                for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    statuses.push(parse_status("status", s)?);
                }
                if statuses.is_empty() {
                    return Err(ApiError::bad_param("status", "name at least one status"));
                }
                statuses.sort_unstable_by_key(|s| s.as_str());
                statuses.dedup();
                Some(statuses)
            }
        };
        // `limit` is in its documented range: `ApiQuery` holds it there.
        let after = match &self.after {
            None => None,
            Some(cursor) => {
                let bad = || {
                    // As long as a cursor can be: a name, "/", an id.
                    let given = Echoed::new(cursor, SERVICE_NAME_CHARS + 1 + INSTANCE_ID_CHARS);
                    let error = ApiError::bad_param("after", "expected {service}/{instanceId}")
                        .with_details(json!({ "param": "after", "value": given.shown }));
                    match given.length {
                        Some(length) => error.with_detail("length", length),
                        None => error,
                    }
                };
                let (service, id) = cursor.split_once('/').ok_or_else(bad)?;
                if validate_service_name(service).is_err() || validate_instance_id(id).is_err() {
                    return Err(bad());
                }
                Some((service.to_owned(), id.to_owned()))
            }
        };
        Ok(Selection {
            services,
            statuses,
            after,
            limit: self.limit,
        })
    }
}

pub(super) fn parse_status(param: &str, value: &str) -> Result<InstanceStatus, ApiError> {
    InstanceStatus::from_str(value).map_err(|_| {
        ApiError::bad_param(param, "expected ACTIVE, UNHEALTHY or STANDBY")
            .with_details(json!({
                "param": param,
                "allowed": ["ACTIVE", "UNHEALTHY", "STANDBY"],
            }))
            .with_echoed("value", "length", &Echoed::new(value, QUERY_VALUE_CHARS))
    })
}

/// `Link` to the page after (service, id) of `selection`.
pub(super) fn next_link(selection: &Selection, service: &str, id: &str) -> String {
    let mut query = Vec::new();
    if let Some(services) = &selection.services {
        query.push(format!("service={}", services.join(",")));
    }
    if let Some(statuses) = &selection.statuses {
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        query.push(format!("status={}", names.join(",")));
    }
    if let Some(limit) = selection.limit {
        query.push(format!("limit={limit}"));
    }
    // Service names and instance ids are URL-safe by their rules; `/` is
    // allowed in a query.
    query.push(format!("after={service}/{id}"));
    format!("</api/instances?{}>; rel=\"next\"", query.join("&"))
}
