//! The host end of the DNS relay. A nameserver on the container's loopback
//! (Docker's embedded DNS at 127.0.0.11 on user-defined networks) exists
//! only in the container's network namespace, where dockerd's iptables
//! rules send it to dockerd's resolver; the guest has a loopback of its
//! own. The agent answers there and passes each exchange over vsock to the
//! monitor, which lives in that namespace and asks the real nameserver.
//! See docs/protocol.md (port 1026) for the stream format.

use microrun_protocol::relay;
use oci_spec::runtime::Spec;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DnsError {
    #[error("DNS relay socket {0}: {1}")]
    Listen(PathBuf, io::Error),
}

/// How long the nameserver has to answer (glibc's default is 5 s a try).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Exchanges in flight at once; more wait for the guest to retry.
const MAX_EXCHANGES: usize = 64;
const MAX_HEADER: u64 = 64;
const MAX_RESOLV_CONF: u64 = 64 * 1024;

/// The container's resolv.conf as the spec bind-mounts it.
fn resolv_conf(spec: &Spec) -> Option<PathBuf> {
    spec.mounts()
        .as_ref()?
        .iter()
        .rev()
        .find(|m| m.destination() == Path::new("/etc/resolv.conf"))?
        .source()
        .clone()
}

/// The loopback (127/8) nameservers of the container's resolv.conf: the
/// ones the guest's own loopback cannot answer for.
pub fn loopback_nameservers(spec: &Spec) -> Vec<Ipv4Addr> {
    let Some(path) = resolv_conf(spec) else {
        return Vec::new();
    };
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_RESOLV_CONF).read_to_string(&mut text));
    if read.is_err() {
        return Vec::new();
    }
    parse_nameservers(&text)
}

fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(Ok(addr)) = words.next().map(str::parse::<Ipv4Addr>) {
            if addr.is_loopback() && !found.contains(&addr) {
                found.push(addr);
            }
        }
    }
    found
}

/// Serves the agent's exchanges at `path` (the vsock socket for DNS_PORT)
/// from a thread, for the monitor's lifetime; the caller removes `path`.
pub fn serve(path: &Path, nameservers: Vec<Ipv4Addr>) -> Result<(), DnsError> {
    let listener = crate::unixpath::bind(path).map_err(|e| DnsError::Listen(path.into(), e))?;
    microrun_protocol::threads::spawn(move || accept_loop(listener, Arc::new(nameservers)));
    Ok(())
}

fn accept_loop(listener: UnixListener, nameservers: Arc<Vec<Ipv4Addr>>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_EXCHANGES {
            busy.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (busy, nameservers) = (busy.clone(), nameservers.clone());
        microrun_protocol::threads::spawn(move || {
            let _ = exchange(stream, &nameservers);
            busy.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// One stream from the guest; errors just end it (the guest's resolver
/// retries or reports the failure to the workload).
fn exchange(stream: UnixStream, nameservers: &[Ipv4Addr]) -> io::Result<()> {
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    (&mut reader).take(MAX_HEADER).read_line(&mut line)?;
    let (proto, addr) = parse_header(&line, nameservers)?;
    let server = SocketAddr::from((addr, 53));
    match proto {
        Proto::Udp => udp(reader, stream, server),
        Proto::Tcp => tcp(reader, stream, server),
    }
}

#[derive(Debug, PartialEq)]
enum Proto {
    Udp,
    Tcp,
}

fn parse_header(line: &str, nameservers: &[Ipv4Addr]) -> io::Result<(Proto, Ipv4Addr)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut words = line.split_whitespace();
    let proto = match words.next() {
        Some("udp") => Proto::Udp,
        Some("tcp") => Proto::Tcp,
        _ => return Err(bad("DNS relay: unknown protocol")),
    };
    let addr: Ipv4Addr = words
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| bad("DNS relay: bad address"))?;
    // Only the container's own nameservers: the relay is no way into
    // other services on the namespace's loopback.
    if !nameservers.contains(&addr) || words.next().is_some() {
        return Err(bad("DNS relay: not a nameserver of the container"));
    }
    Ok((proto, addr))
}

fn udp(mut from: impl Read, mut to: UnixStream, server: SocketAddr) -> io::Result<()> {
    let mut len = [0u8; 2];
    from.read_exact(&mut len)?;
    let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
    from.read_exact(&mut query)?;
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    sock.send(&query)?;
    let mut answer = vec![0u8; 65535];
    let n = sock.recv(&mut answer)?;
    to.write_all(&(n as u16).to_be_bytes())?;
    to.write_all(&answer[..n])
}

fn tcp(mut from: impl Read + Send + 'static, to: UnixStream, server: SocketAddr) -> io::Result<()> {
    let conn = TcpStream::connect_timeout(&server, ANSWER_TIMEOUT)?;
    to.set_read_timeout(None)?;
    let mut upstream = conn.try_clone()?;
    let back = relay::spawn(conn, to, relay::shutdown_write);
    let _ = relay::copy(&mut from, &mut upstream);
    let _ = upstream.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

    #[test]
    fn only_loopback_nameservers_are_relayed() {
        let conf = "# generated\nnameserver 127.0.0.11\nnameserver 8.8.8.8\n\
                    nameserver 127.0.0.11\nnameserver ::1\nsearch x\noptions ndots:0\n \
                    nameserver 127.0.0.53 # systemd\nnameserverx 127.0.0.2\n";
        assert_eq!(
            parse_nameservers(conf),
            [DOCKER, Ipv4Addr::new(127, 0, 0, 53)]
        );
        assert!(parse_nameservers("nameserver 10.0.0.1\n").is_empty());
    }

    #[test]
    fn headers_name_a_listed_nameserver() {
        let ns = [DOCKER];
        assert_eq!(
            parse_header("udp 127.0.0.11\n", &ns).unwrap(),
            (Proto::Udp, DOCKER)
        );
        assert_eq!(
            parse_header("tcp 127.0.0.11\n", &ns).unwrap(),
            (Proto::Tcp, DOCKER)
        );
        for bad in [
            "udp 127.0.0.1\n",
            "sctp 127.0.0.11\n",
            "udp\n",
            "udp 127.0.0.11 extra\n",
            "",
            "udp 999.0.0.1\n",
        ] {
            assert!(parse_header(bad, &ns).is_err(), "{bad:?}");
        }
    }

    /// A query through the relay reaches a UDP server on loopback and its
    /// answer comes back framed; a stream naming another address is cut.
    #[test]
    fn udp_exchange_round_trips() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, peer) = server.recv_from(&mut buf).unwrap();
            buf[..n].reverse();
            server.send_to(&buf[..n], peer).unwrap();
        });
        let (mut guest, host) = UnixStream::pair().unwrap();
        guest.write_all(&[0, 3, 1, 2, 3]).unwrap();
        let reader = BufReader::new(host.try_clone().unwrap());
        udp(reader, host, port).unwrap();
        let mut answer = [0u8; 5];
        guest.read_exact(&mut answer).unwrap();
        assert_eq!(answer, [0, 3, 3, 2, 1]);

        let (mut guest, host) = UnixStream::pair().unwrap();
        guest.write_all(b"udp 127.0.0.1\n\x00\x01x").unwrap();
        assert!(exchange(host, &[DOCKER]).is_err());
        let mut rest = Vec::new();
        guest.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
