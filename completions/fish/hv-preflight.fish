complete -c hv-preflight -l for -d 'Check VMs before this operation: backup, snapshot, start or migrate (with --to)' -r -f -a "backup\t''
snapshot\t''
start\t''
migrate\t'Moving to another host (hv-migrate): needs --to'"
complete -c hv-preflight -l to -d 'For --for migrate: the destination, a URI or an alias of the hosts file' -r
complete -c hv-preflight -l repo -d 'The hv-backup repository the backups go to (needed with --for backup)' -r -F
complete -c hv-preflight -l name -d 'A planned VM\'s name' -r
complete -c hv-preflight -l memory -d 'A planned VM\'s memory, with a unit: 512M, 4G (also the default for --profiles)' -r
complete -c hv-preflight -l vcpus -d 'A planned VM\'s vCPUs (also the default for --profiles)' -r
complete -c hv-preflight -l disk -d 'A planned VM\'s disk size, with a unit: 20G (also the default for --profiles)' -r
complete -c hv-preflight -l pool -d 'The storage pool the planned disk goes to [default: default]' -r
complete -c hv-preflight -l dir -d 'The directory the planned disk goes to, instead of a pool' -r -F
complete -c hv-preflight -l iso -d 'The ISO a planned VM installs from: a name in the hv-iso library, or a path' -r
complete -c hv-preflight -l iso-library -d 'The hv-iso library --iso names are looked up in' -r -F
complete -c hv-preflight -l profiles -d 'Planned VMs as JSON profile records, one per line, from FILE (- for stdin)' -r -F
complete -c hv-preflight -l virt-type -d 'The domain type the host\'s or planned VMs will run with: kvm, or qemu (TCG emulation, no hardware needed); --for start reads each VM\'s own' -r -f -a "kvm\t''
qemu\t''"
complete -c hv-preflight -l disk-warn -d 'Warn when a pool, directory or repository would be this full afterwards (percent used)' -r
complete -c hv-preflight -l memory-warn -d 'Warn when the host would keep less than this share of its memory available (percent)' -r
complete -c hv-preflight -l skip -d 'Leave out a check, by id (repeatable): --skip host.iommu' -r
complete -c hv-preflight -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-preflight -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-preflight -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-preflight -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-preflight -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-preflight -l disk-only -d 'With --for snapshot: the snapshots will be --disk-only (overlays, no memory saved)'
complete -c hv-preflight -l problems -d 'Print only warn and fail records'
complete -c hv-preflight -l strict -d 'Exit 1 on a warning too, not only on a failure'
complete -c hv-preflight -l json -d 'Shorthand for --format jsonl'
complete -c hv-preflight -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-preflight -s V -l version -d 'Print version'

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
complete -c hv-preflight -f -a '(__hv_vms)'
complete -c hv-preflight -l pool -x -a '(__hv_names hv-pool ls)'
complete -c hv-preflight -l iso -x -a '(__hv_isos)'
complete -c hv-preflight -l to -x -a '(__hv_hosts)'
complete -c hv-preflight -l connect -x -a '(__hv_hosts)'
complete -c hv-preflight -s c -x -a '(__hv_hosts)'
