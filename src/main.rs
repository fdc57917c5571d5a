fn main() {
    std::process::exit(microrun::cli::main(microrun::vmm::factory));
}
