//! Container id validation: ids become directory names under `--root`.

use thiserror::Error;

const MAX_ID_LEN: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    #[error("invalid container id: id must not be empty")]
    Empty,
    #[error("invalid container id {0:?}: longer than {MAX_ID_LEN} bytes")]
    TooLong(String),
    #[error("invalid container id {0:?}: only letters, digits and '_', '+', '-', '.' are allowed, and it must not be '.' or '..'")]
    BadChars(String),
}

/// Accepts what runc accepts: `^[\w+-\.]+$`, not "." or "..", no NUL or '/'.
pub fn validate(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(
            id.chars().take(64).collect::<String>() + "…",
        ));
    }
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if !ok_chars || id == "." || id == ".." || id.contains("..") {
        return Err(IdError::BadChars(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_and_containerd_ids() {
        validate("a3f1c0de9b2e4f56a3f1c0de9b2e4f56a3f1c0de9b2e4f56a3f1c0de9b2e4f56").unwrap();
        validate("k8s_pod-1.2+x").unwrap();
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(validate(""), Err(IdError::Empty));
        for bad in ["a/b", "..", ".", "a..b", "a\0b", "a b", "../x"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            validate(&"x".repeat(1025)),
            Err(IdError::TooLong(_))
        ));
        validate(&"x".repeat(1024)).unwrap();
    }
}
