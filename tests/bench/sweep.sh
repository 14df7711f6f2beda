#!/usr/bin/env bash
# Removes what killed test or bench runs left behind: domains named hvt-*
# (tests) or hvb-* (benchmarks), and their files under the bench directory.
set -uo pipefail
uri=${HV_TEST_URI:-qemu:///system}
virsh -c "$uri" list --all --name 2>/dev/null | grep -E '^(hvt|hvb)-' | while IFS= read -r name; do
    virsh -c "$uri" destroy "$name" >/dev/null 2>&1
    virsh -c "$uri" undefine "$name" --snapshots-metadata --checkpoints-metadata --nvram >/dev/null 2>&1 \
        || virsh -c "$uri" undefine "$name" >/dev/null 2>&1
    echo "sweep: removed leftover domain '$name'" >&2
done
rm -f /var/lib/libvirt/images/hv-test/hvt-* /var/lib/libvirt/images/hv-test/hvb-*
