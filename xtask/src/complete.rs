//! What clap_complete cannot write: completions that ask hv itself, when
//! Tab is pressed, which VMs, snapshots, backups, ISO images, networks and
//! pools there are (as virsh's completion asks libvirt), host aliases read
//! from the hosts file, and repairs of its output: of bash's for commands
//! named with a hyphen, and of zsh's rest arguments, which hid every option
//! after a VM name.
//!
//! clap_complete 4.5 names a subcommand's state `hv__snap__subcmd__create`
//! but its case label `hv__subcmd__snap__subcmd__create`, so nothing after
//! `hv-snap create` completes; the labels are rewritten to match.

use clap::Command;

/// Where the words of a positional argument or a flag's value come from.
#[derive(Clone, Copy)]
enum Source {
    /// VMs, optionally in one state (`hv-ls --state STATE`).
    Vms(Option<&'static str>),
    /// Snapshots of the VMs named on the line.
    Snapshots,
    /// Backups in the repository named on the line or by HV_BACKUP_REPO.
    Backups,
    /// Images of the hv-iso library named on the line (`--iso-library`,
    /// hv-iso's `--library`), else HV_ISO_LIBRARY or hv-iso's default.
    Isos,
    /// The same, or a file (hv-preflight's `--iso` takes a path too).
    IsosOrFiles,
    /// The host's libvirt networks.
    Networks,
    /// The host's storage pools.
    Pools,
}

impl Source {
    /// A bash command line printing one candidate per line.
    fn bash(self) -> &'static str {
        match self {
            Source::Vms(None) => "_hv_vms",
            Source::Vms(Some("shutoff")) => "_hv_vms --state shutoff",
            Source::Vms(Some(_)) => "_hv_vms --state running",
            Source::Snapshots => "_hv_snapshots",
            Source::Backups => "_hv_backups",
            Source::Isos | Source::IsosOrFiles => "_hv_isos",
            Source::Networks => "_hv_names hv-net ls",
            Source::Pools => "_hv_names hv-pool ls",
        }
    }

    /// The zsh function that adds the candidates (`compadd "$@"`).
    fn zsh(self) -> &'static str {
        match self {
            Source::Vms(None) => "_hv_vms_any",
            Source::Vms(Some("shutoff")) => "_hv_vms_shutoff",
            Source::Vms(Some(_)) => "_hv_vms_running",
            Source::Snapshots => "_hv_snapshots",
            Source::Backups => "_hv_backups",
            Source::Isos => "_hv_isos",
            Source::IsosOrFiles => "_hv_isos_or_files",
            Source::Networks => "_hv_networks",
            Source::Pools => "_hv_pools",
        }
    }

    /// The same, for fish.
    fn fish(self) -> &'static str {
        match self {
            Source::Vms(None) => "__hv_vms",
            Source::Vms(Some("shutoff")) => "__hv_vms --state shutoff",
            Source::Vms(Some(_)) => "__hv_vms --state running",
            Source::Snapshots => "__hv_snapshots",
            Source::Backups => "__hv_backups",
            Source::Isos | Source::IsosOrFiles => "__hv_isos",
            Source::Networks => "__hv_names hv-net ls",
            Source::Pools => "__hv_names hv-pool ls",
        }
    }

    /// The flag whose value comes from this source, if any.
    fn of_flag(long: &str) -> Option<Source> {
        match long {
            "snapshot" => Some(Source::Snapshots),
            "cdrom" => Some(Source::Isos),
            "iso" => Some(Source::IsosOrFiles),
            "pool" => Some(Source::Pools),
            "network" => Some(Source::Networks),
            _ => None,
        }
    }
}

/// What the positional arguments of `path` (a command and its
/// subcommand, if any) complete to.
fn positional(path: &[&str]) -> Option<Source> {
    match path {
        ["hv-start" | "hv-clone"] => Some(Source::Vms(Some("shutoff"))),
        ["hv-stop" | "hv-console"] => Some(Source::Vms(Some("running"))),
        ["hv-backup", "verify" | "restore" | "sync"] => Some(Source::Backups),
        ["hv-iso", "ls" | "verify" | "rm"] => Some(Source::Isos),
        ["hv-net", "ls"] => Some(Source::Networks),
        ["hv-pool", "ls"] => Some(Source::Pools),
        ["hv-metrics" | "hv-iso" | "hv-define" | "hv-net" | "hv-pool", ..] => None,
        ["hv-backup", sub] if *sub != "create" => None,
        _ => Some(Source::Vms(None)),
    }
}

