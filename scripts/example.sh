#!/usr/bin/env bash
# Build the offline example: an OCI image from repository files (examples/hello/base.toml),
# then a box on top of it, pinned by digest (examples/hello/box.toml). No network needed
# beyond the crates cargo fetches on a first build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
./target/release/stagebox build examples/hello/base.toml
./target/release/stagebox build examples/hello/box.toml
echo "outputs and their sha256 are in examples/hello/out/manifest.json"
