#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs the tools the tests use as
# independent readers (umoci, skopeo, bsdtar, cpio, QEMU, ...), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --locked --no-fail-fast "$@"
