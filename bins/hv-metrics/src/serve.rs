//! `--listen`: a minimal HTTP/1.1 server for Prometheus' scrapes. One
//! request per connection, answered in turn: Prometheus scrapes one target
//! at a time, and serial scrapes keep libvirt from being asked the same
//! thing twice at once. Read and write timeouts keep a stuck client from
//! holding the next scrape back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUEST: usize = 16 * 1024;
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn serve(listener: TcpListener, mut metrics: impl FnMut() -> String) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(err) = answer(stream, &mut metrics) {
                    hv_common::cli::warn(format!("HTTP client: {err}"));
                }
            }
            Err(err) => hv_common::cli::warn(format!("cannot accept a connection: {err}")),
        }
    }
}

fn answer(mut stream: TcpStream, metrics: &mut impl FnMut() -> String) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body, with_body) = route(&head, metrics);
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        reply.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&reply)?;
    stream.flush()
}

/// The request line and headers; the body of a GET is empty.
fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn route(
    head: &str,
    metrics: &mut impl FnMut() -> String,
) -> (&'static str, &'static str, String, bool) {
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return (
            "405 Method Not Allowed",
            text,
            "only GET and HEAD\n".into(),
            true,
        );
    }
    let with_body = method == "GET";
    match path {
        "/metrics" => ("200 OK", CONTENT_TYPE, metrics(), with_body),
        "/" => (
            "200 OK",
            text,
            "hv-metrics: Prometheus metrics are at /metrics\n".into(),
            with_body,
        ),
        _ => (
            "404 Not Found",
            text,
            "not found: try /metrics\n".into(),
            with_body,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let mut m = || "hv_libvirt_up 1\n".to_string();
        let (status, ctype, body, with) = route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &mut m);
        assert_eq!(
            (status, ctype, body.as_str(), with),
            ("200 OK", CONTENT_TYPE, "hv_libvirt_up 1\n", true)
        );
        assert_eq!(
            route("GET /metrics?x=1 HTTP/1.1\r\n\r\n", &mut m).0,
            "200 OK"
        );
        assert!(!route("HEAD /metrics HTTP/1.1\r\n\r\n", &mut m).3);
        assert_eq!(
            route("GET /other HTTP/1.1\r\n\r\n", &mut m).0,
            "404 Not Found"
        );
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n", &mut m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route("", &mut m).0, "405 Method Not Allowed");
    }
}
