//! A network interface name, validated as the kernel does (`dev_valid_name`).

use std::fmt;
use std::str::FromStr;

/// Most bytes of a name (`IFNAMSIZ` less the terminating NUL).
pub const MAX_LEN: usize = libc::IFNAMSIZ - 1;

/// A name the kernel accepts for an interface: 1 to 15 bytes, not `.` or `..`,
/// without `/`, `:`, whitespace or NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

/// Why a string is not an interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    /// Empty.
    #[error("an interface name cannot be empty")]
    Empty,
    /// Longer than [`MAX_LEN`] bytes.
    #[error("interface name {0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    /// `.` or `..`, or a character the kernel refuses.
    #[error("{0:?} is not a valid interface name (no '/', ':', whitespace, '.' or '..')")]
    Invalid(String),
}

impl IfName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's bytes (no NUL; at most [`MAX_LEN`]).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl FromStr for IfName {
    type Err = IfNameError;

    fn from_str(s: &str) -> Result<Self, IfNameError> {
        if s.is_empty() {
            return Err(IfNameError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(IfNameError::TooLong(s.to_string()));
        }
        let bad = |c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace();
        if s == "." || s == ".." || s.chars().any(bad) {
            return Err(IfNameError::Invalid(s.to_string()));
        }
        Ok(IfName(s.to_string()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_accepts_are_accepted() {
        for ok in ["eth0", "tap0", "a", "veth-tw.1", "x23456789012345"] {
            assert_eq!(ok.parse::<IfName>().map(|n| n.to_string()), Ok(ok.into()));
        }
    }

    #[test]
    fn names_the_kernel_refuses_are_refused() {
        assert_eq!("".parse::<IfName>(), Err(IfNameError::Empty));
        assert!(matches!(
            "x234567890123456".parse::<IfName>(),
            Err(IfNameError::TooLong(_))
        ));
        for bad in [".", "..", "a/b", "a:b", "a b", "a\tb", "a\0b"] {
            assert!(
                matches!(bad.parse::<IfName>(), Err(IfNameError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
