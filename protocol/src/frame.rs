//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//! The decoder never buffers more than one frame's bound.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Largest frame either side accepts (stdio travels on separate streams).
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Incremental decoder: feed bytes as they arrive, take whole messages out.
/// After an oversized frame the stream cannot be resynchronised: the
/// decoder drops what it holds and reports that error from then on.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    broken: Option<FrameError>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.broken.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held for the next message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, None if more bytes are needed.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            self.buf = Vec::new();
            self.broken = Some(FrameError::TooLarge(len));
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&self.buf[4..4 + len])
            .map_err(|e| FrameError::Malformed(e.to_string()));
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hello;

    #[test]
    fn roundtrip_in_pieces() {
        let h = Hello {
            protocol: 1,
            agent: "x".into(),
        };
        let bytes = encode(&h).unwrap();
        let mut d = Decoder::new();
        for b in &bytes[..bytes.len() - 1] {
            d.feed(&[*b]);
            assert_eq!(d.next_message::<Hello>().unwrap(), None);
        }
        d.feed(&bytes[bytes.len() - 1..]);
        assert_eq!(d.next_message::<Hello>().unwrap(), Some(h));
    }

    #[test]
    fn hostile_frames_are_errors() {
        let mut d = Decoder::new();
        d.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(
            d.next_message::<Hello>(),
            Err(FrameError::TooLarge(_))
        ));
        // Nothing more is buffered once the stream is known to be broken.
        d.feed(&[0u8; 4096]);
        assert_eq!(d.buffered(), 0);
        assert!(d.next_message::<Hello>().is_err());
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 2, b'{', b'x']);
        assert!(matches!(
            d.next_message::<Hello>(),
            Err(FrameError::Malformed(_))
        ));
    }
}
