//! Getting bytes from where the distributor put them: a URL (libcurl:
//! HTTPS, proxies from the environment, redirects) or a local path. Images
//! are multi-GiB and mirrors drop connections, so a download resumes where
//! it stopped (Range with If-Range, so a file replaced on the server starts
//! over instead of being spliced), within one run and across runs.
//!
//! Redirects are followed here, not by libcurl, so that each one is
//! checked: libcurl would follow one to ftp:// (and send `anonymous` in
//! clear) or from HTTPS down to HTTP. A server that never answers is an
//! error at once rather than after every retry, and a body with no end is
//! cut at --max-size, so a hostile or broken mirror cannot fill the disk.

use crate::digest::Hasher;
use hv_common::output::human_bytes;
use hv_common::progress::Counter;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
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
    /// More bytes than the limit: what was fetched is of no use, now or on
    /// a resumed run.
    TooLarge(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Missing(m) | FetchError::Failed(m) | FetchError::TooLarge(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Checksum files and signatures are small; anything bigger is not one.
const SMALL_LIMIT: usize = 16 << 20;

fn small_too_large(what: impl std::fmt::Display) -> FetchError {
    FetchError::TooLarge(format!(
        "{what}: too large (over {} MiB) for a checksum file or signature; check that it names one",
        SMALL_LIMIT >> 20
    ))
}

/// Reads a small file (checksums, signature) whole.
pub fn fetch_small(source: &Source) -> Result<Vec<u8>, FetchError> {
    match source {
        Source::Path(p) => read_capped(p, SMALL_LIMIT)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    FetchError::Missing(format!("{}: no such file", p.display()))
                }
                _ => FetchError::Failed(format!("{}: {e}", p.display())),
            })?
            .ok_or_else(|| small_too_large(p.display())),
        Source::Url(u) => fetch_small_url(u),
    }
}

/// Reads a file a user named, up to `limit` bytes; None when it holds
/// more (a wrong file, or /dev/zero), which is never read whole.
pub fn read_capped(path: &Path, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    File::open(path)?
        .take(limit as u64 + 1)
        .read_to_end(&mut data)?;
    Ok((data.len() <= limit).then_some(data))
}

fn fetch_small_url(url: &str) -> Result<Vec<u8>, FetchError> {
    let mut at = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let failed = |why: String| FetchError::Failed(format!("{}: {why}", place(url, &at)));
        let curl_failed = |e: curl::Error| failed(describe(&e));
        let mut easy = handle(&at).map_err(curl_failed)?;
        let mut data = Vec::new();
        let mut too_large = false;
        let performed = {
            let mut t = easy.transfer();
            t.write_function(|chunk| {
                if data.len() + chunk.len() > SMALL_LIMIT {
                    too_large = true;
                    return Ok(0);
                }
                data.extend_from_slice(chunk);
                Ok(chunk.len())
            })
            .map_err(curl_failed)?;
            t.perform()
        };
        if too_large {
            return Err(small_too_large(place(url, &at)));
        }
        let code = easy.response_code().unwrap_or(0);
        if let Err(e) = performed {
            return Err(failed(match classify(&e, code, false) {
                Stop::Retry(why) | Stop::Fatal(why) | Stop::TooLarge(why) => why,
            }));
        }
        if let Some(next) = redirect_target(&easy, code).map_err(curl_failed)? {
            follow(&at, &next).map_err(failed)?;
            at = next;
            continue;
        }
        return match code {
            200..=299 | 0 => Ok(data),
            404 | 410 => Err(FetchError::Missing(format!(
                "{}: HTTP {code}",
                place(url, &at)
            ))),
            _ => Err(failed(format!("HTTP {code}"))),
        };
    }
    Err(FetchError::Failed(format!(
        "{url}: more than {MAX_REDIRECTS} redirects"
    )))
}

/// Redirects followed at most, each one checked by [`follow`].
const MAX_REDIRECTS: usize = 10;

