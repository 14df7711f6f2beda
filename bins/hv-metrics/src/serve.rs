//! `--listen`: a minimal HTTP/1.1 server for Prometheus' scrapes, one
//! request per connection.
//!
//! Whatever reaches the port can open connections, so no client may hold
//! back another's answer. Each connection is served on a thread of its own,
//! at most `MAX_CONNECTIONS` at once, and each stage has a deadline for the
//! whole of it, not a timeout per read or write (a client sending one byte
//! every few seconds would otherwise never time out): the request head must
//! arrive within `HEAD_DEADLINE` and `MAX_HEAD` bytes, the answer must be
//! taken within `WRITE_DEADLINE`. When every place is taken, a new
//! connection takes the place of the one that has waited longest for its
//! request head, so idle connections cannot crowd out Prometheus, which
//! sends its request as soon as it connects. Only when every place is busy
//! answering does a new connection get 503 at once.
//!
//! libvirt is asked on the calling thread alone, one scrape at a time: it is
//! never asked the same thing twice at once, and what `--listen` remembers
//! between scrapes needs no lock. Requests that arrive during a scrape wait
//! for it to end, then share the next one.
//!
//! SIGTERM (systemd's stop) and SIGINT (Ctrl-C) stop the server: it takes
//! no new connections, closes those still waiting for their request, gives
//! answers under way up to `STOP_GRACE`, and [`serve`] returns, so the exit
//! status is 0. A second signal exits at once.

use hv_common::{Error, Result};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Connections served at once. Each has a thread, which costs little while
/// it waits.
const MAX_CONNECTIONS: usize = 64;
/// From accepting a connection to the end of its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// The request line and headers; a GET has no body.
const MAX_HEAD: usize = 8 * 1024;
/// For the whole answer to be taken: Prometheus' own scrape timeout is 10 s
/// by default.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a request waits for the scrape it asked for.
const SCRAPE_WAIT: Duration = Duration::from_secs(60);
/// How long a stopping server waits for the answers under way.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// After a refusal sent before the request was read whole, how long what the
/// client still sends is read and dropped: closing a socket with unread data
/// resets the connection, and the reset can overtake the refusal.
const LINGER: Duration = Duration::from_secs(1);

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// What the serving thread is asked to do.
enum Job {
    /// Scrape, and send the exposition here.
    Scrape(Sender<Arc<str>>),
    /// SIGTERM or SIGINT came.
    Stop,
}

/// Serves `metrics()` at /metrics until SIGTERM or SIGINT. `metrics` runs on
/// this thread alone, once per scrape.
pub fn serve(listener: TcpListener, mut metrics: impl FnMut() -> String) -> Result<()> {
    let (jobs, queue) = mpsc::channel();
    stop_on_signals(jobs.clone())?;
    let shared = Arc::new(Shared::default());
    let accepting = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || accept(&listener, &accepting, &jobs))
        .map_err(|err| Error::io("cannot start serving HTTP", err))?;
    scrape_on_request(&queue, &mut metrics);
    // Requests still waiting for a scrape get 503.
    drop(queue);
    shared.stop();
    Ok(())
}

/// One scrape for all the requests waiting, until told to stop.
fn scrape_on_request(queue: &Receiver<Job>, metrics: &mut impl FnMut() -> String) {
    while let Ok(first) = queue.recv() {
        let mut waiting = Vec::new();
        for job in std::iter::once(first).chain(queue.try_iter()) {
            match job {
                Job::Scrape(reply) => waiting.push(reply),
                Job::Stop => return,
            }
        }
        let body: Arc<str> = Arc::from(metrics());
        for reply in waiting {
            let _ = reply.send(Arc::clone(&body));
        }
    }
}

/// The first SIGTERM or SIGINT sends [`Job::Stop`]; a second one, with the
/// stop under way, exits at once with the shell's 128 + signal.
fn stop_on_signals(jobs: Sender<Job>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let cannot = |err: std::io::Error| Error::io("cannot handle SIGTERM and SIGINT", err);
    let (mut woken, wake) = UnixStream::pair().map_err(cannot)?;
    let stopping = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&stopping),
        )
        .map_err(cannot)?;
        signal_hook::flag::register(signal, Arc::clone(&stopping)).map_err(cannot)?;
        signal_hook::low_level::pipe::register(signal, wake.try_clone().map_err(cannot)?)
            .map_err(cannot)?;
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if woken.read_exact(&mut [0u8]).is_ok() {
                let _ = jobs.send(Job::Stop);
            }
        })
        .map_err(cannot)?;
    Ok(())
}

