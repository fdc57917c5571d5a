//! runc-compatible logging: `--log FILE --log-format json|text`, `--debug`.
//! Errors also go to stderr so a person running microrun sees them.

use chrono::{SecondsFormat, Utc};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
struct Config {
    file: Option<PathBuf>,
    format: LogFormat,
    debug: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

pub fn init(file: Option<PathBuf>, format: LogFormat, debug: bool) {
    let _ = CONFIG.set(Config {
        file,
        format,
        debug,
    });
}

pub fn debug_enabled() -> bool {
    CONFIG.get().is_some_and(|c| c.debug)
}

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

/// Formats one log record in the configured format.
pub fn format_line(format: LogFormat, level: Level, msg: &str) -> String {
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    match format {
        LogFormat::Json => {
            serde_json::json!({"level": level.as_str(), "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("time=\"{time}\" level={} msg={msg:?}", level.as_str()),
    }
}

pub fn log(level: Level, msg: &str) {
    let Some(cfg) = CONFIG.get() else {
        if matches!(level, Level::Error | Level::Warn) {
            eprintln!("{msg}");
        }
        return;
    };
    if matches!(level, Level::Debug) && !cfg.debug {
        return;
    }
    let line = format_line(cfg.format, level, msg);
    match &cfg.file {
        Some(path) => {
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{line}");
            }
        }
        None if !matches!(level, Level::Error) => eprintln!("{line}"),
        None => {}
    }
    if matches!(level, Level::Error) {
        eprintln!("{msg}");
    }
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}
pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_runc_fields() {
        let l = format_line(
            LogFormat::Json,
            Level::Error,
            "container \"x\" does not exist",
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
