# Shared by the benchmark scripts: source it, then call bench_setup.

# bench_setup [LAYOUT DIGEST]: the image to measure (the given OCI layout and manifest
# digest, else the one benches/make-image.sh builds) in IMAGE, DIGEST and TAG (its ref name
# in the layout, for umoci); the release binary in BIN; a scratch directory in WORK, removed
# on exit.
bench_setup() {
  if [ $# -ge 2 ]; then
    IMAGE=$(realpath "$1"); DIGEST=$2
  else
    read -r IMAGE DIGEST < <(benches/make-image.sh | tail -1)
  fi
  TAG=$(python3 -c "import json,sys; m=[x for x in json.load(open(sys.argv[1]))['manifests'] if x['digest']==sys.argv[2]]; print(m[0].get('annotations',{}).get('org.opencontainers.image.ref.name',''))" "$IMAGE/index.json" "$DIGEST")
  cargo build --release --locked --quiet
  BIN=$PWD/target/release/stagebox
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/stagebox-bench.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
}

# measure LABEL COMMAND...: run COMMAND with a cold page cache; print "seconds maxrss_kb".
measure() {
  local label=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "%e %M" -o "$WORK/time.$label" "$@" >/dev/null 2>"$WORK/err.$label" || { cat "$WORK/err.$label" >&2; exit 1; }
  cat "$WORK/time.$label"
}

# median NUMBERS...: the median (the lower middle one for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