/// The places for connections: how many are taken, and which connections
/// still wait for their request head.
#[derive(Default)]
struct Shared {
    places: Mutex<Places>,
    freed: Condvar,
}

#[derive(Default)]
struct Places {
    taken: usize,
    /// Connections waiting for their request head, in the order they were
    /// accepted: the first has waited longest. Each is a clone of the
    /// connection, to close it from here.
    reading: BTreeMap<u64, TcpStream>,
    next: u64,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No new connections; those still waiting for their request head are
    /// closed, and the answers under way get up to `STOP_GRACE`.
    fn stop(&self) {
        let mut places = self.lock();
        places.stopping = true;
        for conn in places.reading.values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while places.taken > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            places = match self.freed.wait_timeout(places, left) {
                Ok((places, _)) => places,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

enum Admit {
    Place(Place),
    /// Every place is busy answering.
    Busy,
    Stopping,
}

/// A place for a newly accepted connection (`handle` is its clone): a free
/// one, or that of the connection that has waited longest for its request
/// head, which is closed.
fn admit(shared: &Arc<Shared>, handle: TcpStream) -> Admit {
    let mut places = shared.lock();
    if places.stopping {
        return Admit::Stopping;
    }
    if places.taken < MAX_CONNECTIONS {
        places.taken += 1;
    } else if let Some((_, oldest)) = places.reading.pop_first() {
        // Its place passes to the newcomer; its thread sees its connection end.
        let _ = oldest.shutdown(Shutdown::Both);
    } else {
        return Admit::Busy;
    }
    let id = places.next;
    places.next += 1;
    places.reading.insert(id, handle);
    Admit::Place(Place {
        shared: Arc::clone(shared),
        id,
        reading: true,
        ours: true,
    })
}

/// A connection's place, given back when dropped unless it passed to a newer
/// connection.
struct Place {
    shared: Arc<Shared>,
    id: u64,
    /// Still listed among the connections waiting for their request head.
    reading: bool,
    /// Not passed to a newer connection.
    ours: bool,
}

impl Place {
    /// The request head is in, or will not come: from now on the place is not
    /// given to a newer connection. False when it already was.
    fn head_read(&mut self) -> bool {
        if self.reading {
            self.reading = false;
            self.ours = self.shared.lock().reading.remove(&self.id).is_some();
        }
        self.ours
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.head_read() {
            self.shared.lock().taken -= 1;
            self.shared.freed.notify_all();
        }
    }
}

/// Accepts connections until the server stops, each onto a thread of its own.
fn accept(listener: &TcpListener, shared: &Arc<Shared>, jobs: &Sender<Job>) {
    let mut next_warning = Instant::now();
    let mut warn = |message: String| {
        // Out of file descriptors or threads, mostly: said once a minute,
        // not ten times a second.
        if Instant::now() >= next_warning {
            hv_common::cli::warn(message);
            next_warning = Instant::now() + Duration::from_secs(60);
        }
    };
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) => {
                // The connection waits in the backlog meanwhile.
                warn(format!("cannot accept a connection: {err}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let accepted = Instant::now();
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let place = match admit(shared, handle) {
            Admit::Place(place) => place,
            Admit::Busy => {
                busy(stream);
                continue;
            }
            Admit::Stopping => return,
        };
        let jobs = jobs.clone();
        let spawned = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || answer(stream, place, accepted + HEAD_DEADLINE, &jobs));
        // A thread that could not start drops the connection and its place.
        if let Err(err) = spawned {
            warn(format!("cannot start a thread for a connection: {err}"));
        }
    }
}

/// 503 at once, from the accepting thread: the short answer fits a fresh
/// connection's send buffer, so this never waits for the client.
fn busy(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let body = format!("busy: {MAX_CONNECTIONS} connections are being answered\n");
    let _ = stream.write_all(&response("503 Service Unavailable", TEXT, &body, true));
    let _ = stream.shutdown(Shutdown::Write);
}

/// One connection, on its own thread: read the request, answer, close.
fn answer(mut stream: TcpStream, mut place: Place, head_deadline: Instant, jobs: &Sender<Job>) {
    let head = read_head(&mut stream, head_deadline);
    if !place.head_read() {
        return;
    }
    let (reply, read_whole) = match head {
        Ok(head) => (reply_to(&head, jobs), true),
        Err(Refused::TooLarge) => {
            let body = format!("the request head is over {} KiB\n", MAX_HEAD / 1024);
            let status = "431 Request Header Fields Too Large";
            (response(status, TEXT, &body, true), false)
        }
        Err(Refused::TooSlow) => {
            let body = format!("the request head took over {} s\n", HEAD_DEADLINE.as_secs());
            (response("408 Request Timeout", TEXT, &body, true), false)
        }
        Err(Refused::Gone) => return,
    };
    let sent = write_by(&mut stream, &reply, Instant::now() + WRITE_DEADLINE);
    if sent.is_ok() && !read_whole {
        linger(&mut stream);
    }
}

fn reply_to(head: &str, jobs: &Sender<Job>) -> Vec<u8> {
    match route(head) {
        Route::Metrics { with_body } => match fresh_scrape(jobs) {
            Some(body) => response("200 OK", CONTENT_TYPE, &body, with_body),
            None => response(
                "503 Service Unavailable",
                TEXT,
                "no scrape: the server is stopping, or libvirt did not answer in time\n",
                with_body,
            ),
        },
        Route::Fixed {
            status,
            body,
            with_body,
        } => response(status, TEXT, body, with_body),
    }
}

/// Asks the serving thread for a scrape and waits for it, up to
/// `SCRAPE_WAIT`. None when the server is stopping or libvirt is stuck.
fn fresh_scrape(jobs: &Sender<Job>) -> Option<Arc<str>> {
    let (reply, scraped) = mpsc::channel();
    jobs.send(Job::Scrape(reply)).ok()?;
    scraped.recv_timeout(SCRAPE_WAIT).ok()
}

/// Head and body in one buffer, so they leave in one write: a small write
/// followed by another waits for the client's delayed acknowledgement.
fn response(status: &str, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        reply.extend_from_slice(body.as_bytes());
    }
    reply
}

/// Why a request is not answered as asked.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The head reached `MAX_HEAD` bytes without ending.
    TooLarge,
    /// The head did not end by its deadline.
    TooSlow,
    /// The client closed or reset the connection before sending anything.
    Gone,
}

/// The request line and headers, which must end (with a blank line) within
/// `MAX_HEAD` bytes and by `deadline`: each read may wait only for what is
/// left of the deadline, so trickling bytes buys no time.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<String, Refused> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(String::from_utf8_lossy(&head[..end + 4]).into_owned());
        }
        if head.len() >= MAX_HEAD {
            return Err(Refused::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refused::TooSlow);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| Refused::Gone)?;
        let room = chunk.len().min(MAX_HEAD - head.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) if head.is_empty() => return Err(Refused::Gone),
            // Closed for sending after a head without its blank line: answered
            // as it stands.
            Ok(0) => return Ok(String::from_utf8_lossy(&head).into_owned()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Refused::TooSlow)
            }
            Err(_) => return Err(Refused::Gone),
        }
    }
}

