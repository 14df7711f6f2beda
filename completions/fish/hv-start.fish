complete -c hv-start -l wait -d 'Wait until each VM is running, or with --wait=agent until its guest agent answers' -r -f -a "running\t'Until libvirt reports the VM running'
agent\t'Until the QEMU guest agent answers a ping'"
complete -c hv-start -l timeout -d 'Seconds each VM may take to start (and to answer, with --wait)' -r
complete -c hv-start -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-start -s c -l connect -d 'libvirt URI [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-start -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-start -l paused -d 'Start them with their CPUs paused (a paused VM stays paused)'
complete -c hv-start -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-start -l json -d 'Shorthand for --format jsonl'
complete -c hv-start -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-start -s V -l version -d 'Print version'
