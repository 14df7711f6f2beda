complete -c hv-health -l repo -d 'An hv-backup repository: checks its free space and each VM\'s newest backup (repeatable) [default: $HV_BACKUP_REPO when set]' -r -F
complete -c hv-health -l iso-library -d 'An hv-iso library: reports images whose last hv-iso verify failed or is too old [default: $HV_ISO_LIBRARY when set]' -r -F
complete -c hv-health -l max-backup-age -d 'Warn when a VM\'s newest backup (in --repo) is older than this' -r
complete -c hv-health -l max-snapshot-age -d 'Warn when a VM keeps a snapshot older than this' -r
complete -c hv-health -l max-snapshots -d 'Warn when a VM has more snapshots than this' -r
complete -c hv-health -l max-iso-check-age -d 'Warn when an ISO image was last verified longer ago than this' -r
complete -c hv-health -l disk-warn -d 'Warn when a storage pool or repository filesystem is this full (percent used)' -r
complete -c hv-health -l disk-fail -d 'Fail when a storage pool or repository filesystem is this full (percent used)' -r
complete -c hv-health -l memory-warn -d 'Warn when the host\'s available memory (free + cache) falls below this (percent)' -r
complete -c hv-health -l memory-fail -d 'Fail when the host\'s available memory falls below this (percent)' -r
complete -c hv-health -l state-file -d 'Compare with the last run\'s problems kept in this file: each record gets change new, ongoing or resolved' -r -F
complete -c hv-health -l fix -d 'After checking, repair these problems (comma-separated): vm.crashed (restart it), vm.autostart (start it), vm.io_error (resume it once its disks have space); needs --state-file, which keeps the limits' -r -f -a "vm.crashed\t'Stop a crashed VM and start it again'
vm.io_error\t'Resume a VM paused by a disk I/O error once its disks have space'
vm.autostart\t'Start an autostart VM that is shut off'"
complete -c hv-health -l fix-attempts -d 'Repairs per VM within --fix-window; when one more is needed, hv-health gives up on that VM until --reset' -r
complete -c hv-health -l fix-window -d 'The window --fix-attempts counts in' -r
complete -c hv-health -l fix-backoff -d 'The wait after a VM\'s first repair before the next; it doubles after each' -r
complete -c hv-health -l reset -d 'Forget the repairs and the give-up of these VMs (names or UUIDs) in --state-file, after a person fixed the cause; no check runs' -r
complete -c hv-health -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-health -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-health -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-health -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-health -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-health -l host-only -d 'Check only the host, the repositories and the ISO library, no VM'
complete -c hv-health -l problems -d 'Print only warn and fail records (and resolved ones)'
complete -c hv-health -l changes-only -d 'Print only what changed since the last run: new problems and resolved ones'
complete -c hv-health -l strict -d 'Exit 1 on a warning too, not only on a failure'
complete -c hv-health -l dry-run -d 'With --fix: say what would be repaired, and repair nothing'
complete -c hv-health -l json -d 'Shorthand for --format jsonl'
complete -c hv-health -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-health -s V -l version -d 'Print version'

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
complete -c hv-health -f -a '(__hv_vms)'
complete -c hv-health -l connect -x -a '(__hv_hosts)'
complete -c hv-health -s c -x -a '(__hv_hosts)'