/// One command or subcommand: its path, its value-taking flags, and what
/// its positionals and some flags' values (`--snapshot`, `--cdrom`,
/// `--pool`) complete to.
struct Site {
    path: Vec<String>,
    valued: Vec<String>,
    positional: Option<Source>,
    /// Long flags (without `--`) whose values come from a source.
    sourced: Vec<(String, Source)>,
    /// The flags that name a host (`-c`, `--connect`, `--to`): they
    /// complete to the aliases of the hosts file.
    host_flags: Vec<String>,
}

fn sites(command: &Command) -> Vec<Site> {
    let name = command.get_name().to_owned();
    let mut out = Vec::new();
    let mut visit = |cmd: &Command, path: Vec<String>| {
        let has_positional = cmd.get_positionals().next().is_some();
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut valued = Vec::new();
        for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
            // A value after `=` only (`--wait=agent`): the next word is not its value.
            if !arg.get_action().takes_values() || arg.is_require_equals_set() {
                continue;
            }
            valued.extend(arg.get_long().map(|l| format!("--{l}")));
            valued.extend(arg.get_short().map(|s| format!("-{s}")));
        }
        out.push(Site {
            positional: if has_positional {
                positional(&refs)
            } else {
                None
            },
            sourced: cmd
                .get_arguments()
                .filter(|a| !a.is_positional() && a.get_action().takes_values())
                .filter_map(|a| {
                    let long = a.get_long()?;
                    Some((long.to_owned(), Source::of_flag(long)?))
                })
                .collect(),
            host_flags: cmd
                .get_arguments()
                .filter(|a| matches!(a.get_long(), Some("connect" | "to")))
                .flat_map(|a| {
                    a.get_long()
                        .map(|l| format!("--{l}"))
                        .into_iter()
                        .chain(a.get_short().map(|c| format!("-{c}")))
                })
                .collect(),
            valued,
            path,
        });
    };
    if command.has_subcommands() {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            visit(sub, vec![name.clone(), sub.get_name().to_owned()]);
        }
    } else {
        visit(command, vec![name]);
    }
    out
}

