#!/usr/bin/env bash
# Benchmark: each output of stagebox against its floor, the least work any composer must do
# for it on the same input (benches/make-image.sh; SCALE=4 for the image four times larger),
# in the same run:
#   1. decompress every layer once, to nothing, one layer per core at a time;
#   2. write the output's size once to a new file (dd from /dev/zero);
#   3. for compressed outputs, compress the uncompressed stream once with the same codec,
#      level and threads, reading it from the page cache, to nothing.
# 1 and 3 run in benches/floor_helper.rs with the codec crates stagebox links (flate2 on
# zlib-rs, libzstd multithreaded): gzip in one equal slice per core, zlib per 128 KiB
# SquashFS block, zstd with one worker per core; lz4 and lzma, which that helper does not
# carry, with the lz4 and xz tools on one slice per core. The floor is the sum of the three
# (1 and 2 with a cold page cache, like stagebox).
# The uncompressed stream is the output's own uncompressed form (the .cpio for initramfs and
# the ISO's initramfs, the .tar for SquashFS and EROFS, whose data is the files' bytes).
# Prints, per format: stagebox time, floor time, ratio, stagebox peak RSS, output size and
# stagebox seconds per GiB of flattened rootfs; median of RUNS for each; and the seconds of
# SHA-256 (one thread) over the layer blobs, their uncompressed streams and the output, which
# a verified build must hash and the floor does not count; and stagebox's system CPU seconds
# (median), where a VM's cost of new memory shows (docs/benchmarks.md). With TIMINGS=1, also
# the STAGEBOX_TIMINGS phase breakdown of the last stagebox run of each format.
# Usage: benches/floor.sh [RUNS] [LAYOUT DIGEST]
# FORMATS (env) picks formats, default "tar cpio.zst cpio.gz iso squashfs erofs erofs-lz4
# erofs-lz4hc" (erofs-lzma is also known; slow).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for t in lz4 xz split dd xargs python3 umoci dpkg-deb /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/install-test-deps.sh (and apt-get install time lz4)" >&2; exit 1; }
done
. benches/lib.sh
bench_setup "${@:2}"
cargo build --release --locked --quiet --example floor
FLOOR=$PWD/target/release/examples/floor
N=$(nproc)
FORMATS=${FORMATS:-tar cpio.zst cpio.gz iso squashfs erofs erofs-lz4 erofs-lz4hc}
[[ " $FORMATS " == *" iso "* ]] && bench_boot_setup

# The image's layer blobs, bottom first.
python3 - "$IMAGE" "$DIGEST" > "$WORK/layers" <<'PY'
import json, os, sys
d, dg = sys.argv[1], sys.argv[2]
blob = lambda x: os.path.join(d, "blobs", *x.split(":"))
m = json.load(open(blob(dg)))
print("\n".join(blob(l["digest"]) for l in m["layers"]))
PY

# box FORMAT: the box file measuring FORMAT, and the output file it makes.
box() {
  local out
  case $1 in
    tar) out="[output.tar]" ;;
    cpio.zst) out=$'[output.initramfs]\ncompression = "zstd"' ;;
    cpio.gz) out=$'[output.initramfs]\ncompression = "gzip"' ;;
    squashfs) out="[output.squashfs]" ;;
    erofs) out="[output.erofs]" ;;
    erofs-*) out=$'[output.erofs]\ncompression = "'"${1#erofs-}"'"' ;;
  esac
  if [ "$1" = iso ]; then
    # What a user gets by default: syslinux (BIOS) + GRUB (UEFI), the gzip initramfs of the
    # whole image, no tree files.
    iso_box bench grub-debian.toml "" > "$WORK/iso.toml"
  else
    printf 'name = "bench"\nversion = "1"\n[[layer]]\nimage = "oci:%s@%s"\n%s\n' "$IMAGE" "$DIGEST" "$out" > "$WORK/$1.toml"
  fi
  case $1 in
    erofs*) echo "$WORK/out/bench.erofs" ;;
    *) echo "$WORK/out/bench.$1" ;;
  esac
}

# compressor FORMAT: the command compressing the file named by its last argument as the
# output does ("" = none); "slices:" commands run on one slice of it per core.
compressor() {
  case $1 in
    cpio.zst) echo "$FLOOR zstd $N 3" ;;                 # emit::compress: zstd level 3, all workers
    cpio.gz|iso) echo "$FLOOR gzip $N 6" ;;            # gzip level 6, one slice per core
    squashfs) echo "$FLOOR zlib-blocks $N 6 131072" ;; # libdeflate level 6 per 128 KiB block
    erofs-lz4) echo "slices:lz4 -q -1" ;;
    erofs-lz4hc) echo "slices:lz4 -q -9" ;;
    erofs-lzma) echo "slices:xz -q --format=lzma -6" ;;
    *) echo "" ;;
  esac
}

