#!/usr/bin/env bash
# Benchmark: pulling an image from a registry on loopback into a fresh local store, stagebox
# (`stagebox inspect`, which fetches and verifies every blob, 4 at once) versus
# `skopeo copy docker://… oci:…`. The image is benches/make-image.sh's 35-package layout,
# pushed once into Debian's `docker-registry` on 127.0.0.1 (plain HTTP, named insecure for
# both tools). Usage: benches/pull.sh [RUNS] [LAYOUT DIGEST]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for t in skopeo docker-registry python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/install-test-deps.sh (and apt-get install time)" >&2; exit 1; }
done
. benches/lib.sh
bench_setup "${@:2}"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 &
REG=$!
trap 'kill $REG 2>/dev/null; wait $REG 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$IMAGE:$TAG" "docker://127.0.0.1:$PORT/bench/pallet:bench"
REF="127.0.0.1:$PORT/bench/pallet@$DIGEST"

ours=(); theirs=(); ours_rss=(); theirs_rss=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/store" "$WORK/skopeo"
  read -r s m < <(measure ours "$BIN" inspect --cache "$WORK/store" --insecure-registry "127.0.0.1:$PORT" "$REF")
  ours+=("$s"); ours_rss+=("$m")
  read -r s m < <(measure theirs skopeo copy --quiet --src-tls-verify=false "docker://$REF" "oci:$WORK/skopeo:bench")
  theirs+=("$s"); theirs_rss+=("$m")
  echo "run $i: stagebox ${ours[-1]} s, skopeo ${theirs[-1]} s" >&2
done
o=$(median "${ours[@]}"); t=$(median "${theirs[@]}")
printf 'pull (median of %s): stagebox %s s, skopeo copy %s s, ratio %.3f; peak RSS %s KiB vs %s KiB\n' \
  "$RUNS" "$o" "$t" "$(python3 -c "print($o/$t)")" "$(median "${ours_rss[@]}")" "$(median "${theirs_rss[@]}")"
