#!/usr/bin/env bash
# Benchmark: each output of stagebox against its floor, the least work any composer must do
# for it on the same input (benches/make-image.sh), in the same run:
#   1. decompress every layer once, to /dev/null, one layer per core at a time;
#   2. write the output's size once to a new file (dd from /dev/zero);
#   3. for compressed outputs, compress the uncompressed stream once with the same codec,
#      level and threads (zstd -T; gzip and lz4, which have no threads, on one equal slice of
#      the stream per core), reading it from the page cache, to /dev/null.
# The floor is the sum of the three (1 and 2 with a cold page cache, like stagebox).
# The uncompressed stream is the output's own uncompressed form (the .cpio for initramfs,
# the .tar for SquashFS and EROFS, whose data is the files' bytes).
# Prints, per format: stagebox time, floor time, ratio, stagebox peak RSS, output size;
# median of RUNS for each. Usage: benches/floor.sh [RUNS] [LAYOUT DIGEST]
# FORMATS (env) picks formats, default "tar cpio.zst cpio.gz squashfs erofs erofs-lz4
# erofs-lz4hc" (erofs-lzma is also known; slow).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for t in gzip zstd lz4 split dd xargs python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/install-test-deps.sh (and apt-get install time lz4)" >&2; exit 1; }
done
. benches/lib.sh
bench_setup "${@:2}"
N=$(nproc)
FORMATS=${FORMATS:-tar cpio.zst cpio.gz squashfs erofs erofs-lz4 erofs-lz4hc}

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
  printf 'name = "bench"\nversion = "1"\n[[layer]]\nimage = "oci:%s@%s"\n%s\n' "$IMAGE" "$DIGEST" "$out" > "$WORK/$1.toml"
  case $1 in
    erofs*) echo "$WORK/out/bench.erofs" ;;
    *) echo "$WORK/out/bench.$1" ;;
  esac
}

# compressor FORMAT: the command compressing stdin to stdout as the output does ("" = none).
compressor() {
  case $1 in
    cpio.zst) echo "zstd -q -3 -T$N" ;;       # emit::compress: zstd level 3, all workers
    cpio.gz) echo "gzip -6 -n" ;;              # 1 MiB gzip members at level 6
    squashfs) echo "gzip -9 -n" ;;             # zlib level 9 per 128 KiB block
    erofs-lz4) echo "lz4 -q -1" ;;
    erofs-lz4hc) echo "lz4 -q -9" ;;
    erofs-lzma) echo "xz -q --format=lzma -6" ;;
    *) echo "" ;;
  esac
}

# stream FORMAT OUTPUT: the uncompressed stream of OUTPUT into $WORK/stream.
stream() {
  case $1 in
    cpio.zst) zstd -dc "$2" > "$WORK/stream" ;;
    cpio.gz) gzip -dc "$2" > "$WORK/stream" ;;
    squashfs|erofs-*)
      printf 'name = "bench"\nversion = "1"\n[[layer]]\nimage = "oci:%s@%s"\n[output.tar]\n' "$IMAGE" "$DIGEST" > "$WORK/stream.toml"
      rm -rf "$WORK/stream-out"
      "$BIN" build "$WORK/stream.toml" --out "$WORK/stream-out" --cache "$WORK/cache" -q > /dev/null
      mv "$WORK/stream-out/bench.tar" "$WORK/stream" ;;
  esac
}

echo "image: $IMAGE, $N cores, $RUNS runs, median; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-12s %10s %10s %7s %10s %10s\n' format stagebox floor ratio "RSS MiB" "size MiB"
for fmt in $FORMATS; do
  out=$(box "$fmt")
  comp=$(compressor "$fmt")
  TS=""; MS=""; TF=""
  for i in $(seq "$RUNS"); do
    rm -rf "$WORK/cache" "$WORK/out"
    read -r t m < <(measure s "$BIN" build "$WORK/$fmt.toml" --out "$WORK/out" --cache "$WORK/cache" -q)
    TS+="$t "; MS+="$m "
    size=$(stat -c %s "$out")
    # 1. every layer decompressed once, all cores.
    read -r d _ < <(measure d bash -c "xargs -P $N -n1 sh -c 'gzip -dc \"\$0\" > /dev/null' < '$WORK/layers'")
    # 2. the output's size written once to a new file.
    rm -f "$WORK/floor.out"
    read -r w _ < <(measure w dd if=/dev/zero of="$WORK/floor.out" bs=1M count=$(( (size + 1048575) / 1048576 )) status=none)
    rm -f "$WORK/floor.out"
    # 3. the uncompressed stream compressed once (warm page cache).
    c=0
    if [ -n "$comp" ]; then
      stream "$fmt" "$out"
      if [[ $comp == zstd* ]]; then
        cat "$WORK/stream" > /dev/null
        /usr/bin/time -f "%e" -o "$WORK/time.c" bash -c "$comp < '$WORK/stream' > /dev/null"
      else
        rm -f "$WORK"/slice.*
        split -n "$N" "$WORK/stream" "$WORK/slice."
        cat "$WORK"/slice.* > /dev/null
        /usr/bin/time -f "%e" -o "$WORK/time.c" bash -c "ls '$WORK'/slice.* | xargs -P $N -n1 sh -c '$comp < \"\$0\" > /dev/null'"
        rm -f "$WORK"/slice.*
      fi
      c=$(cat "$WORK/time.c")
      rm -f "$WORK/stream"
    fi
    TF+="$(awk -v a="$d" -v b="$w" -v c="$c" 'BEGIN { printf "%.2f", a + b + c }') "
  done
  st=$(median $TS); sm=$(median $MS); ft=$(median $TF)
  printf '%-12s %9ss %9ss %7s %10s %10s\n' "$fmt" "$st" "$ft" "$(awk -v a="$st" -v b="$ft" 'BEGIN { printf "%.2f", a / b }')" "$((sm / 1024))" "$((size / 1048576))"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
