//! A small NBD client: both ways hv reads a disk end in an NBD export — a
//! running VM's through libvirt's pull-mode backup job (QEMU's own NBD
//! server), a stopped VM's through `qemu-nbd` — and NBD's block-status
//! query is what lets hv skip unallocated and zero regions without reading
//! them. Restoring into qcow2 writes through `qemu-nbd` the same way.
//!
//! Only what hv needs: fixed-newstyle handshake, structured replies, the
//! `base:allocation` meta context and, for incremental backups, QEMU's
//! `qemu:dirty-bitmap:<name>` context (what changed since a checkpoint), READ, WRITE, FLUSH, BLOCK_STATUS and
//! DISC, one request in flight, over a unix socket. Protocol reference:
//! <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;

const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_BIT: u32 = 1 << 31;

const INFO_EXPORT: u16 = 0;
const TRANSMIT_READ_ONLY: u16 = 1 << 1;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_BLOCK_STATUS: u16 = 7;

const REPLY_FLAG_DONE: u16 = 1;
const REPLY_NONE: u16 = 0;
const REPLY_OFFSET_DATA: u16 = 1;
const REPLY_OFFSET_HOLE: u16 = 2;
const REPLY_BLOCK_STATUS: u16 = 5;
const REPLY_ERROR_BIT: u16 = 1 << 15;

