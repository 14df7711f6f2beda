#!/usr/bin/env bash
# hv on a fresh Debian 12 machine: sets up libvirt and QEMU, builds hv and a
# tiny guest image, makes demo VMs from profiles (hv-define, with cloud-init)
# and linked clones of one (hv-clone), and shows hv's main jobs on them:
# listing and acting in bulk, a snapshot, an encrypted backup of a running
# and a stopped VM, a deep verify, a restore checked against the source
# disk, a replica (sync), a backup mounted as a file, a copy on S3 (the
# bench's Garage, when built); then two more hosts (the bench's extra libvirtd instances, reached
# over ssh), all hosts listed at once, a running VM made here moved live,
# with its disk, to another host, and backed up there from here over ssh.
# The VMs stay for you to play with; `tests/bench/demo.sh --clean` removes them.
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
export -f as_root
export HV_CONNECT=qemu:///system
dir=/var/lib/libvirt/images/hv-demo

if [ "${1:-}" = --clean ]; then
    export PATH="$PWD/target/release:$PATH"
    # The clones first: hv-rm keeps a template's disk while clones use it.
    HV_HOSTS=$dir/hosts "$PWD/target/release/hv-ls" --name 'demo-mover*' 2>/dev/null | as_root env HV_HOSTS="$dir/hosts" "$PWD/target/release/hv-rm" --force --remove-storage --yes >/dev/null 2>&1 || true
    for vm in demo-web1 demo-web2 demo-db demo-base; do
        virsh -c "$HV_CONNECT" dominfo "$vm" >/dev/null 2>&1 || continue
        as_root "$PWD/target/release/hv-rm" --force --remove-storage --yes "$vm" >/dev/null \
            && echo "removed $vm" || echo "could not remove $vm" >&2
    done
    as_root rm -rf "$dir"
    as_root rm -f /var/lib/libvirt/images/demo-mover.qcow2 # wherever it moved, its first disk stays here
    as_root bash tests/bench/hosts.sh stop /var/tmp/hv-hosts
    as_root rm -rf /var/tmp/hv-hosts
    exit 0
fi

as_root bash tests/bench/setup-host.sh
image=$(as_root bash tests/guest/build.sh)
cargo build --release --quiet -p hv-ls -p hv-tag -p hv-start -p hv-stop -p hv-snap -p hv-backup -p hv-health \
    -p hv-define -p hv-clone -p hv-rm -p hv-preflight -p hv-migrate
export PATH="$PWD/target/release:$PATH"
as_root mkdir -p "$dir"
# A base image with the same 32 MiB on it that every demo disk starts
# from, as VMs made from one template share: a backup of several stores it once.
if [ ! -e "$dir/base-image.qcow2" ]; then
    as_root qemu-img create -q -f qcow2 "$dir/base-image.qcow2" 256M
    as_root qemu-io -f qcow2 -c "write -P 0x5a 0 32M" "$dir/base-image.qcow2" >/dev/null
fi
# Profiles: the test guest's kernel boots directly; cloud-init names each VM.
profile() { # name hostname cmdline
    jq -cn --arg name "$1" --arg host "$2" --arg cmdline "$3" --arg dir "$dir" --arg image "$image" \
        --arg type "${HV_DOMAIN_TYPE:-qemu}" \
        '{name: $name, type: $type, memory: "128M", dir: $dir,
          disk: {from: "\($dir)/base-image.qcow2"},
          kernel: "\($image)/vmlinux", initrd: "\($image)/initramfs.img", cmdline: $cmdline,
          cloud_init: {hostname: $host}}'
}
{
    # The base keeps writing to its disk while it runs, and so do its clones.
    profile demo-base demo-base "console=ttyS0 panic=-1 quiet hvtest.writer=1"
    profile demo-db demo-db "console=ttyS0 panic=-1 quiet"
} >"$dir/profiles.jsonl.new"
as_root mv "$dir/profiles.jsonl.new" "$dir/profiles.jsonl"

show() { printf '\n$ %s\n' "$*"; bash -o pipefail -c "$*"; }
show "cat $dir/profiles.jsonl | jq -c '{name, memory, disk, cloud_init}'"
if ! virsh -c "$HV_CONNECT" dominfo demo-base >/dev/null 2>&1; then
    show "hv-define $dir/profiles.jsonl --format table"
    show "hv-clone demo-base --linked --count 2 --name 'demo-web{n}' --format table"
