//! Repositories on S3-compatible object storage (Garage, MinIO, Ceph,
//! AWS): the same files as a directory repository, one object each, under
//! `s3://bucket/prefix/`. Requests are signed by rusty-s3 (SigV4 in the
//! query string) and sent by libcurl, which hv-iso already links: hv has
//! no async runtime to host an SDK, and needs only five requests. Every
//! object hv writes is at most a chunk's size, so one PUT always does.
//!
//! Networks fail: a request that could not be sent or got a 5xx or 429
//! is retried with backoff; an answer saying the request itself is wrong
//! (403, 404) is not, and says what to fix.

use hv_common::{Code, Error, Result};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// Where requests go and how they are addressed: flags or environment,
/// set once by `run` before any repository is opened.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `http(s)://host:port` of the S3 API.
    pub endpoint: Option<String>,
    pub region: String,
    /// Bucket in the path (`endpoint/bucket/key`, what self-hosted stores
    /// expect) rather than in the host name.
    pub path_style: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// Whether `repo` names a repository on object storage.
pub fn is_s3(repo: &Path) -> bool {
    repo.to_string_lossy().starts_with("s3://")
}

/// One object as a listing shows it.
#[derive(Debug, Clone)]
pub struct Object {
    /// The key below the repository's prefix (`chunks/ab/ab…`).
    pub key: String,
    pub size: u64,
    /// When it was written, in Unix seconds.
    pub modified: i64,
}

pub struct S3 {
    bucket: Bucket,
    credentials: Credentials,
    /// `prefix/` or empty: where the repository's keys start.
    prefix: String,
    /// `s3://bucket/prefix`, as the user wrote it.
    url: String,
}

/// How long a signed request stays valid: long enough for a slow upload.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
const ATTEMPTS: u32 = 6;

