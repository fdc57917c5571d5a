//! Threads with a small stack, for both sides.
//!
//! std's default stack is 2 MiB. With transparent huge pages set to
//! "always" (common on hosts), a stack mapping that happens to be 2 MiB
//! aligned is backed by one huge page at its first touch: 2 MiB resident
//! for a thread that uses a few KiB. A stack under 2 MiB can never hold a
//! huge page. Our threads copy streams, serve devices and wait on sockets,
//! with their buffers on the heap.

use std::thread::JoinHandle;

/// Ample for the deepest of them (a vCPU's exit handling, serde of a spec).
pub const STACK_SIZE: usize = 512 * 1024;

/// `std::thread::spawn` with [`STACK_SIZE`]; like it, panics only if the
/// system cannot create a thread at all.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    builder().spawn(f).expect("failed to spawn thread")
}

/// A builder with [`STACK_SIZE`], for threads that are named or whose
/// creation failure is handled.
pub fn builder() -> std::thread::Builder {
    std::thread::Builder::new().stack_size(STACK_SIZE)
}
