#!/usr/bin/env bash
# Build the benchmark input: an OCI image layout of 35 Debian 12 packages, one package a
# layer like a StageX pallet (~620 MB and ~11k files flattened, ~200 MB of gzip layers).
# Made with Debian's own tools (apt-get download, dpkg-deb, umoci), cached under
# target/bench-cache/. Prints the layout path and the manifest digest.
# SCALE=K (default 1) makes an image K times larger: the same package layers again, K-1
# more times, each copy's paths under /copyN/ (hardlink targets too), in further layers.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${BENCH_CACHE:-$PWD/target/bench-cache}
PKGS=(libc6 libc6-dev linux-libc-dev libgcc-12-dev gcc-12 cpp-12 g++-12 libstdc++-12-dev
      binutils-x86-64-linux-gnu libbinutils libperl5.36 perl-modules-5.36 perl-base
      python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libicu72 coreutils bash
      util-linux git git-man vim-runtime openssl libssl3 libllvm14 libgl1-mesa-dri locales
      tzdata libasan8 libtsan2 liblsan0 libubsan1 libgfortran5 busybox-static)
SCALE=${SCALE:-1}
IMAGE=$CACHE/image
[ "$SCALE" = 1 ] || IMAGE=$CACHE/image-x$SCALE
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
for k in $(seq 2 "$SCALE"); do
  for p in "${PKGS[@]}"; do
    deb=$(ls "$CACHE/debs/${p}"_*.deb | head -1)
    dpkg-deb --fsys-tarfile "$deb" | python3 -c '
import sys, tarfile
pre = sys.argv[1] + "/"
src = tarfile.open(fileobj=sys.stdin.buffer, mode="r|")
dst = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT)
for m in src:
    name = m.name[2:] if m.name.startswith("./") else m.name
    m.name = pre + name if name not in ("", ".") else pre.rstrip("/")
    if m.islnk():
        t = m.linkname[2:] if m.linkname.startswith("./") else m.linkname
        m.linkname = pre + t
    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
dst.close()
' "copy$k" > "$CACHE/layers/$p.tar"
    umoci raw add-layer --image "$IMAGE:bench" "$CACHE/layers/$p.tar"
    rm "$CACHE/layers/$p.tar"
  done
done
digest=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['manifests'][0]['digest'])" "$IMAGE/index.json")
echo "$digest" > "$IMAGE/.complete"
echo "$IMAGE $digest"
