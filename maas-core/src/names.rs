//! Validated names: [`Hostname`] (RFC 1123) and the short identifiers for sites, racks,
//! pools, SKUs, OS releases and groups. Constructing one is the validation; a value of
//! these types is always well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// What kind of name.
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} {name:?} is {len} characters long; the limit is {max}")]
    TooLong {
        /// What kind of name.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character that is not allowed, at a 0-based character position.
    #[error("{what} {name:?} has {found:?} at position {position}; {allowed}")]
    BadCharacter {
        /// What kind of name.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// The offending character.
        found: char,
        /// Its position.
        position: usize,
        /// What is allowed there.
        allowed: &'static str,
    },
    /// A hostname label (between dots) that breaks RFC 1123.
    #[error("hostname {name:?} has an invalid label {label:?}: {reason}")]
    BadLabel {
        /// The rejected hostname.
        name: String,
        /// The offending label.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A host's name: RFC 1123 labels (letters, digits, hyphens; 1-63 characters; no hyphen at
/// either end), at most 253 characters, stored lower-case (DNS names are case-insensitive,
/// and overlap detection must not be fooled by `WEB1` vs `web1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    /// Longest hostname accepted (RFC 1035 textual limit).
    pub const MAX_LEN: usize = 253;
    /// Longest label accepted.
    pub const MAX_LABEL: usize = 63;

    /// Validates and normalizes `s` (ASCII lower-case).
    pub fn new(s: &str) -> Result<Self, NameError> {
        const WHAT: &str = "hostname";
        if s.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        let len = s.chars().count();
        if len > Self::MAX_LEN {
            return Err(NameError::TooLong { what: WHAT, name: s.into(), len, max: Self::MAX_LEN });
        }
        if let Some((position, found)) =
            s.chars().enumerate().find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(NameError::BadCharacter {
                what: WHAT,
                name: s.into(),
                found,
                position,
                allowed: "allowed are ASCII letters, digits, '-' and '.'",
            });
        }
        for label in s.split('.') {
            let reason = if label.is_empty() {
                Some("labels must not be empty (no leading, trailing or double dots)")
            } else if label.len() > Self::MAX_LABEL {
                Some("labels are at most 63 characters")
            } else if label.starts_with('-') || label.ends_with('-') {
                Some("labels must not start or end with '-'")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(NameError::BadLabel { name: s.into(), label: label.into(), reason });
            }
        }
        Ok(Hostname(s.to_ascii_lowercase()))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Hostname {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hostname::new(s)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hostname::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Checks a short identifier: 1-64 characters from `[A-Za-z0-9._:-]`, starting with a
/// letter or digit.
fn check_ident(what: &'static str, s: &str) -> Result<(), NameError> {
    const MAX: usize = 64;
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    let len = s.chars().count();
    if len > MAX {
        return Err(NameError::TooLong { what, name: s.into(), len, max: MAX });
    }
    for (position, c) in s.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (position > 0 && matches!(c, '.' | '_' | '-' | ':'));
        if !ok {
            return Err(NameError::BadCharacter {
                what,
                name: s.into(),
                found: c,
                position,
                allowed: "allowed are ASCII letters, digits and (not first) '.', '_', '-', ':'",
            });
        }
    }
    Ok(())
}

macro_rules! define_ident {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` (1-64 of `[A-Za-z0-9._:-]`, starting with a letter or digit).
            pub fn new(s: &str) -> Result<Self, NameError> {
                check_ident($what, s).map(|()| $name(s.to_string()))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_ident!(
    /// A data center (the unit workers are routed by).
    Site,
    "site"
);
define_ident!(
    /// A rack within a site.
    Rack,
    "rack"
);
define_ident!(
    /// An inventory pool (the unit authorization is granted on).
    Pool,
    "pool"
);
define_ident!(
    /// A hardware SKU (durations and ETAs are kept per SKU).
    Sku,
    "SKU"
);
define_ident!(
    /// An operating-system release a host is reimaged to, e.g. `ubuntu-24.04`.
    OsRelease,
    "OS release"
);
define_ident!(
    /// An authorization group (from a policy file or certificate).
    Group,
    "group"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = Hostname::new(input).map(|h| h.to_string()).map_err(|e| e.to_string());
        assert_eq!(got, expected.map(String::from).map_err(String::from), "input {input:?}");
    }

    #[test]
    fn hostnames_follow_rfc1123() {
        check("web001.dc1", Ok("web001.dc1"));
        check("WEB-1.Example.COM", Ok("web-1.example.com"));
        check("1a", Ok("1a"));
        check("", Err("hostname is empty"));
        check("web_1", Err("hostname \"web_1\" has '_' at position 3; allowed are ASCII letters, digits, '-' and '.'"));
        check(
            "web..dc1",
            Err(
                "hostname \"web..dc1\" has an invalid label \"\": labels must not be empty (no leading, trailing or double dots)",
            ),
        );
        check("-web", Err("hostname \"-web\" has an invalid label \"-web\": labels must not start or end with '-'"));
        check(
            "web.",
            Err(
                "hostname \"web.\" has an invalid label \"\": labels must not be empty (no leading, trailing or double dots)",
            ),
        );
        check("héllo", Err("hostname \"héllo\" has 'é' at position 1; allowed are ASCII letters, digits, '-' and '.'"));
        let label64 = "a".repeat(64);
        assert!(Hostname::new(&label64).unwrap_err().to_string().contains("at most 63"));
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        assert!(Hostname::new(&long).unwrap_err().to_string().contains("limit is 253"));
    }

    #[test]
    fn identifiers_are_short_and_plain() {
        assert!(Site::new("dc1").is_ok());
        assert!(OsRelease::new("ubuntu-24.04").is_ok());
        assert_eq!(
            Pool::new("-x").unwrap_err().to_string(),
            "pool \"-x\" has '-' at position 0; allowed are ASCII letters, digits and (not first) '.', '_', '-', ':'"
        );
        assert!(Sku::new(&"x".repeat(65)).is_err());
        assert!(serde_json::from_str::<Site>("\"bad site\"").is_err());
    }
}