fi
show "hv-tag --add web demo-web1 demo-web2 --format table"
show "hv-tag --add db demo-db --format table"
show "hv-start --wait demo-web1 demo-db --format table"
show "hv-start demo-base --format table || true"
# Each clone booted with a cloud-init seed of its own: the guest says which host name it found.
logs="/var/log/libvirt/qemu/demo-web1-serial0.log /var/log/libvirt/qemu/demo-db-serial0.log"
for _ in $(seq 90); do [ "$(as_root cat $logs 2>/dev/null | grep -c 'cidata hostname')" -ge 2 ] && break; sleep 1; done
show "as_root grep -h cidata /var/log/libvirt/qemu/demo-web1-serial0.log /var/log/libvirt/qemu/demo-db-serial0.log"
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
show "qemu-img convert -O raw $dir/demo-web2.qcow2 $dir/source.raw && b3sum $dir/source.raw $dir/restored/*.raw | cut -c1-16,65-"
as_root rm -f "$dir/source.raw"
# A second copy elsewhere (here: another directory): the first sync makes
# the replica, the second sends nothing; the replica verifies on its own.
as_root rm -rf "$dir/offsite"
show "hv-backup sync --from $dir/repo --to $dir/offsite --format table"
show "hv-backup sync --from $dir/repo --to $dir/offsite --verify --format table"
show "hv-backup verify --repo $dir/offsite --deep --identity $dir/identity.txt --format table"
# The stopped VM's backup as a file again, without restoring it: served
# read-only over FUSE, each chunk read when touched; the same bytes.
as_root mkdir -p "$dir/mnt"
hv-backup mount "$id" "$dir/mnt" --raw --identity "$dir/identity.txt" --format jsonl >"$dir/mount.jsonl" &
until [ -s "$dir/mount.jsonl" ]; do sleep 0.2; done
show "ls -l $dir/mnt && sha256sum $dir/mnt/vda.raw $dir/restored/*.raw | cut -c1-16,65-"
show "hv-backup umount $dir/mnt --format table"
wait
# And a copy on S3-compatible object storage (the bench's Garage on
# loopback, when tests/run.sh or tests/bench/garage.sh install built it).
if [ -x /var/cache/hv-test/garage/bin/garage ]; then
    set -a
    # shellcheck disable=SC1090
    . <(as_root bash tests/bench/garage.sh start /var/tmp/hv-garage)
    set +a
    s3=s3://hv-bench/demo-$(date +%s)
    show "hv-backup sync --from $dir/repo --to $s3 --format table"
    show "hv-backup ls --repo $s3 --format table"
else
    echo "(tests/bench/garage.sh install builds the object store for the S3 part of this demo)"
fi
show "hv-health --format table --problems || true"

# Two more hosts, each its own libvirtd reached over ssh (tests/bench/hosts.sh:
# on this machine, in namespaces of their own); a hosts file names them and
# this one. A VM made here moves live, with its disk, to h1 and on to h2.
hosts=$(as_root bash tests/bench/hosts.sh start /var/tmp/hv-hosts 2)
{ echo "here qemu:///system"; echo "$hosts"; } | as_root tee "$dir/hosts" >/dev/null
export HV_HOSTS="$dir/hosts"
show "cat $dir/hosts"
if ! hv-ls demo-mover >/dev/null 2>&1; then
    jq -cn --arg image "$image" --arg type "${HV_DOMAIN_TYPE:-qemu}" \
        '{name: "demo-mover", type: $type, memory: "128M",
          dir: "/var/lib/libvirt/images", disk: {size: "256M"},
          kernel: "\($image)/vmlinux", initrd: "\($image)/initramfs.img",
          cmdline: "console=ttyS0 panic=-1 quiet hvtest.writer=1"}' >"$dir/mover.json"
    show "hv-define -c here $dir/mover.json | hv-start --wait --format table"
fi
show "hv-ls --state running --format table"
mover_on=$(hv-ls demo-mover | jq -r .host)
to=h1; [ "$mover_on" = h1 ] && to=h2
show "hv-preflight -c $mover_on --for migrate --to $to demo-mover --format table"
show "hv-ls -c $mover_on demo-mover | hv-migrate --to $to --copy-storage --format table"
show "hv-ls --name 'demo-mover' | jq -c '{name, host, state, disk: .disks[0].source}'"
# Backed up from here where it now runs: read on its host over the ssh of
# its URI, into this machine's repository.
show "hv-ls --name 'demo-mover' | hv-backup create --format table"
# And brought back on the third host, as after losing its own: the disk is
# written there over its ssh, checked against the backup, and the VM is
# defined and started there.
back=h2; [ "$to" = h2 ] && back=h1
# (A second run of the demo replaces the copy the first one left there.)
as_root env HV_HOSTS="$HV_HOSTS" "$PWD/target/release/hv-rm" -c "$back" --force --yes demo-mover-back >/dev/null 2>&1 || true
mover_id=$(hv-backup ls --vm demo-mover --format jsonl | jq -r .id | head -1)
show "hv-backup restore $mover_id --identity $dir/identity.txt -c $back --dir /var/lib/libvirt/images --name demo-mover-back --define --force --format table"
show "hv-start -c $back demo-mover-back --wait --format table"
printf '\nThe demo VMs, the repository in %s and the extra hosts stay; remove them with: tests/bench/demo.sh --clean\n' "$dir"
