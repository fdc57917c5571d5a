# microrun — build, test and run. Every install step lives here or in
# scripts/: nothing installed by hand is needed.
SHELL := /bin/bash
PREFIX ?= /usr/local
BUILD := build
# Both binaries are static-pie glibc builds (no musl target here): one file
# to install, and the monitor maps no shared libraries (VMM memory overhead).
TARGET := x86_64-unknown-linux-gnu
STATIC := RUSTFLAGS='-C target-feature=+crt-static'
AGENT := target/$(TARGET)/release/microrun-agent
MICRORUN := target/$(TARGET)/release/microrun
export CARGO_TERM_COLOR ?= never

.PHONY: all build deps agent initramfs kernel test unit fuzz budgets e2e e2e-shell soak conformance demo bench install clean fmt clippy hot-functions

all: build

deps:
	bash scripts/host-deps.sh

build: deps
	$(STATIC) cargo build --release --bin microrun --target $(TARGET)
	$(MAKE) initramfs

agent:
	$(STATIC) LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
	  cargo build --release -p microrun-agent --target $(TARGET)

initramfs: agent
	@mkdir -p $(BUILD)
	cargo run -q --release -p rootfs-builder -- $(AGENT) $(BUILD)/initramfs.cpio

# vmlinux from Debian's linux-source-6.12 + kernel-config/, cached by input hash.
kernel: deps initramfs
	bash kernel-config/build.sh $(BUILD)

# The README's test command: unit + integration tests, then the full-stack
# suite in the emulated test host.
test: unit fuzz budgets e2e

unit: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --features test-double -- -D warnings
	cargo test --workspace --features test-double

# The protocol decoder under libFuzzer (stable toolchain: no sanitizer).
FUZZ_SECONDS ?= 30
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd fuzz && cargo fuzz run --sanitizer none protocol_decoder -- -max_total_time=$(FUZZ_SECONDS)

# Binary and initramfs sizes against their budgets (scripts/budgets.sh).
budgets: build
	bash scripts/budgets.sh

e2e: build kernel
	bash tests/e2e/run.sh

# The OCI conformance suite alone, runc and microrun side by side, in the
# test host (make e2e runs it too, as the scenario `conformance`).
conformance: build kernel
	E2E_ONLY='^conformance$$' bash tests/e2e/run.sh

# SOAK_VMS microVMs (500) one after another in the test host: how they end
# (guest resets and failures per 1000, hosts lost) and what they leave.
soak: build kernel
	bash tests/e2e/soak.sh

e2e-shell: deps build kernel
	bash tests/e2e/stage.sh $(BUILD)/share
	bash tests/e2e/testhost up $(BUILD)/share
	bash tests/e2e/testhost shell

demo: deps build kernel
	bash scripts/demo.sh

bench: deps build kernel
	bash scripts/bench.sh

# Rewrites scripts/hot-functions.txt, the functions the link packs together
# (build.rs), from a container workload in the emulated test host.
hot-functions: deps build kernel
	bash scripts/hot-functions.sh

install: build kernel
	install -D -m 0755 $(MICRORUN) $(DESTDIR)$(PREFIX)/bin/microrun
	install -D -m 0644 $(BUILD)/vmlinux $(DESTDIR)$(PREFIX)/share/microrun/vmlinux
	install -D -m 0644 $(BUILD)/initramfs.cpio $(DESTDIR)$(PREFIX)/share/microrun/initramfs.cpio

clean:
	-bash tests/e2e/testhost down
	cargo clean
	rm -rf $(BUILD)
