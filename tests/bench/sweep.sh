#!/usr/bin/env bash
# Removes what killed test or bench runs left behind: domains, storage
# pools and networks named hvt-* (tests) or hvb-* (benchmarks), and their files under the bench directory.
set -uo pipefail
uri=${HV_TEST_URI:-qemu:///system}
virsh -c "$uri" list --all --name 2>/dev/null | grep -E '^(hvt|hvb)-' | while IFS= read -r name; do
    virsh -c "$uri" destroy "$name" >/dev/null 2>&1
    virsh -c "$uri" undefine "$name" --snapshots-metadata --checkpoints-metadata --nvram >/dev/null 2>&1 \
        || virsh -c "$uri" undefine "$name" >/dev/null 2>&1
    echo "sweep: removed leftover domain '$name'" >&2
done
virsh -c "$uri" pool-list --all --name 2>/dev/null | grep -E '^(hvt|hvb)-' | while IFS= read -r name; do
    virsh -c "$uri" pool-destroy "$name" >/dev/null 2>&1
    virsh -c "$uri" pool-undefine "$name" >/dev/null 2>&1
    echo "sweep: removed leftover storage pool '$name'" >&2
done
virsh -c "$uri" net-list --all --name 2>/dev/null | grep -E '^(hvt|hvb)-' | while IFS= read -r name; do
    virsh -c "$uri" net-destroy "$name" >/dev/null 2>&1
    virsh -c "$uri" net-undefine "$name" >/dev/null 2>&1
    echo "sweep: removed leftover network '$name'" >&2
done
# host bridges hv-net's test made (ip link names are short: hvt-brNNNNN)
ip -o link show type bridge 2>/dev/null | awk -F': ' '$2 ~ /^hvt-br/ {print $2}' | while IFS= read -r name; do
    ip link del "$name" 2>/dev/null && echo "sweep: removed leftover bridge '$name'" >&2
done
rm -rf /var/lib/libvirt/images/hv-test/hvt-* /var/lib/libvirt/images/hv-test/hvb-* # files, and the directories of hv-define's tests
# tmpfs, and hv-backup mount's filesystems and FUSE images, a killed test
# left mounted (rm -rf would empty them, not remove them); deepest first
awk '$2 ~ "^/var/tmp/hv[tb]-" {print $2}' /proc/mounts | sort -r | while IFS= read -r m; do
    umount -l "$(printf '%b' "${m//\\/\\0}")" 2>/dev/null
done
losetup -a 2>/dev/null | grep -E '\(/var/tmp/hv[tb]-' | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
# the role test's private libvirtd, polkitd and bus (tests/bench/roles.sh), and its VM
for pids in /var/tmp/hvt-*/libvirtd.pid; do
    [ -f "$pids" ] && bash "$(dirname "$0")/roles.sh" stop "$(dirname "$pids")"
done
pkill -9 -f -- '-name guest=hvt-[^,]*-role,' 2>/dev/null
rm -rf /var/tmp/hvt-* /var/tmp/hvb-* # benches and tests that panicked before their cleanup
# the multi-host tests' extra hosts (tests/bench/hosts.sh), their guests and disks
if [ -d /var/tmp/hv-hosts ]; then
    bash "$(dirname "$0")/hosts.sh" stop /var/tmp/hv-hosts
    rm -rf /var/tmp/hv-hosts
fi
# the bench's object store (tests/bench/garage.sh)
for d in /var/tmp/hv-garage /var/tmp/hv-garage3; do
    if [ -d "$d" ]; then bash "$(dirname "$0")/garage.sh" stop "$d"; fi
done
exit 0
