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