/// Whether a redirect from `from` to `to` may be followed: only to HTTP or
/// HTTPS, and never from HTTPS down to plain HTTP, where anyone on the way
/// could read or cut the download. A user who accepts plain HTTP gives the
/// http:// URL themselves.
fn follow(from: &str, to: &str) -> std::result::Result<(), String> {
    match (scheme(from), scheme(to)) {
        (_, None) => Err(format!(
            "redirected to {to}, which is not HTTP or HTTPS: hv-iso downloads only over \
             HTTP(S); give a URL that serves the file over HTTPS"
        )),
        (Some(Scheme::Https), Some(Scheme::Http)) => Err(format!(
            "redirected from HTTPS to plain HTTP ({to}); give an HTTPS mirror, or that \
             http:// URL yourself to accept plain HTTP"
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

fn scheme(url: &str) -> Option<Scheme> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        Some(Scheme::Https)
    } else if lower.starts_with("http://") {
        Some(Scheme::Http)
    } else {
        None
    }
}

/// The target of a redirect response: what its Location names, resolved
/// against the request's URL by libcurl.
fn redirect_target(easy: &curl::easy::Easy, code: u32) -> Result<Option<String>, curl::Error> {
    if !is_redirect(code) {
        return Ok(None);
    }
    Ok(easy.redirect_url()?.map(str::to_owned))
}

fn is_redirect(code: u32) -> bool {
    matches!(code, 301 | 302 | 303 | 307 | 308)
}

/// Where an error happened: the URL given, and where redirects led.
fn place(url: &str, at: &str) -> String {
    if url == at {
        url.to_owned()
    } else {
        format!("{url} (redirected to {at})")
    }
}

/// Seconds to wait for a TCP connection: a host that drops packets is
/// given up on in that time, not libcurl's five minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A transfer with no byte in this long (no answer, or a stalled mirror)
/// is an error, not a hang forever.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

fn handle(url: &str) -> Result<curl::easy::Easy, curl::Error> {
    let mut easy = curl::easy::Easy::new();
    easy.url(url)?;
    // Redirects are followed by the callers, each checked by `follow`.
    easy.follow_location(false)?;
    easy.connect_timeout(CONNECT_TIMEOUT)?;
    easy.low_speed_limit(1)?;
    easy.low_speed_time(STALL_TIMEOUT)?;
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
    /// The most bytes the file may have (--max-size): a server that sends
    /// no Content-Length, or a wrong one, must not fill the disk.
    pub max_bytes: u64,
    pub progress: &'a Counter,
    pub on_validator: &'a mut dyn FnMut(&Resume) -> io::Result<()>,
}

/// Why an attempt ended without the whole file.
enum Stop {
    /// Dropped connection, timeout, 5xx: try again from where it stopped.
    Retry(String),
    Fatal(String),
    /// Over --max-size: the partial file is of no use, resumed or not.
    TooLarge(String),
}

impl Stop {
    fn map(self, f: impl FnOnce(String) -> String) -> Stop {
        match self {
            Stop::Retry(why) => Stop::Retry(f(why)),
            Stop::Fatal(why) => Stop::Fatal(f(why)),
            Stop::TooLarge(why) => Stop::TooLarge(f(why)),
        }
    }
}

impl Download<'_> {
    pub fn run(mut self) -> Result<(), FetchError> {
        let mut attempt = 0;
        // Whether the server (where redirects led) answered at all in this
        // run: one that never did is not there, and asking it again only
        // makes the user wait longer for the same error.
        let mut answered = false;
        loop {
            match self.attempt(&mut answered) {
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
                Err(Stop::TooLarge(why)) => {
                    return Err(FetchError::TooLarge(format!("{}: {why}", self.url)))
                }
                Err(Stop::Retry(why)) | Err(Stop::Fatal(why)) => {
                    return Err(FetchError::Failed(format!("{}: {why}", self.url)))
                }
            }
        }
    }

    /// One try: the URL, then each redirect it leads to, checked.
    fn attempt(&mut self, answered: &mut bool) -> Result<(), Stop> {
        let mut at = self.url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let next = self.exchange(&at, answered).map_err(|stop| {
                if at == self.url {
                    stop
                } else {
                    stop.map(|why| format!("redirected to {at}: {why}"))
                }
            })?;
            match next {
                None => return Ok(()),
                Some(next) => {
                    follow(&at, &next).map_err(Stop::Fatal)?;
                    at = next;
                }
            }
        }
        Err(Stop::Fatal(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// One request and its answer: the body goes to the file, or, for a
    /// redirect, its target is returned.
    fn exchange(&mut self, url: &str, answered: &mut bool) -> Result<Option<String>, Stop> {
        let offset = self.hasher.bytes;
        let state = RefCell::new(Response::default());
        let mut easy = handle(url).map_err(|e| Stop::Fatal(describe(&e)))?;
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
            max_bytes: self.max_bytes,
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
        if response.status != 0 && !is_redirect(response.status) {
            *answered = true;
        }
        if let Err(e) = performed {
            return Err(classify(&e, code, *answered));
        }
        if let Some(next) = redirect_target(&easy, code).map_err(|e| Stop::Fatal(describe(&e)))? {
            return Ok(Some(next));
        }
        match code {
            200 | 206 | 0 => Ok(None),
            416 if response.total == Some(offset) => Ok(None),
            429 | 500..=599 => Err(Stop::Retry(format!("HTTP {code}"))),
            _ => Err(Stop::Fatal(format!("HTTP {code}"))),
        }
    }
}

/// Whether a failed transfer is worth another try. A server that was never
/// reached (refused, unknown, silent) is not, unless it answered earlier in
/// the run and then went away.
fn classify(e: &curl::Error, code: u32, answered: bool) -> Stop {
    let why = describe(e);
    if e.is_write_error() {
        return Stop::Fatal(format!("HTTP {code}: {why}"));
    }
    let unreachable = e.is_couldnt_connect()
        || e.is_couldnt_resolve_host()
        || (e.is_operation_timedout() && code == 0);
    if unreachable && !answered {
        return Stop::Fatal(format!(
            "no answer ({why}); check the URL and that the server is up, or use another mirror"
        ));
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

/// What the headers of one response said (the last one, when libcurl saw
/// several: a proxy's answer to CONNECT, a 100 Continue).
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
    max_bytes: u64,
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
        if self.hasher.bytes + data.len() as u64 > self.max_bytes {
            self.error = Some(Stop::TooLarge(format!(
                "more than {} arrived, the most --max-size allows; the partial file was deleted \
                 (a larger --max-size admits a larger image)",
                human_bytes(self.max_bytes)
            )));
            return 0;
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
            if total > self.max_bytes {
                return Err(Stop::TooLarge(format!(
                    "the server says it is {}, more than --max-size ({}); a larger --max-size \
                     admits it",
                    human_bytes(total),
                    human_bytes(self.max_bytes)
                )));
            }
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

/// Copies a local image into the partial file, hashing as it goes; at
/// most `max_bytes` (a device or a pipe has no size to check first).
pub fn copy_local(
    path: &Path,
    file: &mut File,
    hasher: &mut Hasher,
    progress: &Counter,
    max_bytes: u64,
) -> io::Result<()> {
    let src = File::open(path)?;
    progress
        .total
        .store(src.metadata()?.len(), Ordering::Relaxed);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let src = src.take(max_bytes.saturating_add(1));
    crate::digest::pump(src, hasher, |b| out.write_all(b), progress)?;
    if hasher.bytes > max_bytes {
        return Err(io::Error::other(format!(
            "more than {}, the most --max-size allows",
            human_bytes(max_bytes)
        )));
    }
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

    #[test]
    fn redirects_only_to_http_or_https_and_never_down_from_https() {
        assert_eq!(follow("http://a/x.iso", "https://b/x.iso"), Ok(()));
        assert_eq!(follow("https://a/x.iso", "HTTPS://b/x.iso"), Ok(()));
        assert_eq!(follow("http://a/x.iso", "http://b/x.iso"), Ok(()));
        let down = follow("https://a/x.iso", "http://b/x.iso").unwrap_err();
        assert!(
            down.contains("from HTTPS to plain HTTP (http://b/x.iso)"),
            "{down}"
        );
        for to in [
            "ftp://b/x.iso",
            "file:///etc/passwd",
            "scp://b/x.iso",
            "b/x.iso",
        ] {
            let refused = follow("http://a/x.iso", to).unwrap_err();
            assert!(refused.contains("not HTTP or HTTPS"), "{to}: {refused}");
        }
    }

    #[test]
    fn a_server_never_reached_is_not_retried_one_that_went_away_is() {
        let refused = curl::Error::new(7); // CURLE_COULDNT_CONNECT
        let silent = curl::Error::new(28); // CURLE_OPERATION_TIMEDOUT
        let empty = curl::Error::new(52); // CURLE_GOT_NOTHING
        assert!(
            matches!(classify(&refused, 0, false), Stop::Fatal(why) if why.starts_with("no answer"))
        );
        assert!(
            matches!(classify(&silent, 0, false), Stop::Fatal(why) if why.starts_with("no answer"))
        );
        assert!(matches!(classify(&refused, 0, true), Stop::Retry(_)));
        assert!(
            matches!(classify(&silent, 200, false), Stop::Retry(_)),
            "a stall in the middle of the body is resumed"
        );
        assert!(matches!(classify(&empty, 0, false), Stop::Retry(_)));
    }
}
