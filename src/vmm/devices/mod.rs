//! Device models, one file each.

pub mod console_tail;
pub mod i8042;
pub mod serial;
pub mod virtio;
