//! Distributors publish checksums in a few shapes (coreutils' `sha256sum`
//! output, BSD's tagged lines, Fedora's clearsigned CHECKSUM), often with
//! CRLF ends, `./` prefixes and comments. One parser reads them all, so the
//! user passes whatever file the mirror has and never edits it first.

use hv_common::{Code, Error, Result};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn from_hex_len(len: usize) -> Option<Algorithm> {
        match len {
            32 => Some(Algorithm::Md5),
            40 => Some(Algorithm::Sha1),
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    fn from_tag(tag: &str) -> Option<Algorithm> {
        match tag.to_ascii_uppercase().replace('-', "").as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" => Some(Algorithm::Sha256),
            "SHA512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Collisions can be made for these: a matching hash proves nothing.
    pub fn is_weak(self) -> bool {
        matches!(self, Algorithm::Md5 | Algorithm::Sha1)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub algorithm: Algorithm,
    /// Lowercase hex.
    pub digest: String,
    pub name: String,
}

/// Every checksum line in `text`; lines of any other shape (comments,
/// Fedora's `# name: N bytes`, blank lines) are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| parse_line(line.trim_end_matches('\r').trim()))
        .collect()
}

fn parse_line(line: &str) -> Option<Entry> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    parse_tagged(line).or_else(|| parse_gnu(line))
}

/// `SHA256 (name) = hex`, as `sha256sum --tag` and Fedora write it.
fn parse_tagged(line: &str) -> Option<Entry> {
    let (tag, rest) = line.split_once(" (")?;
    let (name, digest) = rest.rsplit_once(") = ")?;
    let algorithm = Algorithm::from_tag(tag)?;
    entry(algorithm, digest.trim(), name)
}

/// `hex  name` or `hex *name` (binary mode), as `sha256sum` writes it; a
/// leading backslash marks a name with escaped `\\` or `\n`.
fn parse_gnu(line: &str) -> Option<Entry> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (digest, name) = line.split_once([' ', '\t'])?;
    let name = name.trim_start_matches([' ', '\t']);
    let name = name.strip_prefix('*').unwrap_or(name);
    let name = if escaped {
        name.replace("\\n", "\n").replace("\\\\", "\\")
    } else {
        name.to_owned()
    };
    entry(Algorithm::from_hex_len(digest.len())?, digest, &name)
}

fn entry(algorithm: Algorithm, digest: &str, name: &str) -> Option<Entry> {
    let right_length = Algorithm::from_hex_len(digest.len()) == Some(algorithm);
    if !right_length || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    if name.is_empty() {
        return None;
    }
    Some(Entry {
        algorithm,
        digest: digest.to_ascii_lowercase(),
        name: name.to_owned(),
    })
}

/// The entry for `file_name`: by exact name, else by the last path
/// component (mirrors list `iso-cd/x.iso`); the strongest algorithm when a
/// file lists several. The error says what the file `origin` does list.
pub fn find<'a>(entries: &'a [Entry], file_name: &str, origin: &str) -> Result<&'a Entry> {
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_owned();
    let exact = entries.iter().filter(|e| e.name == file_name);
    let by_base = entries.iter().filter(|e| base(&e.name) == file_name);
    if let Some(best) = exact.max_by_key(|e| e.algorithm) {
        return Ok(best);
    }
    if let Some(best) = by_base.max_by_key(|e| e.algorithm) {
        return Ok(best);
    }
    let why = match entries.len() {
        0 => "it has no checksum lines".to_owned(),
        n => {
            let names: Vec<&str> = entries.iter().take(3).map(|e| e.name.as_str()).collect();
            let more = if n > 3 { ", ..." } else { "" };
            format!("it lists {n} other files ({}{more})", names.join(", "))
        }
    };
    Err(Error::new(
        Code::NotFound,
        format!(
            "{origin} does not list {file_name}: {why}; is it the checksum file for this image?"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H256: &str = "4f2b3e7a0c5d6e8f9a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";

    #[test]
    fn reads_every_published_shape() {
        let h512 = "ab".repeat(64);
        let text = format!(
            "# comment\r\n{H256}  debian.iso\r\n{H256} *./win.iso\n\
             SHA512 (Fedora.iso) = {h512}\n# Fedora.iso: 123 bytes\n\
             \\{H256}  odd\\nname.iso\nnot a line\n{}  short.iso\n",
            &H256[..60]
        );
        let got = parse(&text);
        let names: Vec<(&str, Algorithm)> =
            got.iter().map(|e| (e.name.as_str(), e.algorithm)).collect();
        assert_eq!(
            names,
            [
                ("debian.iso", Algorithm::Sha256),
                ("win.iso", Algorithm::Sha256),
                ("Fedora.iso", Algorithm::Sha512),
                ("odd\nname.iso", Algorithm::Sha256),
            ]
        );
        assert_eq!(got[2].digest, h512);
    }

    #[test]
    fn digests_are_lowercased_and_md5_sha1_recognised() {
        let got = parse(&format!(
            "{}  a.iso\nMD5 (b.iso) = {}\nSHA1 (c.iso) = {}\n",
            H256.to_uppercase(),
            "0".repeat(32),
            "1".repeat(40)
        ));
        assert_eq!(got[0].digest, H256);
        assert_eq!(got[1].algorithm, Algorithm::Md5);
        assert_eq!(got[2].algorithm, Algorithm::Sha1);
        assert!(got[1].algorithm.is_weak() && got[2].algorithm.is_weak());
    }

    #[test]
    fn a_tag_that_disagrees_with_the_length_is_not_an_entry() {
        assert!(parse(&format!("SHA512 (a.iso) = {H256}")).is_empty());
    }

    #[test]
    fn find_prefers_exact_then_basename_then_strongest() {
        let entries = parse(&format!(
            "{H256}  iso-cd/x.iso\n{}  x.iso\nSHA512 (x.iso) = {}\n",
            "c".repeat(64),
            "d".repeat(128)
        ));
        assert_eq!(
            find(&entries, "x.iso", "SUMS").unwrap().algorithm,
            Algorithm::Sha512
        );
        let only_path = parse(&format!("{H256}  iso-cd/y.iso\n"));
        assert_eq!(find(&only_path, "y.iso", "SUMS").unwrap().digest, H256);
        let err = find(&only_path, "z.iso", "SUMS").unwrap_err();
        assert_eq!(err.code, Code::NotFound);
        assert!(
            err.message
                .contains("SUMS does not list z.iso: it lists 1 other files (iso-cd/y.iso)"),
            "{err}"
        );
    }
}
