# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hv_snap_global_optspecs
    string join \n c/connect= hosts= connect-timeout= format= json audit-log= h/help V/version
end

function __fish_hv_snap_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hv_snap_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hv_snap_using_subcommand
    set -l cmd (__fish_hv_snap_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hv-snap -n "__fish_hv_snap_needs_command" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-snap -n "__fish_hv_snap_needs_command" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-snap -n "__fish_hv_snap_needs_command" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-snap -n "__fish_hv_snap_needs_command" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-snap -n "__fish_hv_snap_needs_command" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-snap -n "__fish_hv_snap_needs_command" -l json -d 'Shorthand for --format jsonl'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -s V -l version -d 'Print version'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -f -a "create" -d 'Take a snapshot of each VM'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -f -a "ls" -d 'List snapshots, one record each'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -f -a "revert" -d 'Revert each VM to a snapshot'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -f -a "rm" -d 'Delete a snapshot of each VM'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -f -a "prune" -d 'Delete the snapshots a retention policy does not keep'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -f -a "schedule" -d 'Take and prune the snapshots that VMs tagged snap:POLICY are due for (from a timer)'
complete -c hv-snap -n "__fish_hv_snap_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l name -d 'Snapshot name [default: hv-YYYYmmdd-HHMMSS, the same for the whole batch]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l description -d 'A note stored with the snapshot' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l timeout -d 'How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l disk-only -d 'External disk-only snapshots: new overlay files next to each disk, no pause'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l memory -d 'Require the running VM\'s memory in the snapshot (internal snapshots of running VMs always have it)'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l quiesce -d 'Freeze the guest\'s filesystems through its agent for a --disk-only snapshot; warn if it does not answer'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l require-quiesce -d 'Like --quiesce, but fail the VM when its agent does not answer'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -l json -d 'Shorthand for --format jsonl'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand create" -s h -l help -d 'Print help'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -l fields -d 'Only these fields of each record, in this order (e.g. name,uuid); a record\'s host stays' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -l hv-only -d 'Only snapshots hv made'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -l json -d 'Shorthand for --format jsonl'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand ls" -s h -l help -d 'Print help'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l snapshot -d 'The snapshot [default: the `snapshot` field of each piped record]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l timeout -d 'How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l json -d 'Shorthand for --format jsonl'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l paused -d 'Leave the VM paused after reverting (default: the state the snapshot holds)'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -l running -d 'Leave the VM running after reverting, even to a snapshot of a stopped VM'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand revert" -s h -l help -d 'Print help'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -l snapshot -d 'The snapshot [default: the `snapshot` field of each piped record]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -l timeout -d 'How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -l json -d 'Shorthand for --format jsonl'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand rm" -s h -l help -d 'Print help'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l keep-last -d 'Keep the N newest' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l keep-hourly -d 'Keep the newest of each of the last N hours that have one' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l keep-daily -d 'Keep the newest of each of the last N days that have one' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l keep-weekly -d 'Keep the newest of each of the last N ISO weeks that have one' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l keep-monthly -d 'Keep the newest of each of the last N months that have one' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l keep-yearly -d 'Keep the newest of each of the last N years that have one' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l timeout -d 'How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l all -d 'Also consider snapshots hv did not make'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -l json -d 'Shorthand for --format jsonl'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand prune" -s h -l help -d 'Print help'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -l policies -d 'A JSON file of policies: {"NAME": {"every": "1h", "keep": {"last": 24}, "disk_only": false}, ...} [default: hourly, daily, weekly and monthly, kept 24, 7, 4 and 12]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -l timeout -d 'How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -l json -d 'Shorthand for --format jsonl'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand schedule" -s h -l help -d 'Print help'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand help; and not __fish_seen_subcommand_from create ls revert rm prune schedule help" -f -a "create" -d 'Take a snapshot of each VM'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand help; and not __fish_seen_subcommand_from create ls revert rm prune schedule help" -f -a "ls" -d 'List snapshots, one record each'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand help; and not __fish_seen_subcommand_from create ls revert rm prune schedule help" -f -a "revert" -d 'Revert each VM to a snapshot'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand help; and not __fish_seen_subcommand_from create ls revert rm prune schedule help" -f -a "rm" -d 'Delete a snapshot of each VM'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand help; and not __fish_seen_subcommand_from create ls revert rm prune schedule help" -f -a "prune" -d 'Delete the snapshots a retention policy does not keep'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand help; and not __fish_seen_subcommand_from create ls revert rm prune schedule help" -f -a "schedule" -d 'Take and prune the snapshots that VMs tagged snap:POLICY are due for (from a timer)'
complete -c hv-snap -n "__fish_hv_snap_using_subcommand help; and not __fish_seen_subcommand_from create ls revert rm prune schedule help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

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
complete -c hv-snap -n '__fish_seen_subcommand_from create' -f -a '(__hv_vms)'
complete -c hv-snap -n '__fish_seen_subcommand_from create' -l connect -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from create' -s c -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from ls' -f -a '(__hv_vms)'
complete -c hv-snap -n '__fish_seen_subcommand_from ls' -l connect -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from ls' -s c -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from revert' -f -a '(__hv_vms)'
complete -c hv-snap -n '__fish_seen_subcommand_from revert' -l snapshot -x -a '(__hv_snapshots)'
complete -c hv-snap -n '__fish_seen_subcommand_from revert' -l connect -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from revert' -s c -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from rm' -f -a '(__hv_vms)'
complete -c hv-snap -n '__fish_seen_subcommand_from rm' -l snapshot -x -a '(__hv_snapshots)'
complete -c hv-snap -n '__fish_seen_subcommand_from rm' -l connect -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from rm' -s c -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from prune' -f -a '(__hv_vms)'
complete -c hv-snap -n '__fish_seen_subcommand_from prune' -l connect -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from prune' -s c -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from schedule' -l connect -x -a '(__hv_hosts)'
complete -c hv-snap -n '__fish_seen_subcommand_from schedule' -s c -x -a '(__hv_hosts)'