/// `base:allocation` status bits.
const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:*` status bit.
const STATE_DIRTY: u32 = 1;

const ALLOCATION_CONTEXT: &str = "base:allocation";

/// A run of the disk that block status describes one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// Reads as zeros (unallocated, or allocated zeros the server knows of).
    pub zero: bool,
}

pub struct Client {
    sock: UnixStream,
    size: u64,
    read_only: bool,
    allocation_context: Option<u32>,
    /// The dirty-bitmap context asked for, and its id once the server agreed.
    dirty: Option<(String, Option<u32>)>,
    cookie: u64,
}

impl Client {
    /// Connects to `socket` and opens `export`.
    pub fn connect(socket: &Path, export: &str) -> io::Result<Client> {
        Client::open(socket, export, None)
    }

    /// Connects and also asks for the dirty bitmap `bitmap` of the export
    /// (libvirt names it `backup-<disk>` in an incremental backup job).
    pub fn connect_tracking(socket: &Path, export: &str, bitmap: &str) -> io::Result<Client> {
        let c = Client::open(socket, export, Some(format!("qemu:dirty-bitmap:{bitmap}")))?;
        if c.dirty.as_ref().and_then(|d| d.1).is_none() {
            return Err(protocol(&format!(
                "the server does not offer bitmap {bitmap}"
            )));
        }
        Ok(c)
    }

    fn open(socket: &Path, export: &str, dirty: Option<String>) -> io::Result<Client> {
        let sock = UnixStream::connect(socket)?;
        let mut c = Client {
            sock,
            size: 0,
            read_only: true,
            allocation_context: None,
            dirty: dirty.map(|d| (d, None)),
            cookie: 0,
        };
        c.handshake(export)?;
        Ok(c)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    fn handshake(&mut self, export: &str) -> io::Result<()> {
        if self.get_u64()? != NBDMAGIC || self.get_u64()? != IHAVEOPT {
            return Err(protocol("not an NBD server (bad greeting)"));
        }
        let flags = self.get_u16()?;
        if flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(protocol("server lacks fixed-newstyle negotiation"));
        }
        let ours = u32::from(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
        self.sock.write_all(&ours.to_be_bytes())?;

        self.send_option(OPT_STRUCTURED_REPLY, &[])?;
        let structured = self.expect_ack(OPT_STRUCTURED_REPLY)?;
        if structured {
            self.set_meta_context(export)?;
        }
        self.go(export)
    }

    fn send_option(&mut self, option: u32, data: &[u8]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(16 + data.len());
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
        msg.extend_from_slice(data);
        self.sock.write_all(&msg)
    }

    /// One option reply: (type, payload).
    fn option_reply(&mut self, option: u32) -> io::Result<(u32, Vec<u8>)> {
        if self.get_u64()? != OPT_REPLY_MAGIC {
            return Err(protocol("bad option reply magic"));
        }
        let echoed = self.get_u32()?;
        let kind = self.get_u32()?;
        let len = self.get_u32()? as usize;
        if echoed != option {
            return Err(protocol("option reply for another option"));
        }
        if len > 64 << 20 {
            return Err(protocol("option reply too long"));
        }
        let mut data = vec![0; len];
        self.sock.read_exact(&mut data)?;
        Ok((kind, data))
    }

    /// True on ACK, false when the server declines the option.
    fn expect_ack(&mut self, option: u32) -> io::Result<bool> {
        let (kind, _) = self.option_reply(option)?;
        Ok(kind == REP_ACK)
    }

    fn set_meta_context(&mut self, export: &str) -> io::Result<()> {
        let mut data = Vec::new();
        put_str32(&mut data, export);
        let mut queries = vec![ALLOCATION_CONTEXT.to_owned()];
        queries.extend(self.dirty.as_ref().map(|d| d.0.clone()));
        data.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in &queries {
            put_str32(&mut data, q);
        }
        self.send_option(OPT_SET_META_CONTEXT, &data)?;
        loop {
            let (kind, payload) = self.option_reply(OPT_SET_META_CONTEXT)?;
            match kind {
                REP_META_CONTEXT if payload.len() >= 4 => {
                    let id = u32::from_be_bytes(payload[..4].try_into().unwrap_or_default());
                    let name = &payload[4..];
                    if name == ALLOCATION_CONTEXT.as_bytes() {
                        self.allocation_context = Some(id);
                    }
                    if let Some(d) = self.dirty.as_mut().filter(|d| name == d.0.as_bytes()) {
                        d.1 = Some(id);
                    }
                }
                REP_ACK => return Ok(()),
                k if k & REP_ERR_BIT != 0 => return Ok(()), // no block status: read everything
                _ => {}
            }
        }
    }

    fn go(&mut self, export: &str) -> io::Result<()> {
        let mut data = Vec::new();
        put_str32(&mut data, export);
        data.extend_from_slice(&0u16.to_be_bytes()); // no extra info requests
        self.send_option(OPT_GO, &data)?;
        loop {
            let (kind, payload) = self.option_reply(OPT_GO)?;
            match kind {
                REP_INFO
                    if payload.len() >= 12
                        && u16::from_be_bytes([payload[0], payload[1]]) == INFO_EXPORT =>
                {
                    self.size = u64::from_be_bytes(payload[2..10].try_into().unwrap_or_default());
                    let flags = u16::from_be_bytes([payload[10], payload[11]]);
                    self.read_only = flags & TRANSMIT_READ_ONLY != 0;
                }
                REP_ACK => return Ok(()),
                k if k & REP_ERR_BIT != 0 => {
                    let msg = String::from_utf8_lossy(&payload).into_owned();
                    return Err(protocol(&format!("export {export:?} refused: {msg}")));
                }
                _ => {}
            }
        }
    }

    fn request(&mut self, command: u16, offset: u64, length: u32, data: &[u8]) -> io::Result<u64> {
        self.cookie += 1;
        let mut msg = Vec::with_capacity(28 + data.len());
        msg.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        msg.extend_from_slice(&0u16.to_be_bytes());
        msg.extend_from_slice(&command.to_be_bytes());
        msg.extend_from_slice(&self.cookie.to_be_bytes());
        msg.extend_from_slice(&offset.to_be_bytes());
        msg.extend_from_slice(&length.to_be_bytes());
        self.sock.write_all(&msg)?;
        if !data.is_empty() {
            self.sock.write_all(data)?;
        }
        Ok(self.cookie)
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let cookie = self.request(CMD_READ, offset, buf.len() as u32, &[])?;
        self.replies(cookie, |kind, _, sock| match kind {
            ReplyPart::Simple => sock.read_exact(buf),
            ReplyPart::Chunk(REPLY_OFFSET_DATA, len) => {
                let at = get_u64(sock)?;
                let start = at
                    .checked_sub(offset)
                    .ok_or_else(|| protocol("data before request"))?
                    as usize;
                let n = len
                    .checked_sub(8)
                    .ok_or_else(|| protocol("short data chunk"))? as usize;
                let dest = buf
                    .get_mut(start..start + n)
                    .ok_or_else(|| protocol("data chunk outside request"))?;
                sock.read_exact(dest)
            }
            ReplyPart::Chunk(REPLY_OFFSET_HOLE, _) => {
                let at = get_u64(sock)?;
                let n = get_u32(sock)? as usize;
                let start = at
                    .checked_sub(offset)
                    .ok_or_else(|| protocol("hole before request"))?
                    as usize;
                buf.get_mut(start..start + n)
                    .ok_or_else(|| protocol("hole outside request"))?
                    .fill(0);
                Ok(())
            }
            ReplyPart::Chunk(_, len) => skip(sock, len),
        })
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let cookie = self.request(CMD_WRITE, offset, data.len() as u32, data)?;
        self.replies(cookie, |_, payload, sock| match payload {
            0 => Ok(()),
            len => skip(sock, len),
        })
    }

    pub fn flush(&mut self) -> io::Result<()> {
        let cookie = self.request(CMD_FLUSH, 0, 0, &[])?;
        self.replies(cookie, |_, payload, sock| skip(sock, payload))
    }

    /// The extents of `[offset, offset+length)` as far as the server answers
    /// (at least one extent); with no block status, one extent of data.
    pub fn extents(&mut self, offset: u64, length: u32) -> io::Result<Vec<Extent>> {
        let Some(context) = self.allocation_context else {
            return Ok(vec![Extent {
                offset,
                length: u64::from(length),
                zero: false,
            }]);
        };
        let runs = self.block_status(offset, length, context)?;
        Ok(runs
            .into_iter()
            .map(|(offset, length, flags)| Extent {
                offset,
                length,
                zero: flags & STATE_ZERO != 0,
            })
            .collect())
    }

    /// The ranges (offset, length) the dirty bitmap marks changed, over the
    /// whole export, merged where they touch.
    pub fn dirty_ranges(&mut self) -> io::Result<Vec<(u64, u64)>> {
        let context = self
            .dirty
            .as_ref()
            .and_then(|d| d.1)
            .ok_or_else(|| protocol("no dirty bitmap was negotiated"))?;
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = 0;
        while at < self.size {
            let span = (self.size - at).min(1 << 30) as u32;
            for (offset, length, flags) in self.block_status(at, span, context)? {
                at = offset + length;
                if flags & STATE_DIRTY == 0 {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == offset => last.1 += length,
                    _ => out.push((offset, length)),
                }
            }
        }
        Ok(out)
    }

    /// One BLOCK_STATUS request: the runs (offset, length, flags) that
    /// `context` reports, at least one.
    fn block_status(
        &mut self,
        offset: u64,
        length: u32,
        context: u32,
    ) -> io::Result<Vec<(u64, u64, u32)>> {
        let cookie = self.request(CMD_BLOCK_STATUS, offset, length, &[])?;
        let mut out = Vec::new();
        self.replies(cookie, |kind, _, sock| match kind {
            ReplyPart::Chunk(REPLY_BLOCK_STATUS, len) => {
                let id = get_u32(sock)?;
                let mut rest = len
                    .checked_sub(4)
                    .ok_or_else(|| protocol("short block status"))?;
                let mut at = offset;
                while rest >= 8 {
                    let n = u64::from(get_u32(sock)?);
                    let flags = get_u32(sock)?;
                    rest -= 8;
                    if id == context && n > 0 {
                        out.push((at, n, flags));
                    }
                    at += n;
                }
                skip(sock, rest)
            }
            ReplyPart::Chunk(_, len) => skip(sock, len),
            ReplyPart::Simple => Ok(()),
        })?;
        if out.is_empty() {
            return Err(protocol("empty block status reply"));
        }
        Ok(out)
    }

    /// Reads the replies to `cookie` until the last one, handing each part's
    /// payload to `part` (which must consume exactly its payload).
    fn replies<F>(&mut self, cookie: u64, mut part: F) -> io::Result<()>
    where
        F: FnMut(ReplyPart, u32, &mut UnixStream) -> io::Result<()>,
    {
        loop {
            let magic = self.get_u32()?;
            match magic {
                SIMPLE_REPLY_MAGIC => {
                    let error = self.get_u32()?;
                    self.check_cookie(cookie)?;
                    if error != 0 {
                        return Err(server_error(error, ""));
                    }
                    return part(ReplyPart::Simple, 0, &mut self.sock);
                }
                STRUCTURED_REPLY_MAGIC => {
                    let flags = self.get_u16()?;
                    let kind = self.get_u16()?;
                    self.check_cookie(cookie)?;
                    let len = self.get_u32()?;
                    if kind & REPLY_ERROR_BIT != 0 {
                        return Err(self.error_chunk(len));
                    }
                    if kind != REPLY_NONE {
                        part(ReplyPart::Chunk(kind, len), len, &mut self.sock)?;
                    }
                    if flags & REPLY_FLAG_DONE != 0 {
                        return Ok(());
                    }
                }
                _ => return Err(protocol("bad reply magic")),
            }
        }
    }

    fn error_chunk(&mut self, len: u32) -> io::Error {
        let mut payload = vec![0; len as usize];
        if let Err(e) = self.sock.read_exact(&mut payload) {
            return e;
        }
        let code = payload
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or_default()))
            .unwrap_or(0);
        let msg_len = payload
            .get(4..6)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .unwrap_or(0);
        let msg = payload.get(6..6 + msg_len).unwrap_or_default();
        server_error(code, &String::from_utf8_lossy(msg))
    }

    fn check_cookie(&mut self, cookie: u64) -> io::Result<()> {
        if self.get_u64()? != cookie {
            return Err(protocol("reply for another request"));
        }
        Ok(())
    }

    fn get_u16(&mut self) -> io::Result<u16> {
        let mut b = [0; 2];
        self.sock.read_exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn get_u32(&mut self) -> io::Result<u32> {
        get_u32(&mut self.sock)
    }

    fn get_u64(&mut self) -> io::Result<u64> {
        get_u64(&mut self.sock)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.request(CMD_DISC, 0, 0, &[]);
    }
}

enum ReplyPart {
    Simple,
    /// A structured reply chunk: its type and payload length.
    Chunk(u16, u32),
}

fn put_str32(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn get_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn get_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn skip(sock: &mut UnixStream, len: u32) -> io::Result<()> {
    io::copy(&mut sock.take(u64::from(len)), &mut io::sink()).map(|_| ())
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("NBD: {what}"))
}

fn server_error(code: u32, msg: &str) -> io::Error {
    let errno = match code {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => "error",
    };
    io::Error::other(
        format!("NBD server: {errno} ({code}) {msg}")
            .trim_end()
            .to_string(),
    )
}
