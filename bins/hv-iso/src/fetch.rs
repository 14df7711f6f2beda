//! Getting bytes from where the distributor put them: a URL (libcurl:
//! HTTPS, proxies from the environment, redirects) or a local path. Images
//! are multi-GiB and mirrors drop connections, so a download resumes where
//! it stopped (Range with If-Range, so a file replaced on the server starts
//! over instead of being spliced), within one run and across runs.

use crate::digest::Hasher;
use hv_common::progress::Counter;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Where an image, a checksum file or a signature comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Url(String),
    Path(PathBuf),
}

impl Source {
    pub fn parse(s: &str) -> Source {
        if let Some(path) = s.strip_prefix("file://") {
            return Source::Path(PathBuf::from(percent_decode(path)));
        }
        let lower = s.to_ascii_lowercase();
        if ["http://", "https://"].iter().any(|p| lower.starts_with(p)) {
            Source::Url(s.to_owned())
        } else {
            Source::Path(PathBuf::from(s))
        }
    }

    /// The file name the distributor gave it: what a checksum file lists.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Source::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                let last = path.rsplit('/').next()?;
                (!last.is_empty() && !path.ends_with("//")).then(|| percent_decode(last))
            }
            Source::Path(p) => Some(p.file_name()?.to_string_lossy().into_owned()),
        }
    }

    /// A file in the same directory, where distributors put SHA256SUMS.
    pub fn sibling(&self, name: &str) -> Source {
        match self {
            Source::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
                Source::Url(format!("{dir}{name}"))
            }
            Source::Path(p) => Source::Path(p.with_file_name(name)),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => f.write_str(u),
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

fn percent_decode(s: &str) -> String {
    hv_common::fsutil::unescape(s, b'%', 2, 16)
}

#[derive(Debug)]
pub enum FetchError {
    /// HTTP 404/410 or no such file: worth trying another name.
    Missing(String),
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Missing(m) | FetchError::Failed(m) => f.write_str(m),
        }
    }
}

/// Checksum files and signatures are small; anything bigger is not one.
const SMALL_LIMIT: usize = 16 << 20;

/// Reads a small file (checksums, signature) whole.
pub fn fetch_small(source: &Source) -> Result<Vec<u8>, FetchError> {
    match source {
        Source::Path(p) => {
            let data = std::fs::read(p).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    FetchError::Missing(format!("{}: no such file", p.display()))
                }
                _ => FetchError::Failed(format!("{}: {e}", p.display())),
            })?;
            if data.len() > SMALL_LIMIT {
                return Err(FetchError::Failed(format!(
                    "{}: larger than 16 MiB",
                    p.display()
                )));
            }
            Ok(data)
        }
        Source::Url(u) => fetch_small_url(u),
    }
}

fn fetch_small_url(url: &str) -> Result<Vec<u8>, FetchError> {
    let failed = |e: curl::Error| FetchError::Failed(format!("{url}: {}", describe(&e)));
    let mut easy = handle(url).map_err(failed)?;
    let mut data = Vec::new();
    {
        let mut t = easy.transfer();
        t.write_function(|chunk| {
            if data.len() + chunk.len() > SMALL_LIMIT {
                return Ok(0);
            }
            data.extend_from_slice(chunk);
            Ok(chunk.len())
        })
        .map_err(failed)?;
        t.perform().map_err(failed)?;
    }
    match easy.response_code().map_err(failed)? {
        200..=299 | 0 => Ok(data),
        code @ (404 | 410) => Err(FetchError::Missing(format!("{url}: HTTP {code}"))),
        code => Err(FetchError::Failed(format!("{url}: HTTP {code}"))),
    }
}

fn handle(url: &str) -> Result<curl::easy::Easy, curl::Error> {
    let mut easy = curl::easy::Easy::new();
    easy.url(url)?;
    easy.follow_location(true)?;
    easy.max_redirections(10)?;
    easy.connect_timeout(Duration::from_secs(30))?;
    // A stalled mirror is an error after a minute, not a hang forever.
    easy.low_speed_limit(1)?;
    easy.low_speed_time(Duration::from_secs(60))?;
    easy.useragent(concat!("hv-iso/", env!("CARGO_PKG_VERSION")))?;
    Ok(easy)
}

fn describe(e: &curl::Error) -> String {
    match e.extra_description() {
        Some(extra) => format!("{} ({extra})", e.description()),
        None => e.description().to_owned(),
    }
}

/// What a resumable download needs to know about the bytes already in the
/// partial file: where they came from, and the server's validator for them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Resume {
    pub url: String,
    pub validator: Option<String>,
}

/// A download into `file`, which already holds `hasher.bytes` bytes that
/// were hashed: appends the rest, retrying dropped connections from where
/// they stopped. `on_validator` is called when the server names its
/// ETag/Last-Modified, so a killed run can resume safely.
pub struct Download<'a> {
    pub url: &'a str,
    pub file: &'a mut File,
    pub hasher: &'a mut Hasher,
    pub resume: Resume,
    pub retries: u32,
    pub progress: &'a Counter,
    pub on_validator: &'a mut dyn FnMut(&Resume) -> io::Result<()>,
}

