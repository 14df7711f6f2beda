complete -c hv-rm -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-rm -s c -l connect -d 'libvirt URI [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-rm -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-rm -l force -d 'Force running VMs off first instead of refusing them'
complete -c hv-rm -l remove-storage -d 'Also delete the VMs\' disk files (see DESCRIPTION for what is kept)'
complete -c hv-rm -s y -l yes -d 'Do not ask; required when stdin is not a terminal'
complete -c hv-rm -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-rm -l json -d 'Shorthand for --format jsonl'
complete -c hv-rm -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-rm -s V -l version -d 'Print version'
