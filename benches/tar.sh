#!/usr/bin/env bash
# Benchmark: stagebox → .tar versus what users run today, `umoci unpack --rootless` followed
# by `tar --sort=name`, on the same ~35-package image (benches/make-image.sh), in one run.
# Prints wall time and peak RSS of each, and the ratio. Usage: benches/tar.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for t in umoci /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: apt-get install umoci time" >&2; exit 1; }
done
. benches/lib.sh
bench_setup
cat > "$WORK/box.toml" <<BOX
name = "bench"
version = "1"
[[layer]]
image = "oci:$IMAGE@$DIGEST"
[output.tar]
BOX


echo "image: $IMAGE ($(du -sh "$IMAGE" | cut -f1) of layers), $(nproc) cores, $RUNS runs, median"
s_times=(); s_rss=(); b_times=(); b_rss=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/cache" "$WORK/out" "$WORK/bundle" "$WORK/base.tar"
  read -r t m < <(measure stagebox "$BIN" build "$WORK/box.toml" --out "$WORK/out" --cache "$WORK/cache" -q)
  s_times+=("$t"); s_rss+=("$m")
  read -r t m < <(measure baseline bash -c "umoci unpack --rootless --image '$IMAGE:bench' '$WORK/bundle' && tar --sort=name -cf '$WORK/base.tar' -C '$WORK/bundle/rootfs' ." )
  b_times+=("$t"); b_rss+=("$m")
done
st=$(median "${s_times[@]}"); sm=$(median "${s_rss[@]}")
bt=$(median "${b_times[@]}"); bm=$(median "${b_rss[@]}")
files=$(tar -tf "$WORK/out/bench.tar" | wc -l)
size=$(stat -c %s "$WORK/out/bench.tar")
echo "entries in output: $files, tar size: $((size / 1048576)) MiB"
printf '%-44s %8s s  %8s MiB\n' "stagebox build → .tar (cold store)" "$st" "$((sm / 1024))"
printf '%-44s %8s s  %8s MiB\n' "umoci unpack --rootless + tar --sort=name" "$bt" "$((bm / 1024))"
awk -v a="$st" -v b="$bt" 'BEGIN { printf "ratio stagebox/baseline: %.3f (target <= 0.35)\n", a / b }'