/// Why an attempt ended without the whole file.
enum Stop {
    /// Dropped connection, timeout, 5xx: try again from where it stopped.
    Retry(String),
    Fatal(String),
}

impl Download<'_> {
    pub fn run(mut self) -> Result<(), FetchError> {
        let mut attempt = 0;
        loop {
            match self.attempt() {
                Ok(()) => return Ok(()),
                Err(Stop::Retry(why)) if attempt < self.retries => {
                    attempt += 1;
                    let wait = Duration::from_millis(500 << attempt.min(5));
                    hv_common::cli::warn(format!(
                        "{}: {why}; resuming at byte {} in {:.1} s (retry {attempt} of {})",
                        self.url,
                        self.hasher.bytes,
                        wait.as_secs_f64(),
                        self.retries
                    ));
                    std::thread::sleep(wait);
                }
                Err(Stop::Retry(why)) | Err(Stop::Fatal(why)) => {
                    return Err(FetchError::Failed(format!("{}: {why}", self.url)))
                }
            }
        }
    }

    fn attempt(&mut self) -> Result<(), Stop> {
        let offset = self.hasher.bytes;
        let state = RefCell::new(Response::default());
        let mut easy = handle(self.url).map_err(|e| Stop::Fatal(describe(&e)))?;
        let setup = |easy: &mut curl::easy::Easy| -> Result<(), curl::Error> {
            if offset > 0 {
                easy.range(&format!("{offset}-"))?;
                if let Some(v) = &self.resume.validator {
                    let mut headers = curl::easy::List::new();
                    headers.append(&format!("If-Range: {v}"))?;
                    easy.http_headers(headers)?;
                }
            }
            Ok(())
        };
        setup(&mut easy).map_err(|e| Stop::Fatal(describe(&e)))?;
        let sink = RefCell::new(Sink {
            out: BufWriter::with_capacity(1 << 20, &mut *self.file),
            hasher: &mut *self.hasher,
            progress: self.progress,
            resume: &mut self.resume,
            on_validator: &mut *self.on_validator,
            offset,
            started: false,
            discard: false,
            error: None,
        });
        let performed = {
            let mut t = easy.transfer();
            let fatal = |e: curl::Error| Stop::Fatal(describe(&e));
            t.header_function(|line| {
                state.borrow_mut().header(line);
                true
            })
            .map_err(fatal)?;
            t.write_function(|data| Ok(sink.borrow_mut().write(&state.borrow(), data)))
                .map_err(fatal)?;
            t.perform()
        };
        let mut sink = sink.into_inner();
        let flushed = sink.out.flush();
        if let Some(e) = sink.error.take() {
            return Err(e);
        }
        flushed.map_err(|e| Stop::Fatal(format!("writing the partial file: {e}")))?;
        let code = easy.response_code().unwrap_or(0);
        let response = state.into_inner();
        if let Err(e) = performed {
            return Err(classify(&e, code));
        }
        match code {
            200 | 206 | 0 => Ok(()),
            416 if response.total == Some(offset) => Ok(()),
            429 | 500..=599 => Err(Stop::Retry(format!("HTTP {code}"))),
            _ => Err(Stop::Fatal(format!("HTTP {code}"))),
        }
    }
}

fn classify(e: &curl::Error, code: u32) -> Stop {
    let why = describe(e);
    if e.is_write_error() {
        return Stop::Fatal(format!("HTTP {code}: {why}"));
    }
    let transient = e.is_partial_file()
        || e.is_recv_error()
        || e.is_send_error()
        || e.is_got_nothing()
        || e.is_operation_timedout()
        || e.is_couldnt_connect()
        || e.is_couldnt_resolve_host()
        || e.is_http2_stream_error();
    if transient {
        Stop::Retry(why)
    } else {
        Stop::Fatal(why)
    }
}

/// What the headers of the final response (after redirects) said.
#[derive(Debug, Default)]
struct Response {
    status: u32,
    /// First byte of a 206's Content-Range.
    range_start: Option<u64>,
    /// The full size, from Content-Range or a 200's Content-Length.
    total: Option<u64>,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Response {
    fn header(&mut self, raw: &[u8]) {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_end();
        if line.starts_with("HTTP/") {
            let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            *self = Response {
                status: status.unwrap_or(0),
                ..Response::default()
            };
            return;
        }
        let Some((name, value)) = line.split_once(':') else {
            return;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-range" => self.content_range(value),
            "content-length" if self.status == 200 => self.total = value.parse().ok(),
            "etag" if !value.starts_with("W/") => self.etag = Some(value.to_owned()),
            "last-modified" => self.last_modified = Some(value.to_owned()),
            _ => {}
        }
    }

    /// `bytes 100-199/1000` or `bytes */1000`.
    fn content_range(&mut self, value: &str) {
        let Some(spec) = value.strip_prefix("bytes ") else {
            return;
        };
        let Some((range, total)) = spec.split_once('/') else {
            return;
        };
        self.total = total.parse().ok();
        self.range_start = range.split_once('-').and_then(|(a, _)| a.parse().ok());
    }

    fn validator(&self) -> Option<String> {
        self.etag.clone().or_else(|| self.last_modified.clone())
    }
}

struct Sink<'a> {
    out: BufWriter<&'a mut File>,
    hasher: &'a mut Hasher,
    progress: &'a Counter,
    resume: &'a mut Resume,
    on_validator: &'a mut dyn FnMut(&Resume) -> io::Result<()>,
    offset: u64,
    started: bool,
    /// An error response: its body is read and dropped; the status decides.
    discard: bool,
    error: Option<Stop>,
}