impl S3 {
    pub fn open(repo: &Path) -> Result<S3> {
        let url = repo.to_string_lossy().trim_end_matches('/').to_owned();
        let rest = url.strip_prefix("s3://").unwrap_or(&url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || prefix.split('/').any(|p| p == ".." || p == ".") {
            return Err(Error::usage(format!(
                "{url} is not an S3 repository URL; write s3://BUCKET/PREFIX"
            )));
        }
        let settings = SETTINGS.get().cloned().unwrap_or_else(|| Settings {
            endpoint: None,
            region: "us-east-1".into(),
            path_style: true,
        });
        let endpoint = settings.endpoint.ok_or_else(|| {
            Error::usage(format!(
                "{url}: no S3 endpoint; give --s3-endpoint http(s)://HOST:PORT or set HV_S3_ENDPOINT"
            ))
        })?;
        let parsed = endpoint.parse().map_err(|e| {
            Error::usage(format!(
                "--s3-endpoint {endpoint:?} is not a URL ({e}); write http(s)://HOST:PORT"
            ))
        })?;
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(parsed, style, bucket.to_owned(), settings.region)
            .map_err(|e| Error::usage(format!("--s3-endpoint {endpoint:?}: {e}")))?;
        Ok(S3 {
            bucket,
            credentials: credentials(&url)?,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            url,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The object `key`; `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let signed = self
            .bucket
            .get_object(Some(&self.credentials), &self.full(key))
            .sign(SIGNED_FOR);
        let answer = self.send("GET", signed.as_str(), None, None, key)?;
        match answer.status {
            200 => Ok(Some(answer.body)),
            404 => Ok(None),
            _ => Err(self.refused(&answer, "read", key)),
        }
    }

    /// The first `n` bytes of object `key` and its whole size; `None`
    /// when there is none.
    pub fn get_head(&self, key: &str, n: u64) -> Result<Option<(Vec<u8>, u64)>> {
        let signed = self
            .bucket
            .get_object(Some(&self.credentials), &self.full(key))
            .sign(SIGNED_FOR);
        let range = format!("bytes=0-{}", n.saturating_sub(1));
        let answer = self.send("GET", signed.as_str(), None, Some(&range), key)?;
        match answer.status {
            206 => {
                // Content-Range: bytes 0-65535/1234567
                let total = answer
                    .header("content-range")
                    .and_then(|v| v.rsplit('/').next().and_then(|t| t.trim().parse().ok()));
                Ok(Some((
                    answer.body.clone(),
                    total.unwrap_or(answer.body.len() as u64),
                )))
            }
            200 => {
                let total = answer.body.len() as u64;
                Ok(Some((answer.body, total)))
            }
            // An empty object has no first byte.
            416 => Ok(Some((Vec::new(), 0))),
            404 => Ok(None),
            _ => Err(self.refused(&answer, "read", key)),
        }
    }

    /// Writes object `key` whole: it exists with this content or as before.
    pub fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let signed = self
            .bucket
            .put_object(Some(&self.credentials), &self.full(key))
            .sign(SIGNED_FOR);
        let answer = self.send("PUT", signed.as_str(), Some(data), None, key)?;
        match answer.status {
            200..=299 => Ok(()),
            _ => Err(self.refused(&answer, "write", key)),
        }
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let signed = self
            .bucket
            .delete_object(Some(&self.credentials), &self.full(key))
            .sign(SIGNED_FOR);
        let answer = self.send("DELETE", signed.as_str(), None, None, key)?;
        match answer.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.refused(&answer, "delete", key)),
        }
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let full = self.full(prefix);
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(full.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let signed = action.sign(SIGNED_FOR);
            let answer = self.send("GET", signed.as_str(), None, None, prefix)?;
            if answer.status != 200 {
                return Err(self.refused(&answer, "list", prefix));
            }
            let page =
                rusty_s3::actions::ListObjectsV2::parse_response(&answer.body).map_err(|e| {
                    Error::new(
                        Code::Corrupt,
                        format!(
                            "{}: the store's listing of {prefix} is not S3 XML ({e})",
                            self.url
                        ),
                    )
                })?;
            for c in page.contents {
                // The listing asks for keys URL-encoded (any byte survives XML).
                let key = percent_encoding::percent_decode_str(&c.key).decode_utf8_lossy();
                let Some(key) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(Object {
                    key: key.to_owned(),
                    size: c.size,
                    modified: hv_common::time::parse_rfc3339(&c.last_modified)
                        .or_else(|| parse_iso_millis(&c.last_modified))
                        .unwrap_or(0),
                });
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// One request, retried with backoff while the store cannot answer
    /// (no connection, 5xx, 429).
    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        range: Option<&str>,
        key: &str,
    ) -> Result<Answer> {
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            match perform(method, url, body, range) {
                Ok(a) if a.status >= 500 || a.status == 429 => {
                    last = format!("HTTP {} {}", a.status, a.code().unwrap_or_default());
                }
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
        }
        Err(Error::new(
            Code::ConnectFailed,
            format!(
                "{}: cannot {method} {key} ({last}, {ATTEMPTS} attempts); check that the store at \
                 the endpoint is up and reachable",
                self.url
            ),
        ))
    }

    fn refused(&self, answer: &Answer, what: &str, key: &str) -> Error {
        let code = answer.code().unwrap_or_default();
        let (kind, fix) = match (answer.status, code.as_str()) {
            (403, _) | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => (
                Code::PermissionDenied,
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the credentials file), the key's rights on the bucket, and --s3-region",
            ),
            (404, "NoSuchBucket") | (_, "NoSuchBucket") => (
                Code::NotFound,
                "create the bucket first (garage bucket create, mc mb, aws s3 mb) and give the key access",
            ),
            _ => (Code::Io, "see the store's message"),
        };
        Error::new(
            kind,
            format!(
                "{}: the store refused to {what} {key} (HTTP {} {code}); {fix}",
                self.url, answer.status
            ),
        )
    }
}

/// The credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
/// AWS_SESSION_TOKEN), else the profile (AWS_PROFILE, `default`) of the
/// AWS-style credentials file. Never a flag: argv is visible to every user.
fn credentials(url: &str) -> Result<Credentials> {
    if let Some(c) = Credentials::from_env() {
        return Ok(c);
    }
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let missing = || {
        Error::usage(format!(
            "{url}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put \
             them in ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE, profile AWS_PROFILE)"
        ))
    };
    let Some(file) = file else {
        return Err(missing());
    };
    let Ok(text) = hv_common::fsutil::read_limited(&file, 1 << 20) else {
        return Err(missing());
    };
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut inside = false;
    for line in String::from_utf8_lossy(&text).lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line.trim_matches(['[', ']']).trim() == profile;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_owned());
            match k.trim() {
                "aws_access_key_id" => id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(match token {
            Some(t) => Credentials::new_with_token(id, secret, t),
            None => Credentials::new(id, secret),
        }),
        _ => Err(missing()),
    }
}

/// `2026-11-21T02:00:00.123Z`, as S3 listings write times.
fn parse_iso_millis(text: &str) -> Option<i64> {
    let (whole, _) = text.split_once('.')?;
    hv_common::time::parse_rfc3339(&format!("{whole}Z"))
}

struct Answer {
    status: u32,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The S3 error code in an error answer's XML (`<Code>…</Code>`).
    fn code(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let start = text.find("<Code>")? + 6;
        let end = text[start..].find("</Code>")? + start;
        Some(text[start..end].to_owned())
    }
}

thread_local! {
    /// One curl handle per thread: its connections are kept and reused.
    static EASY: RefCell<curl::easy::Easy> = RefCell::new(curl::easy::Easy::new());
}

fn perform(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    range: Option<&str>,
) -> std::result::Result<Answer, String> {
    EASY.with(|easy| {
        let mut easy = easy.borrow_mut();
        easy.reset();
        let mut headers = curl::easy::List::new();
        // No "Expect: 100-continue" round trip before each upload.
        headers.append("Expect:").map_err(|e| e.to_string())?;
        if let Some(r) = range {
            headers
                .append(&format!("Range: {r}"))
                .map_err(|e| e.to_string())?;
        }
        easy.url(url).map_err(|e| e.to_string())?;
        easy.http_headers(headers).map_err(|e| e.to_string())?;
        easy.connect_timeout(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        // A stalled transfer (below 1 KiB/s for 30 s) is a failed one.
        easy.low_speed_limit(1024).map_err(|e| e.to_string())?;
        easy.low_speed_time(Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        match method {
            "GET" => easy.get(true),
            "PUT" => easy.upload(true),
            other => easy.custom_request(other),
        }
        .map_err(|e| e.to_string())?;
        if let Some(b) = body {
            easy.in_filesize(b.len() as u64)
                .map_err(|e| e.to_string())?;
        }
        let mut out = Vec::new();
        let mut head = Vec::new();
        let mut sent = 0usize;
        {
            let mut t = easy.transfer();
            if let Some(b) = body {
                t.read_function(|buf| {
                    let n = buf.len().min(b.len() - sent);
                    buf[..n].copy_from_slice(&b[sent..sent + n]);
                    sent += n;
                    Ok(n)
                })
                .map_err(|e| e.to_string())?;
            }
            t.write_function(|data| {
                out.extend_from_slice(data);
                Ok(data.len())
            })
            .map_err(|e| e.to_string())?;
            t.header_function(|line| {
                let line = String::from_utf8_lossy(line);
                if let Some((k, v)) = line.split_once(':') {
                    head.push((k.trim().to_owned(), v.trim().to_owned()));
                }
                true
            })
            .map_err(|e| e.to_string())?;
            t.perform().map_err(|e| e.to_string())?;
        }
        let status = easy.response_code().map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            headers: head,
            body: out,
        })
    })
}
