complete -c hv-tag -s a -l add -d 'Add this tag (repeatable)' -r
complete -c hv-tag -s d -l remove -d 'Remove this tag (repeatable; -d as in `git tag -d`)' -r
complete -c hv-tag -l timeout -d 'How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)' -r
complete -c hv-tag -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-tag -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-tag -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-tag -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-tag -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-tag -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-tag -l clear -d 'Remove every tag first (then --add applies)'
complete -c hv-tag -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-tag -l json -d 'Shorthand for --format jsonl'
complete -c hv-tag -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-tag -s V -l version -d 'Print version'

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
complete -c hv-tag -f -a '(__hv_vms)'
complete -c hv-tag -l connect -x -a '(__hv_hosts)'
complete -c hv-tag -s c -x -a '(__hv_hosts)'
