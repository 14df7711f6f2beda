complete -c hv-tag -s a -l add -d 'Add this tag (repeatable)' -r
complete -c hv-tag -s r -l remove -d 'Remove this tag (repeatable)' -r
complete -c hv-tag -l timeout -d 'Seconds each VM may take before it is reported as timed out' -r
complete -c hv-tag -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-tag -s c -l connect -d 'libvirt URI [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-tag -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-tag -l clear -d 'Remove every tag first (then --add applies)'
complete -c hv-tag -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-tag -l json -d 'Shorthand for --format jsonl'
complete -c hv-tag -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-tag -s V -l version -d 'Print version'
