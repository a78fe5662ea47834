//! Prints the monitor's OpenAPI document (`aegis_monitor::openapi()`) as
//! pretty JSON: the source of the UI's committed copy
//! `ui/lib/api/openapi.json`, which the UI's zod schemas are checked against
//! and which a test of this crate keeps equal to the code.
//!
//! `cargo run -p aegis-monitor --example openapi > ui/lib/api/openapi.json`

fn main() -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(&aegis_monitor::openapi())?;
    println!("{json}");
    Ok(())
}