impl Sink<'_> {
    /// Returns how much was taken; less than `data.len()` aborts the
    /// transfer, with the reason left in `self.error`.
    fn write(&mut self, response: &Response, data: &[u8]) -> usize {
        if !self.started {
            if let Err(stop) = self.start(response) {
                self.error = Some(stop);
                return 0;
            }
        }
        if self.discard {
            return data.len();
        }
        if let Err(e) = self.out.write_all(data) {
            self.error = Some(Stop::Fatal(format!("writing the partial file: {e}")));
            return 0;
        }
        self.hasher.update(data);
        self.progress.add(data.len() as u64);
        data.len()
    }

    /// Decides, from the first response's headers, whether the body
    /// continues the partial file or replaces it.
    fn start(&mut self, response: &Response) -> Result<(), Stop> {
        self.started = true;
        let truncate = |e: io::Error| Stop::Fatal(format!("truncating the partial file: {e}"));
        match response.status {
            // A 206 continues the partial file only if it is the same file:
            // its validator must be the one the partial bytes came with.
            206 if response.range_start == Some(self.offset)
                && self.resume.validator.is_some()
                && response.validator() == self.resume.validator => {}
            206 => {
                self.restart().map_err(truncate)?;
                return Err(Stop::Retry(
                    "the server's copy is not the one the partial file holds; starting over".into(),
                ));
            }
            200 | 0 => self.restart().map_err(truncate)?,
            _ => {
                self.discard = true;
                return Ok(());
            }
        }
        if let Some(total) = response.total {
            self.progress.total.store(total, Ordering::Relaxed);
        }
        let validator = response.validator();
        if validator != self.resume.validator {
            self.resume.validator = validator;
            (self.on_validator)(self.resume)
                .map_err(|e| Stop::Fatal(format!("saving the resume state: {e}")))?;
        }
        Ok(())
    }

    /// The server sent the whole file (it ignored the range, or the file
    /// changed since the partial download): start the file over.
    fn restart(&mut self) -> io::Result<()> {
        if self.offset == 0 {
            return Ok(());
        }
        self.out.flush()?;
        let file = self.out.get_mut();
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        self.hasher.reset();
        self.progress.done.store(0, Ordering::Relaxed);
        self.offset = 0;
        Ok(())
    }
}

/// Copies a local image into the partial file, hashing as it goes.
pub fn copy_local(
    path: &Path,
    file: &mut File,
    hasher: &mut Hasher,
    progress: &Counter,
) -> io::Result<()> {
    let src = File::open(path)?;
    progress
        .total
        .store(src.metadata()?.len(), Ordering::Relaxed);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    crate::digest::pump(src, hasher, |b| out.write_all(b), progress)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_their_names() {
        let u = Source::parse(
            "https://cdimage.example/debian-cd/13.1.0/amd64/iso-cd/debian%2013.iso?x=1",
        );
        assert_eq!(u.file_name().as_deref(), Some("debian 13.iso"));
        assert_eq!(
            u.sibling("SHA256SUMS"),
            Source::Url("https://cdimage.example/debian-cd/13.1.0/amd64/iso-cd/SHA256SUMS".into())
        );
        let p = Source::parse("/srv/isos/x.iso");
        assert_eq!(
            p.sibling("SHA256SUMS"),
            Source::Path("/srv/isos/SHA256SUMS".into())
        );
        assert_eq!(
            Source::parse("file:///a%20b/c.iso"),
            Source::Path("/a b/c.iso".into())
        );
        assert_eq!(Source::parse("https://host/").file_name(), None);
    }

    #[test]
    fn headers_of_the_last_response_count() {
        let mut r = Response::default();
        for line in [
            "HTTP/1.1 302 Found\r\n",
            "ETag: \"old\"\r\n",
            "HTTP/1.1 206 Partial Content\r\n",
            "Content-Range: bytes 100-199/1000\r\n",
            "ETag: \"abc\"\r\n",
        ] {
            r.header(line.as_bytes());
        }
        assert_eq!(
            (r.status, r.range_start, r.total),
            (206, Some(100), Some(1000))
        );
        assert_eq!(r.validator().as_deref(), Some("\"abc\""));
        let mut weak = Response::default();
        weak.header(b"HTTP/1.1 200 OK\r\n");
        weak.header(b"ETag: W/\"x\"\r\n");
        weak.header(b"Last-Modified: Tue, 01 Jan 2030 00:00:00 GMT\r\n");
        assert_eq!(
            weak.validator().as_deref(),
            Some("Tue, 01 Jan 2030 00:00:00 GMT")
        );
    }
}
