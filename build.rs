// Embeds the git commit in `microrun --version`, and links the functions a
// monitor runs side by side (scripts/hot-functions.txt, see
// scripts/hot-functions.sh): fewer of the binary's code pages are mapped
// in each monitor.
fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MICRORUN_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");

    // Release builds for this target link with rustc's own lld (its
    // default linker), which takes both flags.
    let release_lld = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu")
        && std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if !release_lld {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36): the static-pie
    // start-up reads 260 KiB of them otherwise, all kept resident.
    println!("cargo:rustc-link-arg-bin=microrun=-Wl,-z,pack-relative-relocs");
    // Names the binary no longer has are skipped quietly.
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bin=microrun=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=microrun=-Wl,--no-warn-symbol-ordering");
    }
}
