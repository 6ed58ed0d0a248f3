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

# page_reporting: the guest kernel's free page reporting, which sets what writing to new
# memory costs on a VM (docs/benchmarks.md, "Scale, and what this VM charges for new memory").
# An order above the largest free block (10 on x86-64) reports nothing.
page_reporting() {
  local f=/sys/module/page_reporting/parameters/page_reporting_order
  if [ -r "$f" ]; then echo "free page reporting order $(cat "$f") (above 10: off)"; else echo "no free page reporting"; fi
}

# median NUMBERS...: the median (the lower middle one for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# bench_boot_setup: the boot inputs of a bootable box (after bench_setup): Debian's cloud
# kernel, isolinux, syslinux-common, systemd-boot-efi and grub-efi-amd64-bin, as packages
# unpacked under $P (for the baseline pipelines) and as OCI images in $B/oci ($KD: /bzImage;
# $BD: the packages' files) for stagebox; $KERNEL is the kernel file.
bench_boot_setup() {
  # The boot inputs, as packages (baseline) and as OCI images (stagebox).
  CACHE=${BENCH_CACHE:-$PWD/target/bench-cache}
  mkdir -p "$CACHE/boot-debs"
  (
    cd "$CACHE/boot-debs"
    for p in isolinux syslinux-common systemd-boot-efi grub-efi-amd64-bin linux-image-cloud-amd64; do
      ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1 || { apt-get update -qq; apt-get download "$p" >/dev/null; }
    done
    kver=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | tr ',' '\n' | grep -o 'linux-image-[^ ]*-cloud-amd64' | head -1)
    ls "${kver}"_*.deb >/dev/null 2>&1 || apt-get download "$kver" >/dev/null
  )
  B=$WORK/boot; mkdir -p "$B/pkgs"
  for d in "$CACHE"/boot-debs/*.deb; do dpkg-deb -x "$d" "$B/pkgs"; done
  KERNEL=$(ls "$B"/pkgs/boot/vmlinuz-*-cloud-amd64 | head -1)
  mkdir -p "$B/k"; cp "$KERNEL" "$B/k/bzImage"
  umoci init --layout "$B/oci" >/dev/null
  mk_image() { # TAG DIR: an image of DIR's files
    umoci new --image "$B/oci:$1" >/dev/null
    tar -C "$2" -cf "$B/$1.tar" .
    umoci raw add-layer --image "$B/oci:$1" "$B/$1.tar" >/dev/null
    python3 -c "import json,sys; print([m['digest'] for m in json.load(open(sys.argv[1]))['manifests'] if m['annotations']['org.opencontainers.image.ref.name']==sys.argv[2]][0])" "$B/oci/index.json" "$1"
  }
  KD=$(mk_image kernel "$B/k")
  BD=$(mk_image boot "$B/pkgs")
  P=$B/pkgs
}

# iso_box NAME UEFI_DEFINITION EXTRA: a box of the bench image as a hybrid ISO with syslinux
# (BIOS) and the given UEFI loader definition; EXTRA goes into [output.iso].
iso_box() {
  cat <<BOX
name = "$1"
version = "1"
[[layer]]
image = "oci:$IMAGE@$DIGEST"
[kernel]
image = "oci:$B/oci@$KD"
cmdline = "console=ttyS0 rdinit=/bin/busybox"
[output.iso]
bootloader = [
  { definition = "$PWD/kernels/syslinux-debian.toml", image = "oci:$B/oci@$BD" },
  { definition = "$PWD/kernels/$2", image = "oci:$B/oci@$BD" },
]
$3
BOX
}
