//! Identifier types for MAST observations and data products.
//!
//! MAST uses two different identifiers for one observation, and mixing them
//! up is a common source of failed product queries:
//!
//! - [`ObsId`] is MAST's numeric `obsid` (e.g. `2003520266`). Only this one is
//!   accepted by `Mast.Caom.Products`.
//! - [`MissionObsId`] is the mission's dataset name, the CAOM `obs_id` column
//!   (e.g. `jbz504eoq`, `U9O40504M`, or a JWST name such as
//!   `jw01234001001_02101_00001_nrca1`).
//!
//! The two are distinct types, so the compiler rejects one where the other is
//! needed, and parsing a mission name as an [`ObsId`] fails with a message that
//! explains the difference. [`DataUri`] is a validated `mast:` data URI that
//! maps to a safe relative path.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::ArchiveError;

/// MAST's numeric observation id (the CAOM `obsid` column, `obsID` and
/// `parent_obsid` in product lists).
///
/// Deserializes from a JSON number or a string of decimal digits, because
/// MAST sends both forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObsId(pub u64);

impl ObsId {
    /// Returns the numeric value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ObsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ObsId {
    type Err = ArchiveError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(invalid_obsid(value, "the value is empty"));
        }
        if trimmed.chars().any(|c| c.is_ascii_alphabetic()) {
            return Err(invalid_obsid(
                value,
                "this looks like a mission obs_id (dataset name), but Mast.Caom.Products needs the numeric obsid; take the obsid column from the observation query (Mast.Caom.Filtered) for this dataset",
            ));
        }
        trimmed.parse::<u64>().map(ObsId).map_err(|err| {
            invalid_obsid(
                value,
                &format!("expected a non-negative decimal integer ({err})"),
            )
        })
    }
}

fn invalid_obsid(value: &str, reason: &str) -> ArchiveError {
    ArchiveError::InvalidId {
        kind: "MAST obsid",
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

impl Serialize for ObsId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ObsId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObsIdVisitor)
    }
}

struct ObsIdVisitor;

