#!/usr/bin/env bash
# Benchmark: stagebox → SquashFS versus the firmware pipeline people run today,
# `umoci unpack --rootless` then `mksquashfs` (same compression, 128 KiB blocks, no
# fragments, reproducible: -all-root is not used, owners come from the image; -mkfs-time and
# -all-time pin the dates), on the same ~35-package image (benches/make-image.sh), in one run.
# Prints wall time, peak RSS and image size of each and the ratio.
# Usage: benches/squashfs.sh [RUNS] [COMPRESSION] [LAYOUT DIGEST]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
COMP=${2:-gzip}
for t in umoci mksquashfs /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/install-test-deps.sh (and apt-get install time)" >&2; exit 1; }
done
. benches/lib.sh
bench_setup "${@:3}"
cat > "$WORK/box.toml" <<BOX
name = "bench"
version = "1"
[[layer]]
image = "oci:$IMAGE@$DIGEST"
[output.squashfs]
compression = "$COMP"
BOX
baseline="umoci unpack --rootless --image '$IMAGE:$TAG' '$WORK/bundle' >/dev/null &&
  mksquashfs '$WORK/bundle/rootfs' '$WORK/base.squashfs' -comp $COMP -b 131072 -no-fragments \
    -mkfs-time 1 -all-time 1 -no-progress -quiet -processors $(nproc) >/dev/null"
echo "image: $IMAGE, $(nproc) cores, $RUNS runs, median, compression $COMP"
TS=""; MS=""; TB=""; MB=""
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/cache" "$WORK/out"
  read -r t m < <(measure s "$BIN" build "$WORK/box.toml" --out "$WORK/out" --cache "$WORK/cache" -q)
  TS+="$t "; MS+="$m "
  rm -rf "$WORK/bundle" "$WORK/base.squashfs"
  read -r t m < <(measure b bash -c "$baseline")
  TB+="$t "; MB+="$m "
done
st=$(median $TS); sm=$(median $MS); bt=$(median $TB); bm=$(median $MB)
printf '%-52s %8s s  %6s MiB  %6s MiB image\n' "stagebox build → .squashfs (cold store)" "$st" "$((sm / 1024))" "$(( $(stat -c %s "$WORK/out/bench.squashfs") / 1048576 ))"
printf '%-52s %8s s  %6s MiB  %6s MiB image\n' "umoci unpack + mksquashfs -no-fragments" "$bt" "$((bm / 1024))" "$(( $(stat -c %s "$WORK/base.squashfs") / 1048576 ))"
awk -v a="$st" -v b="$bt" 'BEGIN { printf "ratio stagebox/baseline: %.3f\n", a / b }'
