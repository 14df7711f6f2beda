# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hv_backup_global_optspecs
    string join \n c/connect= hosts= connect-timeout= format= json audit-log= s3-endpoint= s3-region= s3-virtual-host h/help V/version
end

function __fish_hv_backup_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hv_backup_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hv_backup_using_subcommand
    set -l cmd (__fish_hv_backup_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hv-backup -n "__fish_hv_backup_needs_command" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -s V -l version -d 'Print version'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "init" -d 'Create a repository'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "create" -d 'Back up VMs'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "ls" -d 'List backups, newest first'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "list" -d 'List backups, newest first'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "verify" -d 'Check backups: every chunk present (fast) or every byte (--deep)'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "restore" -d 'Restore a backup\'s disks to new files, and optionally its domain'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "prune" -d 'Delete the backups a retention policy does not keep, then collect garbage'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "gc" -d 'Delete chunks no backup references, and leftovers of killed runs'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "sync" -d 'Copy backups to another repository (a replica), sending only what it lacks'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "mount" -d 'Show a backed-up disk\'s filesystem read-only in a directory, to copy files out'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "umount" -d 'Take down what hv-backup mount put on a directory'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "recover-key" -d 'Put the repository\'s chunk-id key back on this host, from the repository and the identity'
complete -c hv-backup -n "__fish_hv_backup_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l recipient -d 'An age public key (age1...) backups are encrypted to; repeatable' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l recipients-file -d 'A file of age public keys, one per line (# comments allowed)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l compression-level -d 'zstd level for chunks (1 fastest … 19 smallest)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l key-dir -d 'Where this host keeps each repository\'s chunk-id key' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand init" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l note -d 'A note stored (encrypted) with each backup' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l timeout -d 'Give up on a VM after this long (90, 90s, 5m, 1h30m; 0: never)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l workers -d 'Threads compressing and encrypting (or decrypting) chunks [default: one per CPU]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l scratch-dir -d 'Directory for backup-job sockets and scratch files (QEMU must be able to enter it)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l key-dir -d 'Where this host keeps each repository\'s chunk-id key' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l cache-dir -d 'Where this host keeps each disk\'s last chunk list, checkpoint and hash states (deleting it makes the next backup a full read)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l protected -d 'Mark the backups protected: prune keeps them'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l full -d 'Read every disk in full, even where a checkpoint allows an incremental read'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand create" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l vm -d 'Only backups of this VM (name or UUID); repeatable' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l fields -d 'Only these fields of each record, in this order (e.g. name,uuid); a record\'s host stays' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand ls" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l vm -d 'Only backups of this VM (name or UUID); repeatable' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l fields -d 'Only these fields of each record, in this order (e.g. name,uuid); a record\'s host stays' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand list" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l vm -d 'Only backups of this VM (name or UUID); repeatable' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -s i -l identity -d 'The age identity file that opens the backups (never the key itself on the command line)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l workers -d 'Threads compressing and encrypting (or decrypting) chunks [default: one per CPU]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l scratch-dir -d 'Directory for backup-job sockets and scratch files (QEMU must be able to enter it)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l deep -d 'Decrypt, decompress and re-hash every chunk and every disk image'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand verify" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -s i -l identity -d 'The age identity file that opens the backups (never the key itself on the command line)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l disk -d 'Restore only this disk (its target, e.g. vda)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -s o -l output -d 'Write the one disk here; `-` streams it raw to stdout' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l dir -d 'Directory for the restored disks, named <vm>-<target>.<format>; on the host -c names' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l disk-format -d 'Format of the restored disks: qcow2 or raw [default: each disk\'s original format]' -r -f -a "qcow2\t''
raw\t''"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l name -d 'Name for the restored domain and files [default: the backed-up VM\'s name]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l workers -d 'Threads compressing and encrypting (or decrypting) chunks [default: one per CPU]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l scratch-dir -d 'Directory for backup-job sockets and scratch files (QEMU must be able to enter it)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l define -d 'Define the domain again around the restored disks, with a new UUID and new MACs'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l force -d 'Replace existing files, and a shut-off domain of the same name'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand restore" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l vm -d 'Only backups of this VM (name or UUID); repeatable [default: every VM]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l keep-last -d 'Keep the N newest' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l keep-hourly -d 'Keep the newest of each of the last N hours that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l keep-daily -d 'Keep the newest of each of the last N days that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l keep-weekly -d 'Keep the newest of each of the last N ISO weeks that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l keep-monthly -d 'Keep the newest of each of the last N months that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l keep-yearly -d 'Keep the newest of each of the last N years that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -s n -l dry-run -d 'Show what would be deleted, delete nothing'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l no-gc -d 'Do not collect unreferenced chunks afterwards'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand prune" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -s n -l dry-run -d 'Count what would be deleted, delete nothing'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand gc" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l from -d 'The repository to copy from (a directory or s3://BUCKET/PREFIX)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l to -d 'The repository to copy to; a new or empty directory or prefix becomes a replica of --from' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l vm -d 'Only backups of this VM (name or UUID); repeatable' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l keep-last -d 'Keep the N newest' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l keep-hourly -d 'Keep the newest of each of the last N hours that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l keep-daily -d 'Keep the newest of each of the last N days that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l keep-weekly -d 'Keep the newest of each of the last N ISO weeks that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l keep-monthly -d 'Keep the newest of each of the last N months that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l keep-yearly -d 'Keep the newest of each of the last N years that have one' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l lock-wait -d 'How long to wait for another hv-backup run\'s lock on either repository (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l verify -d 'Check every chunk of each chosen backup at the destination, and send again what one it had lacks there'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l prune -d 'Afterwards, delete the destination\'s backups its --keep-* rules do not keep, then collect garbage there'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -s n -l dry-run -d 'Show what would be sent, write nothing'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand sync" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l disk -d 'The disk to show, by target (vda) [default: the backup\'s only disk]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l partition -d 'The partition whose filesystem to show [default: the disk\'s only filesystem]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l cache -d 'Memory for decrypted chunks (256M, 1G)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -s i -l identity -d 'The age identity file that opens the backups (never the key itself on the command line)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l workers -d 'Threads compressing and encrypting (or decrypting) chunks [default: one per CPU]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l scratch-dir -d 'Directory for backup-job sockets and scratch files (QEMU must be able to enter it)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l raw -d 'Show the disk images as read-only files in DIR instead, for your own tools'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand mount" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l workers -d 'Threads compressing and encrypting (or decrypting) chunks [default: one per CPU]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l scratch-dir -d 'Directory for backup-job sockets and scratch files (QEMU must be able to enter it)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand umount" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -s r -l repo -d 'The repository: a directory, or s3://BUCKET/PREFIX on object storage' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l lock-wait -d 'How long to wait for another hv-backup run\'s repository lock (90, 90s, 5m, 1h30m)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -s i -l identity -d 'The age identity file that opens the backups (never the key itself on the command line)' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l key-dir -d 'Where this host keeps each repository\'s chunk-id key' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l audit-log -d 'Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -s c -l connect -d 'libvirt URI, or a host\'s alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l hosts -d 'Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]' -r -F
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l connect-timeout -d 'How long to wait for each host to answer' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l s3-endpoint -d 'The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l s3-region -d 'The store\'s region (Garage: its s3_region, often "garage")' -r
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l json -d 'Shorthand for --format jsonl'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -l s3-virtual-host -d 'Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand recover-key" -s h -l help -d 'Print help'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "init" -d 'Create a repository'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "create" -d 'Back up VMs'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "ls" -d 'List backups, newest first'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "verify" -d 'Check backups: every chunk present (fast) or every byte (--deep)'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "restore" -d 'Restore a backup\'s disks to new files, and optionally its domain'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "prune" -d 'Delete the backups a retention policy does not keep, then collect garbage'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "gc" -d 'Delete chunks no backup references, and leftovers of killed runs'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "sync" -d 'Copy backups to another repository (a replica), sending only what it lacks'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "mount" -d 'Show a backed-up disk\'s filesystem read-only in a directory, to copy files out'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "umount" -d 'Take down what hv-backup mount put on a directory'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "recover-key" -d 'Put the repository\'s chunk-id key back on this host, from the repository and the identity'
complete -c hv-backup -n "__fish_hv_backup_using_subcommand help; and not __fish_seen_subcommand_from init create ls verify restore prune gc sync mount umount recover-key help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

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
complete -c hv-backup -n '__fish_seen_subcommand_from create' -f -a '(__hv_vms)'
complete -c hv-backup -n '__fish_seen_subcommand_from create' -l connect -x -a '(__hv_hosts)'
complete -c hv-backup -n '__fish_seen_subcommand_from create' -s c -x -a '(__hv_hosts)'
complete -c hv-backup -n '__fish_seen_subcommand_from verify' -f -a '(__hv_backups)'
complete -c hv-backup -n '__fish_seen_subcommand_from restore' -f -a '(__hv_backups)'
complete -c hv-backup -n '__fish_seen_subcommand_from restore' -l connect -x -a '(__hv_hosts)'
complete -c hv-backup -n '__fish_seen_subcommand_from restore' -s c -x -a '(__hv_hosts)'
complete -c hv-backup -n '__fish_seen_subcommand_from sync' -f -a '(__hv_backups)'
complete -c hv-backup -n '__fish_seen_subcommand_from sync' -l to -x -a '(__hv_hosts)'
