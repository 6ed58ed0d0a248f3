#!/usr/bin/env bash
# Benchmark: stagebox → bootable hybrid ISO versus the usual pipeline, on the same image
# (benches/make-image.sh) with the same boot setup: `umoci unpack --rootless`, the rootfs as a
# gzip initramfs via `find | sort | cpio --reproducible | gzip -n -6`, a FAT ESP via
# mkfs.vfat + mcopy (systemd-boot, kernel, initramfs), then `xorriso -as mkisofs` with
# isolinux (El Torito BIOS + boot info table), the ESP as El Torito UEFI image, isohybrid MBR
# and GPT. Kernel: Debian's cloud kernel; bootloaders: Debian's isolinux, syslinux-common and
# systemd-boot-efi packages (the host's installed files for the baseline, the same packages as
# OCI images for stagebox). Usage: benches/iso.sh [RUNS] [LAYOUT DIGEST]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for t in umoci cpio gzip xorriso mkfs.vfat mcopy dpkg-deb apt-get /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/install-test-deps.sh (and apt-get install time)" >&2; exit 1; }
done
. benches/lib.sh
bench_setup "${@:2}"

bench_boot_setup
# The baseline grafts the rootfs into the ISO too: like for like (bootable ISOs leave it out
# by default now).
iso_box bench systemd-boot-debian.toml "files = true" > "$WORK/iso.toml"
# The same image as the ISO a user gets by default now: syslinux (BIOS) + GRUB (UEFI), kernel,
# initramfs and loaders stored once, no tree files. Timed once beside the comparison, for its
# size (docs/iso-boot.md).
iso_box bench-grub grub-debian.toml "" > "$WORK/iso-grub.toml"

baseline() {
  cat <<SH
set -e
umoci unpack --rootless --image '$IMAGE:$TAG' '$WORK/bundle' >/dev/null
R='$WORK/bundle/rootfs'; S='$WORK/stage'; mkdir -p "\$S/isolinux"
(cd "\$R" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc --reproducible --quiet | gzip -n -6) > "\$S/isolinux/initrd.img"
cp '$KERNEL' "\$S/isolinux/vmlinuz"
cp '$P/usr/lib/ISOLINUX/isolinux.bin' '$P/usr/lib/syslinux/modules/bios/ldlinux.c32' "\$S/isolinux/"
printf 'DEFAULT l\nLABEL l\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND console=ttyS0\n' > "\$S/isolinux/isolinux.cfg"
kb=\$(( (\$(stat -c %s "\$S/isolinux/vmlinuz") + \$(stat -c %s "\$S/isolinux/initrd.img") + \$(stat -c %s '$P/usr/lib/systemd/boot/efi/systemd-bootx64.efi')) / 1024 + 1024 ))
mkfs.vfat -C -i 12345678 "\$S/isolinux/efiboot.img" \$kb >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "\$S/isolinux/efiboot.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "\$S/isolinux/efiboot.img" '$P/usr/lib/systemd/boot/efi/systemd-bootx64.efi' ::/EFI/BOOT/BOOTX64.EFI
printf 'timeout 0\ndefault l.conf\n' | mcopy -i "\$S/isolinux/efiboot.img" - ::/loader/loader.conf
printf 'title l\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0\n' | mcopy -i "\$S/isolinux/efiboot.img" - ::/loader/entries/l.conf
mcopy -i "\$S/isolinux/efiboot.img" "\$S/isolinux/vmlinuz" "\$S/isolinux/initrd.img" ::/
xorriso -as mkisofs -quiet -o '$WORK/base.iso' -R -J -V BENCH \
  -isohybrid-mbr '$P/usr/lib/ISOLINUX/isohdpfx.bin' \
  -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
  -eltorito-alt-boot -e isolinux/efiboot.img -no-emul-boot -isohybrid-gpt-basdat \
  -graft-points "\$R" /isolinux/="\$S/isolinux"
SH
}

echo "image: $IMAGE ($(du -sh "$IMAGE" | cut -f1) of layers), $(nproc) cores, $RUNS runs, median"
T_S=""; M_S=""; T_B=""; M_B=""
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/cache" "$WORK/out"
  read -r t m < <(measure s "$BIN" build "$WORK/iso.toml" --out "$WORK/out" --cache "$WORK/cache" -q)
  T_S+="$t "; M_S+="$m "
  rm -rf "$WORK/bundle" "$WORK/stage" "$WORK/base.iso"
  baseline > "$WORK/base.sh"
  read -r t m < <(measure b bash "$WORK/base.sh")
  T_B+="$t "; M_B+="$m "
done
echo "ISO: stagebox $(( $(stat -c %s "$WORK/out/bench.iso") / 1048576)) MiB, baseline $(( $(stat -c %s "$WORK/base.iso") / 1048576)) MiB"
st=$(median $T_S); sm=$(median $M_S); bt=$(median $T_B); bm=$(median $M_B)
printf '%-64s %8s s  %6s MiB\n' "stagebox build → hybrid .iso (cold store)" "$st" "$((sm / 1024))"
printf '%-64s %8s s  %6s MiB\n' "umoci unpack + cpio|gzip + mkfs.vfat/mcopy + xorriso -as mkisofs" "$bt" "$((bm / 1024))"
awk -v a="$st" -v b="$bt" 'BEGIN { printf "ratio .iso stagebox/baseline: %.3f (target <= 0.5)\n", a / b }'
rm -rf "$WORK/cache" "$WORK/out-grub"
read -r t m < <(measure g "$BIN" build "$WORK/iso-grub.toml" --out "$WORK/out-grub" --cache "$WORK/cache" -q)
g=$(stat -c %s "$WORK/out-grub/bench-grub.iso")
echo "syslinux + GRUB ISO (no tree files, each byte once): $g bytes ($((g / 1048576)) MiB), $t s, $((m / 1024)) MiB peak RSS"
files=$(bsdtar -tvf "$WORK/out-grub/bench-grub.iso" | awk '$1 ~ /^-/ {s += $5} END {print s}')
echo "  its files (kernel, initramfs, loaders, configs): $files bytes; ISO 9660 + El Torito + ESP + MBR/GPT overhead: $((g - files)) bytes"
bsdtar -tvf "$WORK/out-grub/bench-grub.iso" | awk '$1 ~ /^-/ {printf "    %12d  %s\n", $5, $NF}'
