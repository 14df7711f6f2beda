//! File handling several commands share, so a crash-safety or identity
//! rule is right in one place: state files, keys, sidecars and metrics
//! files are replaced whole, and "the same file" means the same inode.

use crate::{Code, Error};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Replaces `path` with `data`: written and synced beside it under a
/// hidden name of its own (so runs at once never share one, and a
/// directory reader never sees half a file or a file of its own pattern),
/// renamed, and the directory synced. A killed run leaves the old file.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// Reads a file a user named, at most `limit` bytes of it. A regular file
/// or a pipe (`--identity <(pass show …)`) is read; a device, a directory
/// or a socket is refused before a byte is read, so `/dev/zero` given as an
/// identity cannot eat the machine's memory, and neither can a pipe that
/// never ends.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_file() || kind.is_fifo()) {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("it is {what}, not a file"),
        ));
    }
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(std::io::Error::new(
            ErrorKind::FileTooLarge,
            format!("it is larger than {}", crate::output::human_bytes(limit)),
        ));
    }
    Ok(data)
}

/// [`read_limited`] for a file named on the command line: `what` names
/// it ("identity file") and `fix` says what to give instead; every
/// failure is a usage error naming the path.
pub fn read_named(path: &Path, what: &str, limit: u64, fix: &str) -> crate::Result<Vec<u8>> {
    read_limited(path, limit).map_err(|e| {
        Error::new(
            Code::Usage,
            format!("cannot read {what} {}: {e}; {fix}", path.display()),
        )
    })
}

/// A file's identity (device and inode), however its path is spelled.
pub fn file_id(path: impl AsRef<Path>) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Decodes `escape` followed by `digits` digits of `radix` into that
/// byte: `%20` in a URL, `\040` in /proc/self/mountinfo. Anything else,
/// a malformed escape too, is kept as it is.
pub fn unescape(text: &str, escape: u8, digits: usize, radix: u32) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 1 + digits)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, radix).ok());
        match code {
            Some(byte) if bytes[i] == escape => {
                out.push(byte);
                i += 1 + digits;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_is_replaced_whole_and_nothing_else_is_left() {
        let dir = std::env::temp_dir().join(format!("hv-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let spelled = dir
            .join("..")
            .join(dir.file_name().unwrap())
            .join("state.json");
        assert_eq!(file_id(&path), file_id(&spelled));
        assert_eq!(file_id(dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn escapes_decode_and_malformed_ones_stay() {
        assert_eq!(unescape("my\\040dir", b'\\', 3, 8), "my dir");
        assert_eq!(unescape("a%20b%zz%4", b'%', 2, 16), "a b%zz%4");
    }
}
