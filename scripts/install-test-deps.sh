#!/usr/bin/env bash
# Install the independent tools the test suite checks our outputs with (Debian 12).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
PKGS=(umoci skopeo libarchive-tools tar gzip zstd xz-utils cpio busybox-static
      qemu-system-x86 ovmf qemu-system-arm qemu-efi-aarch64 dpkg ca-certificates docker-registry gnupg
      python3 openssl squashfs-tools erofs-utils python3-jsonschema diffoscope-minimal
      rpm lintian genisoimage xorriso p7zip-full dosfstools mtools
      isolinux syslinux-common systemd-boot-efi gdisk fdisk
      grub-common grub-efi-amd64-bin binutils qemu-utils
      man-db groff-base zsh fish bsdutils apache2-utils sq socat
      cryptsetup-bin swtpm swtpm-tools tpm2-tools pesign time)
# tests/it/grub.rs downloads (never installs) grub-efi-arm64-bin:arm64, so apt needs the arm64
# package index.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing test tools: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# tests/it/eif.rs carries Nitro's heartbeat between two QEMU guests over a vhost-user vsock
# backend, which Debian 12 does not package (rust-vmm's vhost-device-vsock). Built from
# crates.io: about 2 minutes of CPU (13 minutes on a busy 2-core machine).
if ! command -v vhost-device-vsock >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/vhost-device-vsock" ]; then
  echo "installing vhost-device-vsock (cargo install)" >&2
  cargo install --locked vhost-device-vsock --version 0.3.0
fi
