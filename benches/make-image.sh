#!/usr/bin/env bash
# Build the benchmark input: an OCI image layout of 35 Debian 12 packages, one package a
# layer like a StageX pallet (~620 MB and ~11k files flattened, ~200 MB of gzip layers).
# Made with Debian's own tools (apt-get download, dpkg-deb, umoci), cached under
# target/bench-cache/. Prints the layout path and the manifest digest.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${BENCH_CACHE:-$PWD/target/bench-cache}
PKGS=(libc6 libc6-dev linux-libc-dev libgcc-12-dev gcc-12 cpp-12 g++-12 libstdc++-12-dev
      binutils-x86-64-linux-gnu libbinutils libperl5.36 perl-modules-5.36 perl-base
      python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libicu72 coreutils bash
      util-linux git git-man vim-runtime openssl libssl3 libllvm14 libgl1-mesa-dri locales
      tzdata libasan8 libtsan2 liblsan0 libubsan1 libgfortran5 busybox-static)
IMAGE=$CACHE/image
if [ -f "$IMAGE/.complete" ]; then
  echo "$IMAGE $(cat "$IMAGE/.complete")"
  exit 0
fi
command -v umoci >/dev/null || { echo "umoci missing: run scripts/install-test-deps.sh" >&2; exit 1; }
mkdir -p "$CACHE/debs" "$CACHE/layers"
(
  cd "$CACHE/debs"
  need=()
  for p in "${PKGS[@]}"; do ls "${p}"_*.deb >/dev/null 2>&1 || need+=("$p"); done
  if ((${#need[@]})); then
    apt-get download "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq; apt-get download "${need[@]}" >/dev/null; }
  fi
)
rm -rf "$IMAGE"
umoci init --layout "$IMAGE"
umoci new --image "$IMAGE:bench"
for p in "${PKGS[@]}"; do
  deb=$(ls "$CACHE/debs/${p}"_*.deb | head -1)
  dpkg-deb --fsys-tarfile "$deb" > "$CACHE/layers/$p.tar"
  umoci raw add-layer --image "$IMAGE:bench" "$CACHE/layers/$p.tar"
  rm "$CACHE/layers/$p.tar"
done
digest=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['manifests'][0]['digest'])" "$IMAGE/index.json")
echo "$digest" > "$IMAGE/.complete"
echo "$IMAGE $digest"
