//! The man page sections clap cannot derive: exit statuses, environment and
//! examples. Every command shares the first two word for word (docs/records.md
//! promises one scheme), and states its own examples beside its `Cli`.

/// What a command adds to its generated man page.
pub struct Manual {
    /// (what it does, the command line)
    pub examples: &'static [(&'static str, &'static str)],
    /// Extra paragraphs for DESCRIPTION-like notes, rendered under NOTES.
    pub notes: &'static [&'static str],
    /// EXIT STATUS: the shared scheme, in the words that fit the command.
    pub exit_status: &'static [(&'static str, &'static str)],
    /// ENVIRONMENT: the variables the command reads.
    pub environment: &'static [(&'static str, &'static str)],
}

pub const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Every item succeeded (a closed output pipe also ends the run with 0)."),
    ("1", "The command ran, and one or more items failed; each failure has its own record with \"ok\": false."),
    ("2", "Usage error, or malformed input: a stdin line that is neither a JSON object with \"name\" or \"uuid\" nor a VM name. The other lines are still processed."),
    ("3", "The hypervisor could not be reached, or permission was denied; over several hosts, no host could be reached (one unreachable host among others is a record with code unreachable and status 1)."),
];

pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("HV_CONNECT", "libvirt URI used when neither -c/--connect nor a hosts file is given."),
    ("HV_HOSTS", "A hosts file (an alias and a libvirt URI per line, # comments) used when neither -c nor --hosts is given: the command then works on every host in it, and its records carry host."),
    ("LIBVIRT_DEFAULT_URI", "libvirt URI used when neither -c nor HV_CONNECT is set; without any, libvirt picks its own default."),
];
