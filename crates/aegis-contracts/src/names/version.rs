//! Version validation: semver 2.0 via the `semver` crate, with a typed error.
//!
//! Versions appear in registry records and service definitions; accepting only
//! full `MAJOR.MINOR.PATCH` versions keeps sorting and comparison meaningful.

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The value is not a semver 2.0 version.
    #[error("invalid version {value:?}: {reason} (expected semver 2.0 such as 1.2.3)")]
    Invalid {
        /// The rejected input.
        value: String,
        /// What the semver parser objected to.
        reason: String,
    },
}

/// Parses a semver 2.0 version (`MAJOR.MINOR.PATCH[-pre][+build]`).
///
/// Partial versions such as `1.0`, leading zeros such as `01.0.0` and
/// surrounding whitespace are rejected.
///
/// # Errors
/// Returns [`VersionError::Invalid`] with the parser's reason.
pub fn validate_version(s: &str) -> Result<semver::Version, VersionError> {
    semver::Version::parse(s).map_err(|e| VersionError::Invalid {
        value: s.to_owned(),
        reason: too_large(s).unwrap_or_else(|| e.to_string()),
    })
}

/// The largest number a version's part may be.
const LARGEST_PART: u64 = u64::MAX;

/// Why `s` is refused when a number of its `MAJOR.MINOR.PATCH` is too
/// large: the parser's own words ("value of major version number exceeds
/// u64::MAX") name a Rust type, not a number a person can check.
fn too_large(s: &str) -> Option<String> {
    let core = s.split(['-', '+']).next()?;
    ["major", "minor", "patch"]
        .into_iter()
        .zip(core.split('.'))
        .find(|(_, part)| {
            !part.starts_with('0')
                && part.bytes().all(|b| b.is_ascii_digit())
                && part.parse::<u64>().is_err()
        })
        .map(|(which, _)| {
            format!("the {which} version number is too large (at most {LARGEST_PART})")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["0.0.0", "1.2.3", "1.2.3-rc.1+b5", "10.20.30-alpha+001"] {
            assert!(validate_version(ok).is_ok(), "{ok}");
        }
        let v = validate_version("1.2.3-rc.1+b5").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 2, 3));
        assert_eq!(v.pre.as_str(), "rc.1");
        assert_eq!(v.build.as_str(), "b5");
        for bad in [
            "", "1", "1.0", "01.0.0", "1.02.0", "1.0.0-01", "v1.0.0", " 1.0.0", "1.0.0 ", "1.0.0.0",
        ] {
            assert!(
                matches!(validate_version(bad), Err(VersionError::Invalid { ref value, .. }) if value == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_number_too_large_is_said_in_numbers() {
        let reason = |s: &str| match validate_version(s) {
            Err(VersionError::Invalid { reason, .. }) => reason,
            Ok(v) => panic!("{s} read as {v}"),
        };
        assert_eq!(
            reason("18446744073709551616.0.0"),
            "the major version number is too large (at most 18446744073709551615)"
        );
        assert_eq!(
            reason("1.0.99999999999999999999-rc.1"),
            "the patch version number is too large (at most 18446744073709551615)"
        );
        assert!(validate_version("18446744073709551615.0.0").is_ok());
        // Other faults keep the parser's words.
        assert!(reason("1.0").contains("unexpected end of input"));
    }
}
