complete -c hv-set -l memory -d 'Memory, with a unit: 512M, 4G (raises --max-memory with it when above)' -r
complete -c hv-set -l max-memory -d 'The most memory the VM may be given while it runs (takes effect at the next boot)' -r
complete -c hv-set -l vcpus -d 'vCPUs (raises --max-vcpus with it when above)' -r
complete -c hv-set -l max-vcpus -d 'The most vCPUs the VM may be given while it runs (takes effect at the next boot)' -r
complete -c hv-set -l grow -d 'Grow a disk: TARGET=+SIZE (by) or TARGET=SIZE (to), e.g. vda=+20G; never shrinks (repeatable)' -r
complete -c hv-set -l cdrom -d 'Put this ISO in the VM\'s drive: a name in the hv-iso library (a drive is added when there is none)' -r
complete -c hv-set -l boot -d 'The boot order: devices among hd, cdrom, network, fd, comma-separated (cdrom,hd)' -r
complete -c hv-set -l description -d 'The VM\'s description (virsh desc)' -r
complete -c hv-set -l cpu -d 'The CPU the guest sees: host-passthrough or host-model (takes effect at the next boot)' -r -f -a "host-passthrough\t'The host\'s CPU as it is (fastest; migrates only to identical hosts)'
host-model\t'The closest named model to the host\'s (migrates to similar hosts)'"
complete -c hv-set -l autostart-order -d 'Its group in the host\'s start order (the boot:N tag that hv-start --order and hv-boot read)' -r
complete -c hv-set -l autostart-delay -d 'How long the start order waits after its group (the boot-delay tag): 30s, 2m' -r
complete -c hv-set -l iso-library -d 'The hv-iso library --cdrom names are looked up in' -r -F
complete -c hv-set -l timeout -d 'How long each VM may take before it is reported as timed out' -r
complete -c hv-set -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-set -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-set -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-set -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-set -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-set -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-set -l eject -d 'Empty the VM\'s drive'
complete -c hv-set -l allow-unverified-iso -d 'Accept an ISO hv-iso did not prove by a signature (the record says so)'
complete -c hv-set -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-set -l json -d 'Shorthand for --format jsonl'
complete -c hv-set -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-set -s V -l version -d 'Print version'

# Asked of hv when Tab is pressed: VM names, snapshot names, backup ids.
function __hv_vms
    hv-ls --format jsonl $argv </dev/null 2>/dev/null | string replace -rf '^\{"name":"((?:[^"\\\\]|\\\\.)*)".*' '$1'
end
function __hv_snapshots
    set -l vms (commandline -opc)[3..-1]
    hv-snap ls --format jsonl (string match -v -- '-*' $vms) </dev/null 2>/dev/null | string replace -rf '.*"snapshot":"((?:[^"\\\\]|\\\\.)*)".*' '$1' | sort -u
end
function __hv_names
    $argv --format jsonl </dev/null 2>/dev/null | string replace -rf '^\{"name":"((?:[^"\\\\]|\\\\.)*)".*' '$1'
end
function __hv_isos
    set -l words (commandline -opc)
    set -l lib
    for i in (seq (count $words))
        if contains -- $words[$i] --iso-library --library; and test $i -lt (count $words)
            set lib --library $words[(math $i + 1)]
        end
    end
    __hv_names hv-iso $lib ls
end
function __hv_hosts
    set -l words (commandline -opc)
    set -l file $HV_HOSTS
    for i in (seq (count $words))
        if test $words[$i] = --hosts; and test $i -lt (count $words)
            set file $words[(math $i + 1)]
        end
    end
    test -f "$file"; and test -r "$file"; or return
    awk '$1 !~ /^#/ && NF >= 2 {print $1}' $file
end
function __hv_backups
    set -l words (commandline -opc)
    set -l repo $HV_BACKUP_REPO
    for i in (seq (count $words))
        if contains -- $words[$i] --repo -r; and test $i -lt (count $words)
            set repo $words[(math $i + 1)]
        end
    end
    test -n "$repo"; or return
    hv-backup ls --repo $repo --format jsonl </dev/null 2>/dev/null | string replace -rf '.*"id":"([0-9TZa-f-]*)".*' '$1'
end
complete -c hv-set -f -a '(__hv_vms)'
complete -c hv-set -l cdrom -x -a '(__hv_isos)'
complete -c hv-set -l connect -x -a '(__hv_hosts)'
complete -c hv-set -s c -x -a '(__hv_hosts)'
