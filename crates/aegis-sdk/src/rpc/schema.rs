//! What a method takes and returns, as JSON Schema derived from the
//! handler's Rust types (schemars), so no schema is ever written by hand or
//! drifts from the code. The services protocol publishes them in each
//! endpoint's metadata (`request_schema`, `response_schema`, as JSON text:
//! the protocol's metadata values are strings), where `nats micro info`,
//! `aegis call --schema` and the monitor read them.

use schemars::JsonSchema;
use serde_json::Value;

/// The request and response schemas of one method.
#[derive(Debug, Clone)]
pub(crate) struct MethodSchemas {
    pub(crate) request: Value,
    pub(crate) response: Value,
}

impl MethodSchemas {
    /// The schemas of a handler taking `Req` and answering `Res`.
    pub(crate) fn of<Req: JsonSchema, Res: JsonSchema>() -> Self {
        Self {
            request: schemars::schema_for!(Req).to_value(),
            response: schemars::schema_for!(Res).to_value(),
        }
    }

    /// The request type's doc comment, which schemars keeps as the schema's
    /// `description`: the method's description unless the builder set one.
    pub(crate) fn request_description(&self) -> Option<&str> {
        self.request.get("description").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks for a quote.
    #[derive(JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Quote {
        symbol: String,
    }

    #[test]
    fn schemas_come_from_the_types_and_their_docs() {
        let s = MethodSchemas::of::<Quote, f64>();
        assert_eq!(s.request["type"], "object");
        assert_eq!(s.request["properties"]["symbol"]["type"], "string");
        assert_eq!(s.request["required"][0], "symbol");
        assert_eq!(s.response["type"], "number");
        assert_eq!(s.request_description(), Some("Asks for a quote."));
    }
}
