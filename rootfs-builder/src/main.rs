//! rootfs-builder AGENT OUT: writes the guest initramfs (cpio newc).

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: rootfs-builder AGENT_BINARY OUT_INITRAMFS");
        std::process::exit(2);
    }
    let out = PathBuf::from(&args[2]);
    let image = match rootfs_builder::build(PathBuf::from(&args[1]).as_path()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("rootfs-builder: {e}");
            std::process::exit(1);
        }
    };
    let tmp = out.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, &image).and_then(|_| std::fs::rename(&tmp, &out)) {
        eprintln!("rootfs-builder: write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("initramfs: {} ({} bytes)", out.display(), image.len());
}
