//! A loopback HTTP file server for download tests and benchmarks, with the
//! faults real mirrors have: a connection that drops mid-file, one that
//! drops before answering, a server that ignores Range. Python's
//! http.server has no Range support, and a mirror's misbehaviour cannot be
//! ordered from a real one. Also the one request an exporter answers:
//! `GET /metrics`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The first GET of the path sends this many body bytes, then closes.
    TruncateOnce(u64),
    /// Every connection for the path is closed before any answer.
    DropAlways,
    /// Range requests are answered with the whole file (200).
    IgnoreRange,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

#[derive(Default)]
struct Shared {
    faults: HashMap<String, Fault>,
    log: Vec<Request>,
    truncated: Vec<String>,
}

pub struct FileServer {
    pub port: u16,
    root: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    /// Serves the files under `root` at http://127.0.0.1:PORT/NAME until
    /// dropped.
    pub fn start(root: impl Into<PathBuf>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let server = FileServer {
            port,
            root: root.into(),
            shared: Arc::default(),
            stop: Arc::default(),
        };
        let (root, shared, stop) = (
            server.root.clone(),
            server.shared.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (root, shared) = (root.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &shared);
                });
            }
        });
        server
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub fn fault(&self, name: &str, fault: Fault) {
        let path = format!("/{name}");
        let mut shared = self.shared.lock().unwrap();
        shared.truncated.retain(|p| *p != path);
        shared.faults.insert(path, fault);
    }

    /// Every request so far for `name`.
    pub fn requests(&self, name: &str) -> Vec<Request> {
        let path = format!("/{name}");
        let shared = self.shared.lock().unwrap();
        shared
            .log
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, root: &std::path::Path, shared: &Mutex<Shared>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("/").to_owned(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let request = Request {
            path: path.clone(),
            range: headers.get("range").cloned(),
            if_range: headers.get("if-range").cloned(),
        };
        let fault = {
            let mut s = shared.lock().unwrap();
            s.log.push(request.clone());
            let fault = s.faults.get(&path).copied();
            match fault {
                Some(Fault::TruncateOnce(_)) if s.truncated.contains(&path) => None,
                Some(Fault::TruncateOnce(n)) => {
                    s.truncated.push(path.clone());
                    Some(Fault::TruncateOnce(n))
                }
                other => other,
            }
        };
        if fault == Some(Fault::DropAlways) {
            return Ok(());
        }
        if !respond(&mut out, root, &method, &request, fault)? {
            return Ok(());
        }
    }
}

/// Answers one request; false when the connection must close.
fn respond(
    out: &mut TcpStream,
    root: &std::path::Path,
    method: &str,
    request: &Request,
    fault: Option<Fault>,
) -> std::io::Result<bool> {
    let name = request.path.trim_start_matches('/');
    let file = (!name.contains(".."))
        .then(|| std::fs::File::open(root.join(name)))
        .and_then(|f| f.ok());
    let Some(mut file) = file else {
        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(true);
    };
    let meta = file.metadata()?;
    let size = meta.len();
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let etag = format!("\"{size:x}-{mtime:x}\"");
    let start = request
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|_| fault != Some(Fault::IgnoreRange))
        .filter(|_| request.if_range.as_ref().is_none_or(|v| *v == etag));
    let head = match start {
        Some(s) if s >= size => {
            let h = format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\n\r\n");
            out.write_all(h.as_bytes())?;
            return Ok(true);
        }
        Some(s) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{size}\r\nContent-Length: {}\r\n",
            size - 1,
            size - s
        ),
        None => format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n"),
    };
    out.write_all(format!("{head}ETag: {etag}\r\nAccept-Ranges: bytes\r\n\r\n").as_bytes())?;
    if method == "HEAD" {
        return Ok(true);
    }
    let from = start.unwrap_or(0);
    file.seek(SeekFrom::Start(from))?;
    match fault {
        Some(Fault::TruncateOnce(n)) => {
            std::io::copy(&mut file.take(n), out)?;
            out.flush()?;
            Ok(false)
        }
        _ => {
            std::io::copy(&mut file, out)?;
            Ok(true)
        }
    }
}

/// One `GET /metrics` on loopback `port`: the body of a 200 answer.
pub fn get_metrics(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let status = reply.lines().next().unwrap_or("").to_owned();
    if !status.contains(" 200 ") {
        return Err(std::io::Error::other(format!("HTTP status {status:?}")));
    }
    Ok(reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// [`get_metrics`], retried for up to 30 s while the exporter starts.
pub fn get_metrics_when_up(port: u16) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get_metrics(port) {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => return Err(format!("port {port}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
