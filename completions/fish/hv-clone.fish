complete -c hv-clone -l name -d 'The clone\'s name; with --count a pattern: {name} is the source\'s, {n} counts from 1 [default: {name}-clone, or {name}-{n} with --count]' -r
complete -c hv-clone -l count -d 'How many clones of each VM' -r
complete -c hv-clone -l dir -d 'Put the clones\' disks in DIR [default: beside each source disk]' -r -f -a "(__fish_complete_directories)"
complete -c hv-clone -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-clone -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-clone -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-clone -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-clone -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-clone -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-clone -l linked -d 'Make qcow2 overlays backed by the source\'s disks instead of copies (the source becomes a template)'
complete -c hv-clone -l no-tags -d 'Do not give the clones the source\'s tags'
complete -c hv-clone -s n -l dry-run -d 'Check and print each clone\'s XML in the `xml` field; make nothing'
complete -c hv-clone -l json -d 'Shorthand for --format jsonl'
complete -c hv-clone -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-clone -s V -l version -d 'Print version'

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
complete -c hv-clone -f -a '(__hv_vms --state shutoff)'
complete -c hv-clone -l connect -x -a '(__hv_hosts)'
complete -c hv-clone -s c -x -a '(__hv_hosts)'
