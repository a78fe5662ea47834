//! The UI's copy of the OpenAPI document (`ui/lib/api/openapi.json`, which
//! the UI's zod schemas are checked against) equals what the code
//! generates, so a change to the API cannot leave the UI's contract check
//! looking at an old document.

#[test]
fn the_ui_copy_of_the_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/lib/api/openapi.json");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("ui/lib/api/openapi.json exists"),
    )
    .expect("ui/lib/api/openapi.json is JSON");
    let current = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    assert!(
        committed == current,
        "ui/lib/api/openapi.json is stale; regenerate it with\n  cargo run -p aegis-monitor --example openapi > ui/lib/api/openapi.json"
    );
}

/// A definition's free text has one rule, so one pattern: the attribute
/// takes only a literal, written out for `owner` and `description` of both
/// the create and the update body.
#[test]
fn the_definition_text_patterns_are_one() {
    fn collect<'a>(schema: &'a serde_json::Value, found: &mut Vec<&'a serde_json::Value>) {
        match schema {
            serde_json::Value::Object(map) => {
                if let Some(properties) = map.get("properties") {
                    for field in ["owner", "description"] {
                        if let Some(pattern) = properties.get(field).and_then(|f| f.get("pattern"))
                        {
                            found.push(pattern);
                        }
                    }
                }
                map.values().for_each(|v| collect(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    let mut patterns = Vec::new();
    for body in ["NewServiceDefinition", "ServiceDefinitionPatch"] {
        collect(&doc["components"]["schemas"][body], &mut patterns);
    }
    assert!(
        patterns.len() >= 4 && patterns[0].is_string(),
        "{patterns:?}"
    );
    assert!(patterns.iter().all(|p| *p == patterns[0]), "{patterns:?}");
}
