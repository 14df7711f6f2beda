complete -c hv-stop -l mode -d 'How to ask the guest: acpi or agent' -r -f -a "acpi\t'Press the virtual power button'
agent\t'Ask the QEMU guest agent'"
complete -c hv-stop -l timeout -d 'Seconds each guest gets to shut down before it is forced off' -r
complete -c hv-stop -s j -l jobs -d 'How many VMs to work on at once' -r
complete -c hv-stop -s c -l connect -d 'libvirt URI [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt\'s default]' -r
complete -c hv-stop -l format -d 'Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]' -r -f -a "jsonl\t'One JSON object per line (default when stdout is not a terminal)'
json\t'One JSON array of all records'
table\t'Aligned columns for people (default on a terminal)'
csv\t'Comma-separated values with a header; nested values as JSON text'"
complete -c hv-stop -l no-force -d 'Leave a guest running when it does not stop in time (reported as a timeout)'
complete -c hv-stop -l force -d 'Force off at once, like pulling the plug: no graceful attempt'
complete -c hv-stop -l reboot -d 'Reboot instead (graceful; with --force a hard reset)'
complete -c hv-stop -l pause -d 'Pause (suspend) the VMs\' CPUs instead'
complete -c hv-stop -s n -l dry-run -d 'Show what would be done, change nothing'
complete -c hv-stop -l json -d 'Shorthand for --format jsonl'
complete -c hv-stop -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hv-stop -s V -l version -d 'Print version'
