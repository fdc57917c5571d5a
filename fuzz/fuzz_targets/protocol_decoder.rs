//! Feeds arbitrary bytes, in arbitrary pieces, to the frame decoder as both
//! sides decode them: it must never panic, never hold more than one frame's
//! bound, and re-encode whatever it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microrun_protocol::frame::{self, Decoder, MAX_FRAME};
use microrun_protocol::{Reply, Request};

fn drive<T: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) {
    let mut d = Decoder::new();
    // The first byte picks the chunk size, so splits vary too.
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for piece in data.chunks(chunk) {
        d.feed(piece);
        loop {
            match d.next_message::<T>() {
                Ok(Some(m)) => {
                    let again = frame::encode(&m).expect("accepted messages re-encode");
                    assert!(again.len() <= MAX_FRAME + 4);
                }
                Ok(None) | Err(_) => break,
            }
        }
        assert!(d.buffered() <= MAX_FRAME + 4 + piece.len());
    }
}

fuzz_target!(|data: &[u8]| {
    drive::<Request>(data);
    drive::<Reply>(data);
});
