//! The host side of virtio-vsock, Firecracker-style "hybrid" mapping:
//! host programs connect to the unix socket PATH and write `CONNECT <port>\n`
//! to reach guest port <port> (answered `OK <host port>\n`); a guest that
//! connects to host port P reaches the unix socket `PATH_P`.
//! Flow control follows virtio's credit scheme; nothing is buffered beyond
//! the credit each side granted.

use super::packet::*;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// What we grant the guest per connection (bytes in flight to the host).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Largest payload we put in one packet to the guest.
const MAX_PAYLOAD: usize = 64 * 1024;
const MAX_CONNECT_LINE: usize = 32;
/// Local ports for host-initiated connections start here.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
const LISTENER_TOKEN: u64 = u64::MAX;

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated, REQUEST sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

struct Conn {
    stream: UnixStream,
    state: State,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes we sent the guest (wrapping, per the spec).
    tx_cnt: u32,
    /// Bytes from the guest we delivered to the host stream.
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    /// Guest data the host stream has not taken yet (≤ BUF_ALLOC).
    to_host: VecDeque<u8>,
    /// The guest will send no more: shut the host stream's write side once flushed.
    guest_done_sending: bool,
    host_eof: bool,
    /// What epoll watches on the host stream (empty: not registered).
    interest: EventSet,
    /// Reading paused while the guest has no RX buffers.
    reads_paused: bool,
}

impl Conn {
    fn new(stream: UnixStream, state: State) -> Conn {
        Conn {
            stream,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            to_host: VecDeque::new(),
            guest_done_sending: false,
            host_eof: false,
            interest: EventSet::empty(),
            reads_paused: false,
        }
    }

    /// How much more the guest has room for.
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

/// (host-side port, guest port)
type Key = (u32, u32);

pub struct Muxer {
    guest_cid: u64,
    path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<Key, Conn>,
    /// Host clients that have not sent their CONNECT line yet.
    handshakes: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    /// Control packets waiting for an RX buffer.
    control: VecDeque<Header>,
    next_port: u32,
}

impl Muxer {
    pub fn new(guest_cid: u64, path: &Path) -> std::io::Result<Muxer> {
        let _ = std::fs::remove_file(path);
        let listener = crate::unixpath::bind(path)?;
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
        )?;
        Ok(Muxer {
            guest_cid,
            path: path.to_path_buf(),
            listener,
            epoll,
            conns: HashMap::new(),
            handshakes: HashMap::new(),
            control: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
        })
    }

    /// The fd that becomes readable when any host-side socket needs service.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn header(&self, key: Key, op: u16) -> Header {
        let (fwd_cnt, flags) = self
            .conns
            .get(&key)
            .map(|c| (c.fwd_cnt, 0))
            .unwrap_or((0, 0));
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            typ: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn rst(&mut self, key: Key) {
        let h = self.header(key, OP_RST);
        self.remove(key);
        self.control.push_back(h);
    }

    fn remove(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                c.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }

    fn token(key: Key) -> u64 {
        ((key.0 as u64) << 32) | key.1 as u64
    }

    /// Watches a connection's host stream for reading only while the guest
    /// has credit and RX buffers (so a full guest never makes us spin), and
    /// for writing while guest data waits for the host reader (so a slow
    /// reader resumes the flow, and with it the guest's credit).
    fn update_interest(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let mut want = EventSet::empty();
        if c.state == State::Established && !c.host_eof && c.peer_credit() > 0 && !c.reads_paused {
            want |= EventSet::IN;
        }
        if !c.to_host.is_empty() {
            want |= EventSet::OUT;
        }
        if want == c.interest {
            return;
        }
        let fd = c.stream.as_raw_fd();
        let op = if want.is_empty() {
            ControlOperation::Delete
        } else if c.interest.is_empty() {
            ControlOperation::Add
        } else {
            ControlOperation::Modify
        };
        let _ = self
            .epoll
            .ctl(op, fd, EpollEvent::new(want, Self::token(key)));
        c.interest = want;
    }

    /// Stops reading host streams (no RX buffers: nowhere to put data).
    pub fn pause_reads(&mut self) {
        self.set_reads_paused(true);
    }

    /// Reads host streams again (the guest posted RX buffers).
    pub fn resume_reads(&mut self) {
        self.set_reads_paused(false);
    }