# stream FORMAT OUTPUT: the uncompressed stream of OUTPUT into $WORK/stream.
stream() {
  case $1 in
    cpio.zst) zstd -dc "$2" > "$WORK/stream" ;;
    cpio.gz) gzip -dc "$2" > "$WORK/stream" ;;
    iso)
      printf 'name = "bench"\nversion = "1"\n[[layer]]\nimage = "oci:%s@%s"\n[output.initramfs]\ncompression = "none"\n' "$IMAGE" "$DIGEST" > "$WORK/stream.toml"
      rm -rf "$WORK/stream-out"
      "$BIN" build "$WORK/stream.toml" --out "$WORK/stream-out" --cache "$WORK/cache" -q > /dev/null
      mv "$WORK/stream-out/bench.cpio" "$WORK/stream" ;;
    squashfs|erofs-*)
      printf 'name = "bench"\nversion = "1"\n[[layer]]\nimage = "oci:%s@%s"\n[output.tar]\n' "$IMAGE" "$DIGEST" > "$WORK/stream.toml"
      rm -rf "$WORK/stream-out"
      "$BIN" build "$WORK/stream.toml" --out "$WORK/stream-out" --cache "$WORK/cache" -q > /dev/null
      mv "$WORK/stream-out/bench.tar" "$WORK/stream" ;;
  esac
}

# The flattened rootfs size, for seconds per GiB.
printf 'name = "bench"\nversion = "1"\n[[layer]]\nimage = "oci:%s@%s"\n[output.tar]\n' "$IMAGE" "$DIGEST" > "$WORK/size.toml"
"$BIN" build "$WORK/size.toml" --out "$WORK/size-out" --cache "$WORK/cache" -q > /dev/null
ROOTFS=$(stat -c %s "$WORK/size-out/bench.tar"); rm -rf "$WORK/size-out" "$WORK/cache"

echo "image: $IMAGE ($((ROOTFS / 1048576)) MiB flattened), $N cores, $RUNS runs, median; load average: $(cut -d' ' -f1-3 /proc/loadavg); $(page_reporting)"
printf '%-12s %10s %10s %7s %10s %10s %9s %9s %9s\n' format stagebox floor ratio "RSS MiB" "size MiB" "s/GiB" "sha256" "system"
for fmt in $FORMATS; do
  out=$(box "$fmt")
  comp=$(compressor "$fmt")
  TS=""; MS=""; TF=""; SS=""
  for i in $(seq "$RUNS"); do
    rm -rf "$WORK/cache" "$WORK/out"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    STAGEBOX_TIMINGS=1 /usr/bin/time -f "%e %M %S" -o "$WORK/time.s" "$BIN" build "$WORK/$fmt.toml" --out "$WORK/out" --cache "$WORK/cache" -q > /dev/null 2> "$WORK/timings.$fmt" || { cat "$WORK/timings.$fmt" >&2; exit 1; }
    read -r t m sy < "$WORK/time.s"
    TS+="$t "; MS+="$m "; SS+="$sy "
    size=$(stat -c %s "$out")
    # 1. every layer decompressed once, all cores.
    read -r d _ < <(measure d "$FLOOR" inflate "$N" $(cat "$WORK/layers"))
    # 2. the output's size written once to a new file.
    rm -f "$WORK/floor.out"
    read -r w _ < <(measure w dd if=/dev/zero of="$WORK/floor.out" bs=1M count=$(( (size + 1048575) / 1048576 )) status=none)
    rm -f "$WORK/floor.out"
    # 3. the uncompressed stream compressed once (warm page cache).
    c=0
    if [ -n "$comp" ]; then
      stream "$fmt" "$out"
      cat "$WORK/stream" > /dev/null
      if [[ $comp == slices:* ]]; then
        rm -f "$WORK"/slice.*
        split -n "$N" "$WORK/stream" "$WORK/slice."
        cat "$WORK"/slice.* > /dev/null
        /usr/bin/time -f "%e" -o "$WORK/time.c" bash -c "ls '$WORK'/slice.* | xargs -P $N -n1 sh -c '${comp#slices:} < \"\$0\" > /dev/null'"
        rm -f "$WORK"/slice.*
      else
        /usr/bin/time -f "%e" -o "$WORK/time.c" $comp "$WORK/stream"
      fi
      c=$(cat "$WORK/time.c")
      rm -f "$WORK/stream"
    fi
    TF+="$(awk -v a="$d" -v b="$w" -v c="$c" 'BEGIN { printf "%.2f", a + b + c }') "
  done
  st=$(median $TS); sm=$(median $MS); ft=$(median $TF); ss=$(median $SS)
  # The SHA-256 a verified build must do and the floor does not count (one thread).
  hs=$("$FLOOR" hash "$out" $(cat "$WORK/layers"))
  printf '%-12s %9ss %9ss %7s %10s %10s %9s %8ss %8ss\n' "$fmt" "$st" "$ft" "$(awk -v a="$st" -v b="$ft" 'BEGIN { printf "%.2f", a / b }')" "$((sm / 1024))" "$((size / 1048576))" \
    "$(awk -v a="$st" -v b="$ROOTFS" 'BEGIN { printf "%.2f", a / (b / 1073741824) }')" "$hs" "$ss"
  if [ "${TIMINGS:-0}" = 1 ]; then
    sed 's/^/    /' "$WORK/timings.$fmt"
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