impl Visitor<'_> for ObsIdVisitor {
    type Value = ObsId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MAST obsid as a non-negative integer or a string of digits")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<ObsId, E> {
        Ok(ObsId(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<ObsId, E> {
        u64::try_from(value)
            .map(ObsId)
            .map_err(|_| E::custom(format!("MAST obsid {value} is negative")))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<ObsId, E> {
        // Integral floats such as 2003520266.0 appear when a producer routes
        // ids through a float column; fractional or out-of-range values do not
        // name an observation.
        if value.fract() == 0.0 && value >= 0.0 && value < 2f64.powi(53) {
            Ok(ObsId(value as u64))
        } else {
            Err(E::custom(format!(
                "MAST obsid {value} is not a whole number"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<ObsId, E> {
        value.parse::<ObsId>().map_err(E::custom)
    }
}

/// The mission's dataset name for an observation (the CAOM `obs_id` column),
/// such as `jbz504eoq` or `U9O40504M`. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MissionObsId(String);

impl MissionObsId {
    /// Creates a mission obs_id, rejecting empty or blank strings.
    pub fn new(value: impl Into<String>) -> Result<Self, ArchiveError> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err(ArchiveError::InvalidId {
                kind: "mission obs_id",
                value,
                reason: "the value is empty; MAST rows always carry a dataset name in obs_id"
                    .to_owned(),
            });
        }
        Ok(Self(value))
    }

    /// Returns the dataset name as sent by MAST (case preserved).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MissionObsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for MissionObsId {
    type Err = ArchiveError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for MissionObsId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::new(value).map_err(de::Error::custom)
    }
}

/// Scheme prefix of MAST data URIs.
pub const DATA_URI_SCHEME: &str = "mast:";

/// A MAST data URI (`mast:HST/product/jbz504eoq_raw.fits`) whose path part is
/// a safe relative path: no empty, `.` or `..` segments, no backslashes, no
/// colons, no control characters and no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataUri {
    uri: String,
}

impl DataUri {
    /// Validates `uri`; the check runs before any request or file access.
    pub fn parse(uri: &str) -> Result<Self, ArchiveError> {
        let reject = |reason: &str| ArchiveError::UnsafeDataUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(path) = uri.strip_prefix(DATA_URI_SCHEME) else {
            return Err(reject("the URI does not start with 'mast:'"));
        };
        if path.is_empty() {
            return Err(reject("the path after 'mast:' is empty"));
        }
        if path.starts_with('/') {
            return Err(reject("the path is absolute"));
        }
        if path.contains('\\') {
            return Err(reject("the path contains a backslash"));
        }
        if path.contains(':') {
            return Err(reject(
                "the path contains ':', which could name a drive or another scheme",
            ));
        }
        if path.chars().any(char::is_control) {
            return Err(reject("the path contains a control character"));
        }
        for segment in path.split('/') {
            match segment {
                "" => {
                    return Err(reject(
                        "the path contains an empty segment ('//' or a trailing '/')",
                    ));
                }
                "." | ".." => return Err(reject("the path contains a '.' or '..' segment")),
                _ if segment.contains("..") => return Err(reject("the path contains '..'")),
                _ => {}
            }
        }
        Ok(Self {
            uri: uri.to_owned(),
        })
    }

    /// Returns the full URI, including the `mast:` prefix.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// Returns the relative path after `mast:`, with `/` separators.
    pub fn relative_path(&self) -> &str {
        &self.uri[DATA_URI_SCHEME.len()..]
    }
}

impl fmt::Display for DataUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obsid_parses_digits() {
        assert_eq!("2003520266".parse::<ObsId>().unwrap(), ObsId(2003520266));
        assert_eq!(" 42 ".parse::<ObsId>().unwrap(), ObsId(42));
    }

    #[test]
    fn obsid_rejects_mission_obs_id() {
        for value in ["jw01234001001_02101_00001_nrca1", "jbz504eoq", "U9O40504M"] {
            let err = value.parse::<ObsId>().unwrap_err();
            let message = err.to_string();
            assert!(message.contains("mission obs_id"), "{message}");
            assert!(message.contains("Mast.Caom.Products"), "{message}");
            assert!(message.contains("numeric obsid"), "{message}");
            assert_eq!(err.code(), "invalid_id");
        }
    }

    #[test]
    fn obsid_rejects_empty_and_negative() {
        assert!("".parse::<ObsId>().is_err());
        assert!("-5".parse::<ObsId>().is_err());
        assert!("1.5".parse::<ObsId>().is_err());
    }

    #[test]
    fn obsid_deserializes_number_and_string() {
        let from_number: ObsId = serde_json::from_str("2003520266").unwrap();
        let from_string: ObsId = serde_json::from_str("\"2003520266\"").unwrap();
        assert_eq!(from_number, ObsId(2003520266));
        assert_eq!(from_string, ObsId(2003520266));
        assert!(serde_json::from_str::<ObsId>("\"O6AU01MSQ\"").is_err());
        assert!(serde_json::from_str::<ObsId>("-1").is_err());
        assert!(serde_json::from_str::<ObsId>("1.5").is_err());
    }

    #[test]
    fn mission_obs_id_rejects_blank() {
        assert!(MissionObsId::new("  ").is_err());
        assert_eq!(
            MissionObsId::new("jbz504eoq").unwrap().as_str(),
            "jbz504eoq"
        );
    }

    proptest::proptest! {
        #[test]
        fn data_uri_paths_stay_relative(path in "[a-zA-Z0-9_./\\\\:-]{1,40}") {
            let uri = format!("mast:{path}");
            if let Ok(parsed) = DataUri::parse(&uri) {
                let relative = std::path::Path::new(parsed.relative_path());
                for component in relative.components() {
                    proptest::prop_assert!(
                        matches!(component, std::path::Component::Normal(_)),
                        "{uri} has component {component:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn data_uri_accepts_mast_paths() {
        let uri = DataUri::parse("mast:HST/product/jbz504eoq_raw.fits").unwrap();
        assert_eq!(uri.relative_path(), "HST/product/jbz504eoq_raw.fits");
    }

    #[test]
    fn data_uri_rejects_unsafe_forms() {
        let cases = [
            "HST/product/x.fits",
            "https://example.org/x.fits",
            "mast:",
            "mast:/etc/passwd",
            "mast:HST/../../etc/passwd",
            "mast:..",
            "mast:HST/product/..hidden",
            "mast:HST\\product\\x.fits",
            "mast:C:/x.fits",
            "mast:HST//x.fits",
            "mast:HST/./x.fits",
            "mast:HST/x.fits/",
            "mast:HST/x\n.fits",
        ];
        for case in cases {
            let result = DataUri::parse(case);
            assert!(result.is_err(), "accepted {case:?}");
        }
    }
}
