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
        reason: e.to_string(),
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
}