const BASH_HELPERS: &str = r#"
# Asked of hv when Tab is pressed: VM names, snapshot names, backup ids.
# A record's fields come in a fixed order, `name` first.
_hv_vms() {
    hv-ls --format jsonl "$@" </dev/null 2>/dev/null |
        sed -n 's/^{"name":"\(\([^"\\]\|\\.\)*\)".*/\1/p'
}
_hv_snapshots() {
    local w vms=()
    for w in "${COMP_WORDS[@]:2:COMP_CWORD-2}"; do [[ $w == -* ]] || vms+=("$w"); done
    hv-snap ls --format jsonl "${vms[@]}" </dev/null 2>/dev/null |
        sed -n 's/.*"snapshot":"\(\([^"\\]\|\\.\)*\)".*/\1/p' | sort -u
}
_hv_backups() {
    local i repo=${HV_BACKUP_REPO-}
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in --repo | -r) repo=${COMP_WORDS[i + 1]} ;; esac
    done
    [[ -n $repo ]] || return 0
    hv-backup ls --repo "$repo" --format jsonl </dev/null 2>/dev/null |
        sed -n 's/.*"id":"\([0-9TZa-f-]*\)".*/\1/p'
}
# The names an hv listing prints (hv-iso ls, hv-net ls, hv-pool ls).
_hv_names() {
    "$@" --format jsonl </dev/null 2>/dev/null |
        sed -n 's/^{"name":"\(\([^"\\]\|\\.\)*\)".*/\1/p'
}
# ISO images of the library named on the line, else hv-iso's own default.
_hv_isos() {
    local i dir=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --iso-library | --library)
                dir=${COMP_WORDS[i + 1]}
                # --iso-library=DIR: bash splits the word at the `=`.
                [[ $dir == = ]] && dir=${COMP_WORDS[i + 2]}
                ;;
        esac
    done
    # The word as typed: without its quotes, with ~ for $HOME.
    dir=${dir//\'/}
    dir=${dir//\"/}
    dir=${dir/#\~/$HOME}
    if [[ -n $dir ]]; then
        _hv_names hv-iso --library "$dir" ls
    else
        _hv_names hv-iso ls
    fi
}
# The aliases of the hosts file: --hosts on the line, else HV_HOSTS.
_hv_hosts() {
    local i file=${HV_HOSTS-}
    for ((i = 1; i < COMP_CWORD; i++)); do
        [[ ${COMP_WORDS[i]} == --hosts ]] && file=${COMP_WORDS[i + 1]}
    done
    # The word as typed: without its quotes, with ~ for $HOME.
    file=${file//\'/}
    file=${file//\"/}
    file=${file/#\~/$HOME}
    [[ -f $file && -r $file ]] || return 0
    awk '$1 !~ /^#/ && NF >= 2 {print $1}' "$file"
}
# Offers the lines on stdin that start with the word being completed (fed
# with < <(…): in a pipe it would fill a subshell's COMPREPLY).
_hv_offer() {
    local line cur=${COMP_WORDS[COMP_CWORD]}
    COMPREPLY=()
    while IFS= read -r line; do
        [[ -n $line && $line == "$cur"* ]] && COMPREPLY+=("$(printf '%q' "$line")")
    done
}
"#;

/// The bash file clap wrote for `command`, repaired, with dynamic
/// completion around it.
pub fn bash(command: &Command, generated: &str) -> String {
    let name = command.get_name();
    let func = format!("_{}", name.replace('-', "__"));
    let mut text = generated.replace("hv__subcmd__", "hv__");
    // `--wait` takes its value after `=` only (a word after a space is a
    // VM): offer the two spellings as words, not as a value to follow.
    if text.contains("--wait)") {
        text = text.replace(" --wait ", " --wait --wait=running --wait=agent ");
        let start = text
            .find("                --wait)")
            .expect("the --wait case");
        let end = start + text[start..].find(";;\n").expect("its end") + 3;
        text.replace_range(start..end, "");
    }
    // clap registers its function; ours wraps it.
    let wrapper = format!("{func}_dynamic");
    text = text.replace(
        &format!("complete -F {func} "),
        &format!("complete -F {wrapper} "),
    );
    text.push_str(BASH_HELPERS);
    text.push_str(&format!("{wrapper}() {{\n    {func} \"$@\"\n"));
    text.push_str("    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n");
    text.push_str("    [[ $cur == -* ]] && return 0\n");
    let depth = if command.has_subcommands() { 2 } else { 1 };
    if depth == 2 {
        text.push_str("    (( COMP_CWORD >= 2 )) || return 0\n");
    }
    text.push_str(&format!(
        "    case \"${{COMP_WORDS[@]:1:{}}}\" in\n",
        depth - 1
    ));
    for site in sites(command) {
        let label = if depth == 2 {
            site.path[1].clone()
        } else {
            "*".into()
        };
        text.push_str(&format!("        {label})\n            case $prev in\n"));
        for (long, source) in &site.sourced {
            text.push_str(&format!(
                "                --{long}) _hv_offer < <({}) ;;\n",
                source.bash()
            ));
        }
        if !site.host_flags.is_empty() {
            text.push_str(&format!(
                "                {}) _hv_offer < <(_hv_hosts) ;;\n",
                site.host_flags.join(" | ")
            ));
        }
        if !site.valued.is_empty() {
            text.push_str(&format!(
                "                {}) ;;\n",
                site.valued.join(" | ")
            ));
        }
        if let Some(source) = site.positional {
            text.push_str(&format!(
                "                *) _hv_offer < <({}) ;;\n",
                source.bash()
            ));
        }
        text.push_str("            esac ;;\n");
    }
    text.push_str("    esac\n    return 0\n}\n");
    text
}

const FISH_HELPERS: &str = r#"
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
"#;

/// The fish file clap wrote, with dynamic completion added.
pub fn fish(command: &Command, generated: &str) -> String {
    let name = command.get_name();
    // As in bash: `--wait` is a switch here, its values follow `=`.
    let mut text = String::new();
    // The value lines of --wait's multi-line `-a "…"`, up to its closing quote.
    let mut in_wait = false;
    for line in generated.lines() {
        if in_wait {
            in_wait = !line.ends_with('"');
            continue;
        }
        if line.starts_with(&format!("complete -c {name} -l wait ")) {
            in_wait = line.contains(" -a \"") && !line.ends_with('"');
            let desc = line
                .split(" -d ")
                .nth(1)
                .and_then(|d| d.split(" -r").next());
            text.push_str(&format!(
                "complete -c {name} -l wait -d {}\n",
                desc.unwrap_or("'Wait'")
            ));
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(FISH_HELPERS);
    for site in sites(command) {
        let cond = match site.path.get(1) {
            Some(sub) => format!(" -n '__fish_seen_subcommand_from {sub}'"),
            None => String::new(),
        };
        if let Some(source) = site.positional {
            text.push_str(&format!(
                "complete -c {name}{cond} -f -a '({})'\n",
                source.fish()
            ));
        }
        for (long, source) in &site.sourced {
            text.push_str(&format!(
                "complete -c {name}{cond} -l {long} -x -a '({})'\n",
                source.fish()
            ));
        }
        for flag in &site.host_flags {
            let spec = match flag.strip_prefix("--") {
                Some(long) => format!("-l {long}"),
                None => format!("-s {}", &flag[1..]),
            };
            text.push_str(&format!(
                "complete -c {name}{cond} {spec} -x -a '(__hv_hosts)'\n"
            ));
        }
    }
    text
}

const ZSH_HELPERS: &str = r#"
# Asked of hv when Tab is pressed: VM names, snapshot names, backup ids.
# A record's fields come in a fixed order, `name` first. _arguments calls
# these with compadd's options, passed on as "$@".
(( $+functions[_hv_vms] )) ||
_hv_vms() {
    local -a filter vms
    [[ -n $1 ]] && filter=(--state $1)
    shift
    vms=(${(f)"$(hv-ls --format jsonl $filter </dev/null 2>/dev/null |
        sed -n 's/^{"name":"\(\([^"\\]\|\\.\)*\)".*/\1/p')"})
    compadd "$@" -a vms
}
(( $+functions[_hv_vms_any] )) || _hv_vms_any() { _hv_vms '' "$@" }
(( $+functions[_hv_vms_shutoff] )) || _hv_vms_shutoff() { _hv_vms shutoff "$@" }
(( $+functions[_hv_vms_running] )) || _hv_vms_running() { _hv_vms running "$@" }
(( $+functions[_hv_snapshots] )) ||
_hv_snapshots() {
    local -a vms snaps
    vms=(${${words[2,CURRENT-1]}:#-*})
    snaps=(${(f)"$(hv-snap ls --format jsonl $vms </dev/null 2>/dev/null |
        sed -n 's/.*"snapshot":"\(\([^"\\]\|\\.\)*\)".*/\1/p' | sort -u)"})
    compadd "$@" -a snaps
}
(( $+functions[_hv_names] )) ||
_hv_names() {
    local -a names
    names=(${(f)"$($1 $2 --format jsonl </dev/null 2>/dev/null |
        sed -n 's/^{"name":"\(\([^"\\]\|\\.\)*\)".*/\1/p')"})
    shift 2
    compadd "$@" -a names
}
(( $+functions[_hv_isos] )) ||
_hv_isos() {
    local i dir
    local -a lib names
    for (( i = 1; i < CURRENT; i++ )); do
        case $words[i] in
            (--iso-library|--library) dir=${(Q)words[i+1]} ;;
            (--iso-library=*|--library=*) dir=${(Q)words[i]#*=} ;;
        esac
    done
    [[ -n $dir ]] && lib=(--library ${~dir})
    names=(${(f)"$(hv-iso $lib ls --format jsonl </dev/null 2>/dev/null |
        sed -n 's/^{"name":"\(\([^"\\]\|\\.\)*\)".*/\1/p')"})
    compadd "$@" -a names
}
(( $+functions[_hv_isos_or_files] )) ||
_hv_isos_or_files() { _alternative 'isos:ISO:_hv_isos' 'files:file:_files' }
(( $+functions[_hv_networks] )) || _hv_networks() { _hv_names hv-net ls "$@" }
(( $+functions[_hv_pools] )) || _hv_pools() { _hv_names hv-pool ls "$@" }
(( $+functions[_hv_hosts] )) ||
_hv_hosts() {
    local file=$HV_HOSTS i
    local -a aliases
    for (( i = 1; i < CURRENT; i++ )); do
        case $words[i] in
            (--hosts) file=${(Q)words[i+1]} ;;
            (--hosts=*) file=${(Q)words[i]#--hosts=} ;;
        esac
    done
    [[ -f ${~file} && -r ${~file} ]] || return 1
    aliases=(${(f)"$(awk '$1 !~ /^#/ && NF >= 2 {print $1}' ${~file})"})
    compadd "$@" -a aliases
}
(( $+functions[_hv_backups] )) ||
_hv_backups() {
    local repo=$HV_BACKUP_REPO i
    local -a ids
    for (( i = 1; i < CURRENT; i++ )); do
        case $words[i] in
            (--repo|-r) repo=$words[i+1] ;;
            (--repo=*) repo=${words[i]#--repo=} ;;
        esac
    done
    [[ -n $repo ]] || return 1
    ids=(${(f)"$(hv-backup ls --repo ${~repo} --format jsonl </dev/null 2>/dev/null |
        sed -n 's/.*"id":"\([0-9TZa-f-]*\)".*/\1/p')"})
    compadd "$@" -a ids
}
"#;

/// Whether `line` of clap's zsh output specifies the option `flag` (`-c`,
/// `--cdrom`): `'FLAG=[`, repeatable `'*FLAG=[`, or with the options it
/// excludes first, `'(--eject)FLAG=[` or `'(--fix)*FLAG=[`; `+[` for a value
/// in the same word.
fn zsh_option_is(line: &str, flag: &str) -> bool {
    let Some(rest) = line.strip_prefix('\'') else {
        return false;
    };
    let rest = rest.strip_prefix('*').unwrap_or(rest);
    let rest = match rest.strip_prefix('(') {
        Some(group) => match group.split_once(')') {
            Some((_, after)) => after,
            None => return false,
        },
        None => rest,
    };
    // clap writes the exclusion group before the `*` of a repeatable one.
    let rest = rest.strip_prefix('*').unwrap_or(rest);
    rest.strip_prefix(flag)
        .is_some_and(|r| r.starts_with("=[") || r.starts_with("+["))
}

/// The zsh file clap wrote, with positionals and the values of flags such
/// as `--snapshot` and `--cdrom` completed by asking hv.
pub fn zsh(command: &Command, generated: &str) -> String {
    let name = command.get_name();
    let sites = sites(command);
    let site_of = |sub: Option<&str>| {
        sites
            .iter()
            .find(|s| s.path.get(1).map(String::as_str) == sub)
    };
    let mut sub: Option<String> = None;
    let mut text = String::new();
    for line in generated.lines() {
        let trimmed = line.trim();
        if command.has_subcommands()
            && trimmed.starts_with('(')
            && trimmed.ends_with(')')
            && !trimmed.contains(' ')
        {
            sub = Some(trimmed[1..trimmed.len() - 1].to_owned());
        }
        let site = site_of(sub.as_deref());
        let mut line = line.to_owned();
        let positional =
            line.starts_with("'*::") || (line.starts_with("':") && !line.starts_with("'::"));
        if let Some(site) = site {
            if positional && line.ends_with(":_default' \\") {
                if let Some(source) = site.positional {
                    line = line.replace(":_default' \\", &format!(":{}' \\", source.zsh()));
                }
            }
            let names_host = site.host_flags.iter().any(|f| zsh_option_is(&line, f));
            if names_host && line.ends_with(":_default' \\") {
                line = line.replace(":_default' \\", ":_hv_hosts' \\");
            }
            for (long, source) in &site.sourced {
                if zsh_option_is(&line, &format!("--{long}")) {
                    line = line.replace(":_default' \\", &format!(":{}' \\", source.zsh()));
                }
            }
        }
        // clap_complete writes a rest argument as `'*::`, after which zsh
        // completes no option's value once a positional is on the line
        // (`hv-set web1 --cdrom <Tab>`); `'*:` keeps them. (`'*:::` hands
        // the line to a subcommand and stays.)
        let trimmed = line.trim_start();
        if trimmed.starts_with("'*::") && !trimmed.starts_with("'*:::") {
            line = line.replacen("'*::", "'*:", 1);
        }
        text.push_str(&line);
        text.push('\n');
        if line == "autoload -U is-at-least" {
            text.push_str(ZSH_HELPERS);
        }
    }
    debug_assert!(text.contains(&format!("#compdef {name}")));
    text
}
