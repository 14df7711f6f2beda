//! Opening libvirt the same way in every command, so `-c`, `HV_CONNECT` and
//! `LIBVIRT_DEFAULT_URI` mean the same everywhere and a refused connection
//! always says which URI was tried and what usually fixes it.

use crate::error::{Code, Error, Result};
use virt::connect::Connect;

/// libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release.
pub fn version_text(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1_000 % 1_000, v % 1_000)
}

/// Where the URI came from, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriSource {
    Flag,
    HvConnect,
    LibvirtDefault,
    LibvirtBuiltin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: Option<String>,
    pub source: UriSource,
}

/// `-c/--connect`, else `HV_CONNECT`, else `LIBVIRT_DEFAULT_URI`, else
/// libvirt's own default (`None`).
pub fn resolve(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Target {
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    if let Some(uri) = flag.filter(|s| !s.is_empty()) {
        return Target {
            uri: Some(uri.to_owned()),
            source: UriSource::Flag,
        };
    }
    if let Some(uri) = non_empty(env("HV_CONNECT")) {
        return Target {
            uri: Some(uri),
            source: UriSource::HvConnect,
        };
    }
    if let Some(uri) = non_empty(env("LIBVIRT_DEFAULT_URI")) {
        return Target {
            uri: Some(uri),
            source: UriSource::LibvirtDefault,
        };
    }
    Target {
        uri: None,
        source: UriSource::LibvirtBuiltin,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Opens the connection. libvirt's default error handler prints to stderr
/// on its own; it is silenced so that each failure is reported once, by us.
pub fn open(target: &Target, access: Access) -> Result<Connect> {
    virt::error::clear_error_callback();
    let uri = target.uri.as_deref();
    let opened = match access {
        Access::ReadOnly => Connect::open_read_only(uri),
        Access::ReadWrite => Connect::open(uri),
    };
    opened.map_err(|e| connect_error(target, &e))
}

fn connect_error(target: &Target, err: &virt::error::Error) -> Error {
    let shown = match (&target.uri, &target.source) {
        (Some(uri), UriSource::Flag) => uri.clone(),
        (Some(uri), UriSource::HvConnect) => format!("{uri} (from HV_CONNECT)"),
        (Some(uri), _) => format!("{uri} (from LIBVIRT_DEFAULT_URI)"),
        (None, _) => "libvirt's default URI".to_owned(),
    };
    let message = err.message();
    // libvirt authorises socket clients with polkit over the system D-Bus.
    let no_bus = message.contains("system bus");
    let denied = no_bus || is_denied(message);
    let hint = if no_bus {
        "libvirt checks this socket with polkit over D-Bus, which is not running: start dbus and polkitd, or set auth_unix_ro/auth_unix_rw in libvirtd.conf"
    } else if denied {
        "check that your user may use libvirt (group libvirt, or a polkit rule for org.libvirt.unix.manage), or use -c qemu:///session"
    } else if message.contains("No such file") || message.contains("Connection refused") {
        "is libvirtd running? start it with `systemctl start libvirtd` (or `libvirtd -d` without systemd)"
    } else {
        "check the URI given with -c, HV_CONNECT or LIBVIRT_DEFAULT_URI"
    };
    let code = if denied {
        Code::PermissionDenied
    } else {
        Code::ConnectFailed
    };
    Error::new(
        code,
        format!("cannot connect to {shown}: {message}; {hint}"),
    )
}

fn is_denied(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "permission denied",
        "authentication",
        "polkit",
        "access denied",
        "not authorized",
    ]
    .iter()
    .any(|w| m.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flag_beats_environment() {
        let t = resolve(
            Some("test:///default"),
            env(&[("HV_CONNECT", "qemu:///system")]),
        );
        assert_eq!(t.uri.as_deref(), Some("test:///default"));
        assert_eq!(t.source, UriSource::Flag);
    }

    #[test]
    fn hv_connect_beats_libvirt_default() {
        let e = env(&[("HV_CONNECT", "a:///"), ("LIBVIRT_DEFAULT_URI", "b:///")]);
        assert_eq!(resolve(None, e).uri.as_deref(), Some("a:///"));
        let e = env(&[("HV_CONNECT", ""), ("LIBVIRT_DEFAULT_URI", "b:///")]);
        assert_eq!(resolve(None, e).source, UriSource::LibvirtDefault);
        assert_eq!(resolve(None, env(&[])).uri, None);
    }

    #[test]
    fn refused_connection_names_uri_and_fix() {
        let t = resolve(
            Some("qemu+unix:///system?socket=/nonexistent/sock"),
            env(&[]),
        );
        let err = open(&t, Access::ReadOnly).unwrap_err();
        assert_eq!(err.code, Code::ConnectFailed);
        assert!(err.message.contains("/nonexistent/sock"), "{}", err.message);
        assert!(err.message.contains("libvirtd running"), "{}", err.message);
        assert!(!err.message.contains('\n'));
    }
}
