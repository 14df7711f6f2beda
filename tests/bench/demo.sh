#!/usr/bin/env bash
# hv on a fresh Debian 12 machine: sets up libvirt and QEMU, builds hv and a
# tiny guest image, defines three demo VMs, and shows their main jobs: listing
# and acting in bulk, a snapshot, an encrypted backup of a running and a
# stopped VM, a deep verify, and a restore checked against the source disk.
# The VMs stay for you to play with; `tests/bench/demo.sh --clean` removes them.
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
export HV_CONNECT=qemu:///system
dir=/var/lib/libvirt/images/hv-demo
demos=(demo-web1 demo-web2 demo-db)

if [ "${1:-}" = --clean ]; then
    for vm in "${demos[@]}"; do
        as_root virsh -c "$HV_CONNECT" destroy "$vm" >/dev/null 2>&1 || true
        virsh -c "$HV_CONNECT" dominfo "$vm" >/dev/null 2>&1 || continue
        # Its snapshots and checkpoints (the demo makes both) go with it.
        as_root virsh -c "$HV_CONNECT" undefine "$vm" --snapshots-metadata --checkpoints-metadata >/dev/null \
            && echo "removed $vm" || echo "could not remove $vm" >&2
    done
    as_root rm -rf "$dir"
    exit 0
fi

as_root bash tests/bench/setup-host.sh
image=$(as_root bash tests/guest/build.sh)
cargo build --release --quiet -p hv-ls -p hv-tag -p hv-start -p hv-stop -p hv-snap -p hv-backup -p hv-health
export PATH="$PWD/target/release:$PATH"
as_root mkdir -p "$dir"
for vm in "${demos[@]}"; do
    virsh -c "$HV_CONNECT" dominfo "$vm" >/dev/null 2>&1 && continue
    as_root qemu-img create -q -f qcow2 "$dir/$vm.qcow2" 256M
    # The same 32 MiB on every disk, as clones of one template have: a
    # backup of several stores it once.
    as_root qemu-io -f qcow2 -c "write -P 0x5a 0 32M" "$dir/$vm.qcow2" >/dev/null
    cmdline="console=ttyS0 panic=-1 quiet"
    [ "$vm" = demo-web1 ] && cmdline="$cmdline hvtest.writer=1" # keeps writing while it runs
    sed -e "s|@TYPE@|${HV_DOMAIN_TYPE:-qemu}|" -e "s|@NAME@|$vm|" -e "s|@MEMORY_MIB@|128|" \
        -e "s|@IMAGE_DIR@|$image|" -e "s|@CMDLINE@|$cmdline|" \
        -e "s|@DISK@|$dir/$vm.qcow2|" -e "s|@LOG@|$dir/$vm.log|" -e "s|@CHANNEL@|$dir/$vm.sock|" \
        tests/guest/domain.xml.in >"$dir/$vm.xml"
    as_root virsh -c "$HV_CONNECT" define "$dir/$vm.xml" >/dev/null
done

show() { printf '\n$ %s\n' "$*"; bash -o pipefail -c "$*"; }
show "hv-tag --add web demo-web1 demo-web2 --format table"
show "hv-tag --add db demo-db --format table"
show "hv-start --wait demo-web1 demo-db --format table"
show "hv-ls --format table"
show "hv-ls --tag web --state shutoff | hv-tag --add cold | jq -c '{name, tags}'"
show "hv-ls --state running | jq -r '\"\\(.name): \\(.memory_bytes / 1048576) MiB, disk \\(.disks[0].source)\"'"
show "hv-ls --name 'demo-*' --format csv | cut -d, -f1-5"
show "hv-ls --tag db | hv-stop --timeout 30 --format table"
show "hv-ls --tag db | hv-snap create --name before-upgrade --format table"

# A repository encrypted to a key kept apart from it; backups of a running
# VM (live, no pause) and a stopped one; a deep verify decrypts every
# chunk; the stopped VM's restore is compared with its disk, byte for byte.
as_root rm -rf "$dir/repo" "$dir/restored" "$dir/keys" "$dir/identity.txt"
as_root age-keygen -o "$dir/identity.txt" 2>/dev/null
recipient=$(as_root age-keygen -y "$dir/identity.txt")
export HV_BACKUP_REPO="$dir/repo" HV_BACKUP_KEY_DIR="$dir/keys"
show "hv-backup init $dir/repo --recipient $recipient --format table"
show "hv-ls --tag web | hv-backup create --format table"
show "hv-backup verify --deep --identity $dir/identity.txt --format table"
id=$(hv-backup ls --format jsonl | jq -r 'select(.name == "demo-web2") | .id' | tail -1)
show "hv-backup restore $id --identity $dir/identity.txt --dir $dir/restored --disk-format raw --format table"
show "qemu-img convert -O raw $dir/demo-web2.qcow2 $dir/source.raw && sha256sum $dir/source.raw $dir/restored/*.raw | cut -c1-16,65-"
as_root rm -f "$dir/source.raw"
show "hv-health --format table --problems || true"
printf '\nThe demo VMs and the repository in %s stay; remove them with: tests/bench/demo.sh --clean\n' "$dir"
