#!/usr/bin/env bash
# Benchmark: stagebox → initramfs versus what AirgapOS/EnclaveOS-style builds run today,
# `umoci unpack --rootless` then `find | sort | cpio -o -H newc --reproducible | COMPRESSOR`,
# on the same ~35-package image (benches/make-image.sh), in one run: .cpio.zst against
# `zstd -T0 -3` and .cpio.gz against `gzip -n -6`. Prints wall time and peak RSS of each and
# the ratios. Usage: benches/initramfs.sh [RUNS] [LAYOUT DIGEST]
# (default: the image benches/make-image.sh builds).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for t in umoci cpio zstd gzip /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/install-test-deps.sh (and apt-get install time)" >&2; exit 1; }
done
. benches/lib.sh
bench_setup "${@:2}"
for c in zstd gzip; do
  cat > "$WORK/$c.toml" <<BOX
name = "bench"
version = "1"
[[layer]]
image = "oci:$IMAGE@$DIGEST"
[output.initramfs]
compression = "$c"
BOX
done

baseline() { # compressor command: unpack, then the usual reproducible cpio pipeline
  echo "umoci unpack --rootless --image '$IMAGE:$TAG' '$WORK/bundle' >/dev/null &&
        cd '$WORK/bundle/rootfs' && find . -print0 | LC_ALL=C sort -z |
        cpio -o -0 -H newc --reproducible --quiet | $1 > '$WORK/base.cpio.out'"
}

echo "image: $IMAGE ($(du -sh "$IMAGE" | cut -f1) of layers), $(nproc) cores, $RUNS runs, median"
declare -A T M
for i in $(seq "$RUNS"); do
  for c in zstd gzip; do
    rm -rf "$WORK/cache" "$WORK/out"
    read -r t m < <(measure "s-$c" "$BIN" build "$WORK/$c.toml" --out "$WORK/out" --cache "$WORK/cache" -q)
    T[s-$c]+="$t "; M[s-$c]+="$m "
    rm -rf "$WORK/bundle" "$WORK/base.cpio.out"
    if [ $c = zstd ]; then comp="zstd -q -T0 -3"; else comp="gzip -n -6"; fi
    read -r t m < <(measure "b-$c" bash -c "$(baseline "$comp")")
    T[b-$c]+="$t "; M[b-$c]+="$m "
  done
done
raw=$(gzip -dc "$WORK/out/bench.cpio.gz" | wc -c)
echo "cpio: $((raw / 1048576)) MiB uncompressed; stagebox .cpio.gz $(( $(stat -c %s "$WORK/out/bench.cpio.gz") / 1048576)) MiB, baseline .cpio.gz $(( $(stat -c %s "$WORK/base.cpio.out") / 1048576)) MiB"
for c in zstd gzip; do
  st=$(median ${T[s-$c]}); sm=$(median ${M[s-$c]}); bt=$(median ${T[b-$c]}); bm=$(median ${M[b-$c]})
  if [ $c = zstd ]; then ext=.cpio.zst; base="zstd -T0 -3"; target=0.35; else ext=.cpio.gz; base="gzip -6"; target=0.25; fi
  printf '%-58s %8s s  %6s MiB\n' "stagebox build → $ext (cold store)" "$st" "$((sm / 1024))"
  printf '%-58s %8s s  %6s MiB\n' "umoci unpack + find|sort|cpio --reproducible|$base" "$bt" "$((bm / 1024))"
  awk -v a="$st" -v b="$bt" -v t="$target" -v e="$ext" 'BEGIN { printf "ratio %s stagebox/baseline: %.3f (target <= %s)\n", e, a / b, t }'
done