/// Writes all of `bytes` by `deadline`, however slowly the client reads.
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// After a refusal: send nothing more, and read and drop what the client
/// still sends, for up to `LINGER` and 64 KiB, so the refusal is read before
/// the connection closes.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut dropped = 0;
    while dropped < 64 * 1024 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => dropped += n,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// A fresh scrape; HEAD gets the headers alone.
    Metrics { with_body: bool },
    Fixed {
        status: &'static str,
        body: &'static str,
        with_body: bool,
    },
}

fn route(head: &str) -> Route {
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return Route::Fixed {
            status: "405 Method Not Allowed",
            body: "only GET and HEAD\n",
            with_body: true,
        };
    }
    let with_body = method == "GET";
    match path {
        "/metrics" => Route::Metrics { with_body },
        "/" => Route::Fixed {
            status: "200 OK",
            body: "hv-metrics: Prometheus metrics are at /metrics\n",
            with_body,
        },
        _ => Route::Fixed {
            status: "404 Not Found",
            body: "not found: try /metrics\n",
            with_body,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let status = |head: &str| match route(head) {
            Route::Metrics { with_body: true } => "metrics",
            Route::Metrics { with_body: false } => "metrics, headers only",
            Route::Fixed { status, .. } => status,
        };
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            "metrics"
        );
        assert_eq!(status("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), "metrics");
        assert_eq!(
            status("HEAD /metrics HTTP/1.1\r\n\r\n"),
            "metrics, headers only"
        );
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), "200 OK");
        assert_eq!(status("GET /other HTTP/1.1\r\n\r\n"), "404 Not Found");
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\n\r\n"),
            "405 Method Not Allowed"
        );
        assert_eq!(status(""), "405 Method Not Allowed");
        let reply = response("200 OK", CONTENT_TYPE, "hv_libvirt_up 1\n", true);
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            format!("HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 16\r\nConnection: close\r\n\r\nhv_libvirt_up 1\n")
        );
        let headers_only = response("200 OK", CONTENT_TYPE, "hv_libvirt_up 1\n", false);
        assert!(String::from_utf8(headers_only)
            .unwrap()
            .ends_with("Content-Length: 16\r\nConnection: close\r\n\r\n"));
    }

    /// A connected pair on loopback: what the first writes, the second reads.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_request_head_has_a_size_cap_and_one_deadline_for_the_whole() {
        let later = || Instant::now() + Duration::from_secs(5);
        let (mut client, mut server) = pair();
        let request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(request.as_bytes()).unwrap();
        assert_eq!(read_head(&mut server, later()).unwrap(), request);

        let (mut client, mut server) = pair();
        client
            .write_all("a".repeat(MAX_HEAD + 1).as_bytes())
            .unwrap();
        assert_eq!(read_head(&mut server, later()), Err(Refused::TooLarge));

        // A head of exactly MAX_HEAD bytes is read.
        let (mut client, mut server) = pair();
        let filler = "a".repeat(MAX_HEAD - "GET / HTTP/1.1\r\nX: \r\n\r\n".len());
        let request = format!("GET / HTTP/1.1\r\nX: {filler}\r\n\r\n");
        client.write_all(request.as_bytes()).unwrap();
        assert_eq!(read_head(&mut server, later()).unwrap().len(), MAX_HEAD);

        let (client, mut server) = pair();
        drop(client);
        assert_eq!(read_head(&mut server, later()), Err(Refused::Gone));

        // One byte every 50 ms: each read is short, but the whole head has
        // 300 ms.
        let (mut client, mut server) = pair();
        let trickle = std::thread::spawn(move || {
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" {
                if client.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let head = read_head(&mut server, started + Duration::from_millis(300));
        let took = started.elapsed();
        assert_eq!(head, Err(Refused::TooSlow));
        assert!(took < Duration::from_secs(1), "gave up after {took:?}");
        drop(server);
        trickle.join().unwrap();
    }

    #[test]
    fn a_new_connection_takes_the_place_of_the_one_idle_longest() {
        let shared = Arc::new(Shared::default());
        let admitted = |server: &TcpStream| match admit(&shared, server.try_clone().unwrap()) {
            Admit::Place(place) => place,
            Admit::Busy => panic!("no place"),
            Admit::Stopping => panic!("stopping"),
        };
        let mut idle: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let (client, server) = pair();
                let place = admitted(&server);
                (client, server, place)
            })
            .collect();
        let (_client, server) = pair();
        let mut newest = admitted(&server);
        assert_eq!(shared.lock().taken, MAX_CONNECTIONS);

        let (_client, mut oldest_server, mut oldest) = idle.remove(0);
        let mut byte = [0u8];
        assert_eq!(
            oldest_server.read(&mut byte).unwrap(),
            0,
            "the connection idle longest is closed"
        );
        assert!(!oldest.head_read(), "and its place is gone");
        drop(oldest);
        assert_eq!(shared.lock().taken, MAX_CONNECTIONS);

        // When every place is answering, a newcomer gets 503.
        assert!(newest.head_read());
        for (_, _, place) in &mut idle {
            assert!(place.head_read());
        }
        let (_client, server) = pair();
        assert!(matches!(admit(&shared, server), Admit::Busy));

        drop(idle);
        drop(newest);
        assert_eq!(shared.lock().taken, 0);
        shared.stop();
        let (_client, server) = pair();
        assert!(matches!(admit(&shared, server), Admit::Stopping));
    }
}
