# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hv_net_global_optspecs
    string join \n h/help V/version
end

function __fish_hv_net_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hv_net_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hv_net_using_subcommand
    set -l cmd (__fish_hv_net_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hv-net -n "__fish_hv_net_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-net -n "__fish_hv_net_needs_command" -s V -l version -d 'Print version'
complete -c hv-net -n "__fish_hv_net_needs_command" -f -a "ls" -d 'List the host\'s networks and their leases as records'
complete -c hv-net -n "__fish_hv_net_needs_command" -f -a "list" -d 'List the host\'s networks and their leases as records'
complete -c hv-net -n "__fish_hv_net_needs_command" -f -a "define" -d 'Define networks from JSON specs, all or nothing each'
complete -c hv-net -n "__fish_hv_net_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -l fields -d 'Only these fields of each record, in this order (e.g. name,uuid); a record\'s host stays' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -l json -d 'Shorthand for --format jsonl'
complete -c hv-net -n "__fish_hv_net_using_subcommand ls" -s h -l help -d 'Print help'
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -l fields -d 'Only these fields of each record, in this order (e.g. name,uuid); a record\'s host stays' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -l json -d 'Shorthand for --format jsonl'
complete -c hv-net -n "__fish_hv_net_using_subcommand list" -s h -l help -d 'Print help'
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -l keep-existing -d 'An existing one of the same name is left as it is (ok, changed false) rather than refused: for a host\'s configuration applied at every boot'
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -s n -l dry-run -d 'Print each network\'s XML, make nothing'
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -l json -d 'Shorthand for --format jsonl'
complete -c hv-net -n "__fish_hv_net_using_subcommand define" -s h -l help -d 'Print help'
complete -c hv-net -n "__fish_hv_net_using_subcommand help; and not __fish_seen_subcommand_from ls define help" -f -a "ls" -d 'List the host\'s networks and their leases as records'
complete -c hv-net -n "__fish_hv_net_using_subcommand help; and not __fish_seen_subcommand_from ls define help" -f -a "define" -d 'Define networks from JSON specs, all or nothing each'
complete -c hv-net -n "__fish_hv_net_using_subcommand help; and not __fish_seen_subcommand_from ls define help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

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
complete -c hv-net -n '__fish_seen_subcommand_from ls' -f -a '(__hv_names hv-net ls)'
complete -c hv-net -n '__fish_seen_subcommand_from ls' -l connect -x -a '(__hv_hosts)'
complete -c hv-net -n '__fish_seen_subcommand_from ls' -s c -x -a '(__hv_hosts)'
complete -c hv-net -n '__fish_seen_subcommand_from define' -l connect -x -a '(__hv_hosts)'
complete -c hv-net -n '__fish_seen_subcommand_from define' -s c -x -a '(__hv_hosts)'
