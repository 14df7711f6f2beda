#!/usr/bin/env bash
# hv on a fresh Debian 12 machine: sets up libvirt and QEMU, builds hv and a
# tiny guest image, defines three demo VMs, and shows hv-ls and a pipeline.
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
        as_root virsh -c "$HV_CONNECT" undefine "$vm" >/dev/null 2>&1 && echo "removed $vm"
    done
    as_root rm -rf "$dir"
    exit 0
fi

as_root bash tests/bench/setup-host.sh
image=$(as_root bash tests/guest/build.sh)
cargo build --release --quiet -p hv-ls -p hv-tag -p hv-start -p hv-stop
export PATH="$PWD/target/release:$PATH"
as_root mkdir -p "$dir"
for vm in "${demos[@]}"; do
    virsh -c "$HV_CONNECT" dominfo "$vm" >/dev/null 2>&1 && continue
    as_root qemu-img create -q -f qcow2 "$dir/$vm.qcow2" 256M
    sed -e "s|@TYPE@|${HV_DOMAIN_TYPE:-qemu}|" -e "s|@NAME@|$vm|" -e "s|@MEMORY_MIB@|128|" \
        -e "s|@IMAGE_DIR@|$image|" -e "s|@CMDLINE@|console=ttyS0 panic=-1 quiet|" \
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
printf '\nThe demo VMs stay defined; remove them with: tests/bench/demo.sh --clean\n'
