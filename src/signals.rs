//! Signal names and numbers as runc accepts them on the command line.

use nix::sys::signal::Signal;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid signal {0:?}")]
pub struct SignalError(pub String);

/// Parses `15`, `TERM`, `SIGTERM` or `sigterm` into a signal number.
pub fn parse(s: &str) -> Result<i32, SignalError> {
    let err = || SignalError(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map(|sig| sig as i32).or_else(|_| {
            // Real-time signals have no nix enum variant but are valid.
            if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
                Ok(n)
            } else {
                Err(err())
            }
        });
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|sig| sig as i32)
        .map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_names() {
        assert_eq!(parse("15"), Ok(15));
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse("SIGKILL"), Ok(libc::SIGKILL));
        assert_eq!(parse("hup"), Ok(libc::SIGHUP));
        assert_eq!(parse("sigusr1"), Ok(libc::SIGUSR1));
        assert_eq!(parse("34"), Ok(34));
    }

    #[test]
    fn rejects_unknown() {
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("99").is_err());
        assert!(parse("").is_err());
    }
}
