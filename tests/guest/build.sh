#!/usr/bin/env bash
# Builds the tiny test guest (facts in shared/TEST-GUEST.md): an uncompressed
# Debian kernel that QEMU boots directly, and a busybox initramfs. The result
# is cached under a directory named by the hash of this recipe, so it is
# rebuilt only when the recipe changes. Prints the cache directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${HV_TEST_CACHE:-/var/cache/hv-test}
recipe=$(cat "$here/build.sh" "$here/init" | sha256sum | cut -c1-16)
out="$cache_root/guest-$recipe"
if [ -s "$out/vmlinux" ] && [ -s "$out/initramfs.img" ]; then echo "$out"; exit 0; fi

log() { printf 'build-guest: %s\n' "$*" >&2; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kernel_pkg" ]; then apt-get update -qq; kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); fi
log "fetching $kernel_pkg and busybox-static"
apt-get download -qq "$kernel_pkg" busybox-static >/dev/null 2>&1 || { apt-get update -qq; apt-get download -qq "$kernel_pkg" busybox-static >/dev/null; }
dpkg-deb -x linux-image-*.deb kernel
dpkg-deb -x busybox-static_*.deb bb

# The bzImage wraps an xz stream holding an ELF vmlinux with a PVH entry;
# booting that directly halves the boot time under TCG.
vmlinuz=$(ls kernel/boot/vmlinuz-*)
offset=$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "$vmlinuz" | head -n1 | cut -d: -f1)
tail -c +"$((offset + 1))" "$vmlinuz" | xz -dc --single-stream >vmlinux 2>/dev/null || true
[ "$(head -c4 vmlinux | od -An -c | tr -d ' ')" = '177ELF' ] || { log "could not extract vmlinux from $vmlinuz"; exit 1; }

root=initramfs
mkdir -p $root/bin $root/proc $root/sys $root/dev $root/etc $root/lib/modules $root/tmp $root/mnt/cidata
cp bb/bin/busybox $root/bin/busybox
# Boot modules, then (loaded by init in the background after "ready") what a
# cloud-init NoCloud seed needs: q35's AHCI controller, the SATA CD-ROM and
# ISO 9660, and a virtio NIC for DHCP, in dependency order (the package has
# no modules.dep: the order follows each module's depends=). A module the
# kernel has built in is skipped.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk virtio_console evdev button \
    scsi_common scsi_mod libata libahci ahci cdrom sr_mod isofs failover net_failover virtio_net; do
    f=$(find kernel/lib/modules -name "$m.ko*" | head -n1)
    if [ -z "$f" ] && grep -qE "/$m\.ko\$" kernel/lib/modules/*/modules.builtin; then log "module $m is built in"; continue; fi
    [ -n "$f" ] || { log "module $m missing from $kernel_pkg"; exit 1; }
    case "$f" in
        *.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
        *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
done
install -m 755 "$here/init" $root/init
(cd $root && find . | ../bb/bin/busybox cpio -o -H newc 2>/dev/null) | gzip -9 >initramfs.img

mkdir -p "$out.tmp"
mv vmlinux initramfs.img "$out.tmp/"
chmod 755 "$out.tmp"; chmod 644 "$out.tmp"/*
rm -rf "$out"; mv "$out.tmp" "$out"
log "built $out ($(du -sh "$out" | cut -f1))"
echo "$out"
