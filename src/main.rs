fn main() {
    // One malloc arena for every thread: glibc gives each thread that
    // allocates an arena of its own (about ten in a monitor: vCPUs, device
    // threads, relays), each keeping tens of KiB resident for a few small
    // allocations. The threads seldom allocate at the same time.
    // Fixed thresholds: by default glibc raises the mmap threshold to the
    // size of each large block freed (up to 32 MiB) and the trim threshold
    // to twice that, so after one big transient buffer every later one
    // comes from the heap and the heap is never given back.
    // SAFETY: mallopt only sets malloc tunables; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
    std::process::exit(microrun::cli::main(microrun::vmm::factory));
}
