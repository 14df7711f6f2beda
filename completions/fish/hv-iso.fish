# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hv_iso_global_optspecs
    string join \n library= format= json audit-log= h/help V/version
end

function __fish_hv_iso_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hv_iso_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hv_iso_using_subcommand
    set -l cmd (__fish_hv_iso_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hv-iso -n "__fish_hv_iso_needs_command" -l library -d 'The library directory' -r -F
complete -c hv-iso -n "__fish_hv_iso_needs_command" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-iso -n "__fish_hv_iso_needs_command" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-iso -n "__fish_hv_iso_needs_command" -l json -d 'Shorthand for --format jsonl'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -s V -l version -d 'Print version'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -f -a "add" -d 'Fetch or copy an image, prove it, and admit it to the library'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -f -a "ls" -d 'List the library\'s images and how each was proven'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -f -a "list" -d 'List the library\'s images and how each was proven'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -f -a "verify" -d 'Re-hash images and compare with their sidecars (bit rot, tampering)'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -f -a "rm" -d 'Remove images from the library'
complete -c hv-iso -n "__fish_hv_iso_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l checksums -d 'The distributor\'s checksum file (SHA256SUMS, CHECKSUM, ...): a path or URL. With --keyring and a URL image, SHA256SUMS or SHA512SUMS next to the image is tried' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l signature -d 'The checksum file\'s detached OpenPGP signature (binary or ASCII-armoured); by default FILE.sign, .gpg, .asc or .sig next to it. Not needed for a clearsigned checksum file' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l keyring -d 'The public key(s) you trust to sign the checksum file: what gpg --export writes (binary or armoured), or a distribution\'s keyring such as /usr/share/keyrings/debian-role-keys.gpg' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l sha256 -d 'A SHA-256 you already have for the image; checked as well as the checksum file' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l name -d 'The library name [default: the image\'s file name]' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l retries -d 'How often a dropped download is resumed before giving up' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l max-size -d 'The largest image to fetch or copy (512M, 8G, 1.5T): a download that grows past it, or a server that says it is larger, is stopped and its partial file deleted' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l library -d 'The library directory' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l allow-unsigned -d 'Admit the image without a verified signature (recorded in its sidecar)'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l allow-weak -d 'Accept an MD5 or SHA-1 checksum, which a forger can match'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l force -d 'Replace an image of the same name'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -l json -d 'Shorthand for --format jsonl'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand add" -s h -l help -d 'Print help'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand ls" -l fields -d 'Only these fields of each record, in this order (e.g. name,uuid); a record\'s host stays' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand ls" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-iso -n "__fish_hv_iso_using_subcommand ls" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand ls" -l library -d 'The library directory' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand ls" -l json -d 'Shorthand for --format jsonl'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand ls" -s h -l help -d 'Print help'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand list" -l fields -d 'Only these fields of each record, in this order (e.g. name,uuid); a record\'s host stays' -r
complete -c hv-iso -n "__fish_hv_iso_using_subcommand list" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-iso -n "__fish_hv_iso_using_subcommand list" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand list" -l library -d 'The library directory' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand list" -l json -d 'Shorthand for --format jsonl'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand list" -s h -l help -d 'Print help'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand verify" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-iso -n "__fish_hv_iso_using_subcommand verify" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand verify" -l library -d 'The library directory' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand verify" -l json -d 'Shorthand for --format jsonl'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand verify" -s h -l help -d 'Print help'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand rm" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-iso -n "__fish_hv_iso_using_subcommand rm" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand rm" -l library -d 'The library directory' -r -F
complete -c hv-iso -n "__fish_hv_iso_using_subcommand rm" -l json -d 'Shorthand for --format jsonl'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand rm" -s h -l help -d 'Print help'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand help; and not __fish_seen_subcommand_from add ls verify rm help" -f -a "add" -d 'Fetch or copy an image, prove it, and admit it to the library'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand help; and not __fish_seen_subcommand_from add ls verify rm help" -f -a "ls" -d 'List the library\'s images and how each was proven'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand help; and not __fish_seen_subcommand_from add ls verify rm help" -f -a "verify" -d 'Re-hash images and compare with their sidecars (bit rot, tampering)'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand help; and not __fish_seen_subcommand_from add ls verify rm help" -f -a "rm" -d 'Remove images from the library'
complete -c hv-iso -n "__fish_hv_iso_using_subcommand help; and not __fish_seen_subcommand_from add ls verify rm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

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
complete -c hv-iso -n '__fish_seen_subcommand_from ls' -f -a '(__hv_isos)'
complete -c hv-iso -n '__fish_seen_subcommand_from verify' -f -a '(__hv_isos)'
complete -c hv-iso -n '__fish_seen_subcommand_from rm' -f -a '(__hv_isos)'
