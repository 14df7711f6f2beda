//! One error type for every command, so that a failure becomes the same
//! `{"code", "message"}` object in a result record and the same exit status
//! (docs/records.md) whichever command hit it. Codes are part of the interface:
//! scripts match on them, so they never change spelling.

use std::fmt;
use std::sync::Arc;

/// Stable, machine-readable failure classes. The string form is what users
/// match on in `.error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Bad flags or arguments.
    Usage,
    /// A stdin line that is neither a JSON object nor a name.
    MalformedInput,
    /// libvirt could not be reached at all.
    ConnectFailed,
    /// libvirt or polkit refused the operation.
    PermissionDenied,
    /// One of several hosts could not be reached: its items fail with
    /// this, the other hosts' go on.
    Unreachable,
    /// The named VM (or object) does not exist.
    NotFound,
    /// The VM is in a state that does not allow the operation.
    InvalidState,
    /// The item did not finish within its timeout.
    Timeout,
    /// The run was interrupted before this item started.
    Cancelled,
    /// The hypervisor does not support the operation.
    Unsupported,
    /// A local file operation failed.
    Io,
    /// Any other libvirt failure.
    Libvirt,
    /// The reader of stdout went away: not an error, the run just ends.
    BrokenPipe,
    /// Stored data failed its check: a chunk or image hash, a size, a frame.
    Corrupt,
    /// The identity given does not open the data (wrong key).
    DecryptFailed,
    /// Another process holds the lock the operation needs.
    Locked,
    /// A signature did not verify, or its key is unknown, expired or revoked.
    Untrusted,
    /// A download failed (HTTP status, connection dropped, timeout).
    Fetch,
    /// A check made before the action failed (hv-define's planned-VM
    /// checks); the record's `checks` say which, each with its fix.
    CheckFailed,
    /// A bug in hv: a worker or thread panicked. Never a success.
    Internal,
    /// Ctrl-C or SIGTERM stopped work that cannot be left half done; what
    /// it had written is removed. The process exits 128 + the signal.
    Interrupted,
}

impl Code {
    /// Every code, as docs/records.md lists them.
    pub const ALL: [Code; 21] = [
        Code::Usage,
        Code::MalformedInput,
        Code::ConnectFailed,
        Code::PermissionDenied,
        Code::Unreachable,
        Code::NotFound,
        Code::InvalidState,
        Code::Timeout,
        Code::Cancelled,
        Code::Unsupported,
        Code::Io,
        Code::Libvirt,
        Code::BrokenPipe,
        Code::Corrupt,
        Code::DecryptFailed,
        Code::Locked,
        Code::Untrusted,
        Code::Fetch,
        Code::CheckFailed,
        Code::Internal,
        Code::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Usage => "usage",
            Code::MalformedInput => "malformed_input",
            Code::ConnectFailed => "connect_failed",
            Code::PermissionDenied => "permission_denied",
            Code::Unreachable => "unreachable",
            Code::NotFound => "not_found",
            Code::InvalidState => "invalid_state",
            Code::Timeout => "timeout",
            Code::Cancelled => "cancelled",
            Code::Unsupported => "unsupported",
            Code::Io => "io_error",
            Code::Libvirt => "libvirt_error",
            Code::BrokenPipe => "broken_pipe",
            Code::Corrupt => "corrupt",
            Code::DecryptFailed => "decrypt_failed",
            Code::Locked => "locked",
            Code::Untrusted => "untrusted",
            Code::Fetch => "fetch_failed",
            Code::Interrupted => "interrupted",
            Code::CheckFailed => "check_failed",
            Code::Internal => "internal",
        }
    }

    /// The process exit status this class of failure maps to.
    pub fn exit_status(self) -> Exit {
        match self {
            Code::Usage | Code::MalformedInput => Exit::Usage,
            Code::ConnectFailed | Code::PermissionDenied => Exit::Unreachable,
            Code::BrokenPipe => Exit::Ok,
            _ => Exit::ItemFailed,
        }
    }
}

/// The exit statuses of docs/records.md, ordered by severity so that a run's
/// status is the maximum over everything that happened in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Exit {
    #[default]
    Ok = 0,
    ItemFailed = 1,
    Usage = 2,
    Unreachable = 3,
}

impl Exit {
    pub fn worst(self, other: Exit) -> Exit {
        self.max(other)
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    pub message: String,
    /// What the item had done before it failed (files removed, snapshots
    /// deleted): its record keeps these fields, so a partial outcome is
    /// never reported as nothing done.
    pub done: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// The error hv's message was made from (an I/O or libvirt error), for
    /// `std::error::Error::source`; its text is already in `message`.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two errors are the same failure when they say the same; where they came
/// from is not compared.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        (self.code, &self.message, &self.done) == (other.code, &other.message, &other.done)
    }
}

