complete -c hv-metrics -l textfile -d 'Write DIR/hv.prom atomically (temporary file, then rename) for node_exporter\'s --collector.textfile.directory, instead of printing' -r -F
complete -c hv-metrics -l listen -d 'Serve /metrics over HTTP on ADDR:PORT (a bare PORT binds 127.0.0.1) until SIGTERM or Ctrl-C, which exit with status 0' -r
complete -c hv-metrics -l repo -d 'An hv-backup repository whose backups to report: each VM\'s newest backup time, duration and sizes, and the free space of its filesystem (repeatable) [default: $HV_BACKUP_REPO when set]' -r -F
complete -c hv-metrics -l backup-results -d 'The saved output of the last hv-backup create run (hv-backup create ... > FILE): reports which VMs\' last backup failed' -r -F
complete -c hv-metrics -l iso-library -d 'An hv-iso library whose images to report: present, unsigned, and the outcome of the last hv-iso verify (which this does not repeat) [default: $HV_ISO_LIBRARY when set]' -r -F
complete -c hv-metrics -l health-state -d 'hv-health\'s state file: reports the repairs hv-health --fix made and the VMs it gave up on [default: $HV_HEALTH_STATE when set]' -r -F
complete -c hv-metrics -l format -d 'prometheus (the text exposition format), or one record per series: jsonl, json, table or csv' -r -f -a "prometheus\t''
jsonl\t''
json\t''
table\t''
csv\t''"
complete -c hv-metrics -l host-label -d 'Add host="NAME" to every series, for one Prometheus job or textfile collection over several hosts [default: none: Prometheus\' instance label names the host]' -r
complete -c hv-metrics -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-metrics -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-metrics -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-metrics -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-metrics -s V -l version -d 'Print version'

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
complete -c hv-metrics -l connect -x -a '(__hv_hosts)'
complete -c hv-metrics -s c -x -a '(__hv_hosts)'
