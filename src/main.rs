fn main() {
    // One malloc arena for every thread: glibc gives each thread that
    // allocates an arena of its own (about ten in a monitor: vCPUs, device
    // threads, relays), each keeping tens of KiB resident for a few small
    // allocations. The threads seldom allocate at the same time.
    // SAFETY: mallopt only sets a malloc tunable; no other thread exists yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    std::process::exit(microrun::cli::main(microrun::vmm::factory));
}
