//! `aegis bench scale --ttl-ms` is bounded when the command line is read:
//! every instance of the benchmark beats once a second, and a registration
//! refuses a heartbeat longer than a third of its TTL, so a TTL under
//! 3000 ms could never run. It is refused at once, naming the flag and
//! saying why, before any server or instance starts.

mod common;

use std::time::Duration;

use common::assert_flag_refused;

#[test]
fn a_ttl_shorter_than_three_heartbeats_is_refused_naming_the_flag() {
    for ttl in ["1", "1000", "2999"] {
        let out = assert_flag_refused(
            &["bench", "scale", "--ttl-ms", ttl],
            "--ttl-ms",
            Duration::from_secs(10),
        );
        let error = out
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        assert!(error.contains("3000"), "{ttl}: says the bound: {error}");
        assert!(
            error.contains("heartbeat"),
            "{ttl}: says why (the 1 s heartbeat): {error}"
        );
    }
}