    fn set_reads_paused(&mut self, paused: bool) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            if let Some(c) = self.conns.get_mut(&key) {
                c.reads_paused = paused;
            }
            self.update_interest(key);
        }
    }

    /// Handles host-side readiness: new clients, CONNECT lines. Data is read
    /// lazily when RX buffers are filled.
    pub fn poll_host(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        let n = self.epoll.wait(0, &mut events).unwrap_or(0);
        for ev in &events[..n] {
            match ev.data() {
                LISTENER_TOKEN => self.accept(),
                t if t >> 32 == 0xffff_fffe => self.handshake((t & 0xffff_ffff) as RawFd),
                _ => {}
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = s.as_raw_fd();
            let token = (0xffff_fffeu64 << 32) | fd as u64;
            if self
                .epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .is_ok()
            {
                self.handshakes.insert(fd, (s, Vec::new()));
                // The CONNECT line is often already there.
                self.handshake(fd);
            }
        }
    }

    fn handshake(&mut self, fd: RawFd) {
        let Some((mut s, mut line)) = self.handshakes.remove(&fd) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        match s.read(&mut buf) {
            Ok(0) => return self.drop_handshake(&s),
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return self.drop_handshake(&s),
        }
        let Some(end) = line.iter().position(|b| *b == b'\n') else {
            if line.len() >= MAX_CONNECT_LINE {
                return self.drop_handshake(&s);
            }
            self.handshakes.insert(fd, (s, line));
            return;
        };
        self.drop_handshake(&s);
        let port = std::str::from_utf8(&line[..end])
            .ok()
            .and_then(|l| l.strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(port) = port else { return };
        let local = self.next_port;
        self.next_port = self.next_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
        let key = (local, port);
        self.conns.insert(key, Conn::new(s, State::Connecting));
        let h = self.header(key, OP_REQUEST);
        self.control.push_back(h);
    }

    fn drop_handshake(&mut self, s: &UnixStream) {
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            s.as_raw_fd(),
            EpollEvent::default(),
        );
    }

    /// One packet from the guest. Returns false if it broke the protocol.
    pub fn from_guest(&mut self, h: &Header, data: &[u8]) -> bool {
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            return false;
        }
        if h.typ != TYPE_STREAM {
            self.control.push_back(Header {
                op: OP_RST,
                ..self.header((h.dst_port, h.src_port), OP_RST)
            });
            return true;
        }
        let key = (h.dst_port, h.src_port);
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
        }
        match h.op {
            OP_REQUEST => self.guest_connect(key),
            OP_RESPONSE => match self.conns.get_mut(&key) {
                Some(c) if c.state == State::Connecting => {
                    c.state = State::Established;
                    let line = format!("OK {}\n", key.0);
                    if c.stream.write_all(line.as_bytes()).is_err() {
                        self.rst(key);
                    }
                }
                _ => self.rst(key),
            },
            OP_RW => {
                let Some(c) = self.conns.get_mut(&key) else {
                    self.rst(key);
                    return true;
                };
                if c.to_host.len() + data.len() > BUF_ALLOC as usize {
                    // More than the credit we granted: the guest broke the rules.
                    self.rst(key);
                    return true;
                }
                c.to_host.extend(data);
                self.flush_to_host(key);
            }
            OP_SHUTDOWN => {
                if h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND) == (SHUTDOWN_RCV | SHUTDOWN_SEND) {
                    self.rst(key);
                } else if let Some(c) = self.conns.get_mut(&key) {
                    if h.flags & SHUTDOWN_SEND != 0 {
                        c.guest_done_sending = true;
                    }
                    self.flush_to_host(key);
                }
            }
            OP_RST => self.remove(key),
            OP_CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    let h = self.header(key, OP_CREDIT_UPDATE);
                    self.control.push_back(h);
                } else {
                    self.rst(key);
                }
            }
            OP_CREDIT_UPDATE => {}
            _ => self.rst(key),
        }
        self.update_interest(key);
        true
    }

    fn guest_connect(&mut self, key: Key) {
        if self.conns.contains_key(&key) {
            return self.rst(key);
        }
        let target = format!("{}_{}", self.path.display(), key.0);
        match crate::unixpath::connect(Path::new(&target))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
        {
            Ok(s) => {
                self.conns.insert(key, Conn::new(s, State::Established));
                let h = self.header(key, OP_RESPONSE);
                self.control.push_back(h);
            }
            Err(_) => self.control.push_back(self.header(key, OP_RST)),
        }
    }

    /// Writes buffered guest data to the host stream; grants credit back.
    fn flush_to_host(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        while !c.to_host.is_empty() {
            let (a, _) = c.to_host.as_slices();
            match c.stream.write(a) {
                Ok(0) => break,
                Ok(n) => {
                    c.to_host.drain(..n);
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return self.rst(key),
            }
        }
        if c.to_host.is_empty() && c.guest_done_sending {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        if c.fwd_cnt.wrapping_sub(c.last_fwd_cnt_sent) >= BUF_ALLOC / 4 {
            c.last_fwd_cnt_sent = c.fwd_cnt;
            let h = self.header(key, OP_CREDIT_UPDATE);
            self.control.push_back(h);
        }
        self.update_interest(key);
    }

    /// Retries pending writes to host streams (their buffers may have drained).
    pub fn flush_all(&mut self) {
        let keys: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.to_host.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.flush_to_host(k);
        }
    }

    /// The next packet for the guest whose payload fits in `room` bytes:
    /// control packets first, then data from host streams within credit.
    pub fn next_for_guest(&mut self, room: usize) -> Option<(Header, Vec<u8>)> {
        if let Some(h) = self.control.pop_front() {
            if let Some(c) = self.conns.get_mut(&(h.src_port, h.dst_port)) {
                c.last_fwd_cnt_sent = c.fwd_cnt;
            }
            return Some((h, Vec::new()));
        }
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            if c.state != State::Established || c.host_eof {
                continue;
            }
            let want = (c.peer_credit() as usize).min(room).min(MAX_PAYLOAD);
            if want == 0 {
                continue;
            }
            let mut buf = vec![0u8; want];
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.host_eof = true;
                    let mut h = self.header(key, OP_SHUTDOWN);
                    h.flags = SHUTDOWN_SEND;
                    self.update_interest(key);
                    return Some((h, Vec::new()));
                }
                Ok(n) => {
                    buf.truncate(n);
                    c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
                    let mut h = self.header(key, OP_RW);
                    h.len = n as u32;
                    self.update_interest(key);
                    return Some((h, buf));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => {
                    self.rst(key);
                    return self.control.pop_front().map(|h| (h, Vec::new()));
                }
            }
        }
        None
    }

    pub fn has_control(&self) -> bool {
        !self.control.is_empty()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