impl Eq for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        // Messages end up in one stderr line and one JSON field: keep them single-line.
        let message = message.into().replace('\n', "; ");
        Error {
            code,
            message,
            done: None,
            source: None,
        }
    }

    /// Keeps `source` as the cause (`std::error::Error::source`).
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Keeps `fields` (a typed record part) in the failed item's record.
    pub fn with_done(mut self, fields: &impl serde::Serialize) -> Self {
        self.done = Some(Box::new(crate::output::to_record(fields)));
        self
    }

    /// Adds `fields` to what the record says was done, keeping what is
    /// there (a command adds its own to what a shared step reported).
    pub fn and_done(mut self, fields: &impl serde::Serialize) -> Self {
        let done = self.done.get_or_insert_with(Default::default);
        done.extend(crate::output::to_record(fields));
        self
    }

    /// A bug in hv, said as one: what panicked and that it should be reported.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(Code::Internal, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::new(Code::Usage, message)
    }

    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        Error::new(Code::Io, format!("{what}: {err}")).caused_by(err)
    }

    /// A failed write to stdout; a closed pipe is turned into a quiet stop.
    pub fn output(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            Error::new(Code::BrokenPipe, "stdout closed")
        } else {
            Error::io("cannot write to stdout", err)
        }
    }

    /// Classifies a libvirt error; `context` says what was being done.
    pub fn libvirt(context: impl fmt::Display, err: &virt::error::Error) -> Self {
        Error::refused(context, err, &[])
    }

    /// A libvirt error from a call that libvirt's access control checks as
    /// `permissions` (polkit actions `org.libvirt.api.<permission>`): a
    /// denial names them, so the admin knows which rule to grant.
    pub fn libvirt_needing(
        context: impl fmt::Display,
        err: &virt::error::Error,
        permissions: &[&str],
    ) -> Self {
        Error::refused(context, err, permissions)
    }

    fn refused(context: impl fmt::Display, err: &virt::error::Error, permissions: &[&str]) -> Self {
        let denied = err
            .code()
            .unwrap_or(virt::error::ErrorNumber::InternalError)
            == virt::error::ErrorNumber::AccessDenied;
        let (needs, hint) = match (denied, permissions) {
            (false, _) => (String::new(), ""),
            (true, []) => (String::new(), ACCESS_HINT),
            (true, _) => {
                let actions: Vec<String> = permissions
                    .iter()
                    .map(|p| format!("org.libvirt.api.{p}"))
                    .collect();
                let plural = if actions.len() > 1 { "s" } else { "" };
                let needs = format!(" (needs polkit action{plural} {})", actions.join(" and "));
                (needs, ACCESS_HINT)
            }
        };
        Error::new(
            libvirt_code(err),
            format!("{context}: {}{needs}{hint}", err.message()),
        )
        .caused_by(err.clone())
    }

    pub fn exit_status(&self) -> Exit {
        self.code.exit_status()
    }
}

/// `{"code": …, "message": …}`: the `error` field of a failed record.
impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Error", 2)?;
        st.serialize_field("code", self.code.as_str())?;
        st.serialize_field("message", &self.message)?;
        st.end()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Appended to libvirt's bare "access denied": which role would allow it.
const ACCESS_HINT: &str = "; libvirt's polkit access control refused this to your user: with hv's rules (docs/deploy.md, Roles) group hv-operator may list, start, stop, snapshot and back up VMs, and only group hv-admin may remove, tag or change them";

/// The code a libvirt error gets: for a caller that needs to tell "no
/// such snapshot" from other failures before it words its own message.
pub fn libvirt_code(err: &virt::error::Error) -> Code {
    use virt::error::ErrorNumber as N;
    match err.code().unwrap_or(N::InternalError) {
        N::NoDomain
        | N::NoDomainSnapshot
        | N::NoDomainCheckpoint
        | N::NoStoragePool
        | N::NoStorageVolume
        | N::NoNetwork
        | N::NoDomainMetadata => Code::NotFound,
        N::OperationDenied
        | N::AccessDenied
        | N::AuthFailed
        | N::AuthCancelled
        | N::AuthUnavailable => Code::PermissionDenied,
        N::OperationInvalid => Code::InvalidState,
        N::NoSupport | N::ArgumentUnsupported | N::OperationUnsupported => Code::Unsupported,
        N::NoConnect | N::InvalidConn => Code::ConnectFailed,
        N::OperationTimeout | N::AgentUnresponsive => Code::Timeout,
        _ => Code::Libvirt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_design_scheme() {
        assert_eq!(Code::Usage.exit_status() as u8, 2);
        assert_eq!(Code::MalformedInput.exit_status() as u8, 2);
        assert_eq!(Code::ConnectFailed.exit_status() as u8, 3);
        assert_eq!(Code::PermissionDenied.exit_status() as u8, 3);
        assert_eq!(Code::NotFound.exit_status() as u8, 1);
        assert_eq!(Exit::ItemFailed.worst(Exit::Unreachable), Exit::Unreachable);
        assert_eq!(Exit::Usage.worst(Exit::ItemFailed), Exit::Usage);
    }

    /// The codes table of docs/records.md is the contract scripts read:
    /// it lists exactly the codes a record can carry (a pipe's
    /// `broken_pipe` never reaches one).
    #[test]
    fn docs_list_every_code_and_no_other() {
        let listed =
            hv_testbench::documented_fields("records.md", "| code | meaning | exit status |");
        let mut codes: Vec<&str> = Code::ALL
            .iter()
            .filter(|c| **c != Code::BrokenPipe)
            .map(|c| c.as_str())
            .collect();
        let mut sorted: Vec<&str> = listed.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        codes.sort_unstable();
        assert_eq!(sorted, codes, "docs/records.md's code table");
    }

    #[test]
    fn an_io_error_keeps_its_source() {
        use std::error::Error as _;
        let e = Error::io("x", std::io::Error::from(std::io::ErrorKind::NotFound));
        let source = e.source().expect("a source");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
        assert_eq!(
            e,
            Error::new(Code::Io, e.message.clone()),
            "compared by what it says"
        );
    }

    #[test]
    fn messages_stay_on_one_line() {
        let e = Error::new(Code::Libvirt, "first\nsecond");
        assert_eq!(e.message, "first; second");
        assert_eq!(serde_json::to_value(&e).unwrap()["code"], "libvirt_error");
    }
}
