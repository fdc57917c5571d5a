//! The last few KiB of the guest's serial console, kept in memory for every
//! VM (debug or not), so that a guest that dies says why: a kernel panic or
//! the agent's last words end up in the error the caller sees.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Bytes kept: a panic message with its first lines of context.
const KEEP: usize = 8 * 1024;

#[derive(Clone, Default)]
pub struct ConsoleTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl ConsoleTail {
    /// A console sink that keeps the tail and passes everything on to `inner`.
    pub fn writer(&self, inner: Box<dyn Write + Send>) -> Box<dyn Write + Send> {
        Box::new(TailWriter {
            tail: self.clone(),
            inner,
        })
    }

    /// The last `n` non-empty lines, control characters dropped.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let bytes: Vec<u8> = match self.buf.lock() {
            Ok(b) => b.iter().copied().collect(),
            Err(p) => p.into_inner().iter().copied().collect(),
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text
            .split(['\n', '\r'])
            .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// For an error message: " (guest console: a | b | c)", or nothing.
    pub fn summary(&self) -> String {
        let lines = self.last_lines(6);
        if lines.is_empty() {
            String::new()
        } else {
            format!(" (guest console ends with: {})", lines.join(" | "))
        }
    }

    fn push(&self, data: &[u8]) {
        let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let data = &data[data.len().saturating_sub(KEEP)..];
        let over = (b.len() + data.len()).saturating_sub(KEEP);
        b.drain(..over);
        b.extend(data);
    }
}

struct TailWriter {
    tail: ConsoleTail,
    inner: Box<dyn Write + Send>,
}

impl Write for TailWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.tail.push(data);
        // The debug log failing (full disk) must not lose the tail or stop the guest.
        let _ = self.inner.write_all(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_tail_and_the_last_lines() {
        let t = ConsoleTail::default();
        let mut w = t.writer(Box::new(std::io::sink()));
        for i in 0..5000 {
            writeln!(w, "line {i}").unwrap();
        }
        w.write_all(b"Kernel panic - not syncing: Attempted to kill init!\r\n\r\n")
            .unwrap();
        assert!(t.buf.lock().unwrap().len() <= KEEP);
        let last = t.last_lines(2);
        assert_eq!(last[0], "line 4999");
        assert_eq!(
            last[1],
            "Kernel panic - not syncing: Attempted to kill init!"
        );
        assert!(t.summary().contains("Attempted to kill init"));
    }

    #[test]
    fn an_empty_console_adds_nothing() {
        assert_eq!(ConsoleTail::default().summary(), "");
        let t = ConsoleTail::default();
        t.writer(Box::new(std::io::sink()))
            .write_all(&[0u8; 20000])
            .unwrap();
        assert_eq!(t.summary(), "");
    }
}
