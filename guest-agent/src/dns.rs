//! The guest end of the DNS relay: answers on the container's loopback
//! nameservers (Docker's 127.0.0.11), which only exist in its network
//! namespace on the host, by passing each exchange to the monitor over
//! vsock (protocol: DNS_PORT). The guest's lo is up by then.

use microrun_protocol::DNS_PORT;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Exchanges in flight at once, UDP and TCP together; a client whose query
/// is dropped retries as it would with a busy server.
const MAX_EXCHANGES: usize = 64;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds port 53 (UDP and TCP) on each address and serves it from threads.
pub fn serve(addrs: &[Ipv4Addr]) -> io::Result<()> {
    let busy = Arc::new(AtomicUsize::new(0));
    for &addr in addrs {
        let udp = UdpSocket::bind((addr, 53))?;
        let tcp = TcpListener::bind((addr, 53))?;
        let b = busy.clone();
        microrun_protocol::threads::spawn(move || udp_loop(udp, addr, b));
        let b = busy.clone();
        microrun_protocol::threads::spawn(move || tcp_loop(tcp, addr, b));
    }
    Ok(())
}

/// Runs `work` in a thread unless MAX_EXCHANGES are already running.
fn bounded(busy: &Arc<AtomicUsize>, work: impl FnOnce() + Send + 'static) {
    if busy.fetch_add(1, Ordering::AcqRel) >= MAX_EXCHANGES {
        busy.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let busy = busy.clone();
    microrun_protocol::threads::spawn(move || {
        work();
        busy.fetch_sub(1, Ordering::AcqRel);
    });
}

fn open(proto: &str, addr: Ipv4Addr) -> io::Result<UnixStream> {
    let mut s = crate::vsock::connect_host(DNS_PORT)?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    s.write_all(format!("{proto} {addr}\n").as_bytes())?;
    Ok(s)
}

fn udp_loop(sock: UdpSocket, addr: Ipv4Addr, busy: Arc<AtomicUsize>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let (Ok(reply_sock), query) = (sock.try_clone(), buf[..n].to_vec()) else {
            continue;
        };
        bounded(&busy, move || {
            if let Ok(answer) = udp_exchange(addr, &query) {
                let _ = reply_sock.send_to(&answer, client);
            }
        });
    }
}

fn udp_exchange(addr: Ipv4Addr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = open("udp", addr)?;
    let len = u16::try_from(query.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    s.write_all(&len.to_be_bytes())?;
    s.write_all(query)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut answer)?;
    Ok(answer)
}

fn tcp_loop(listener: TcpListener, addr: Ipv4Addr, busy: Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        bounded(&busy, move || {
            let _ = tcp_exchange(addr, conn);
        });
    }
}

fn tcp_exchange(addr: Ipv4Addr, client: TcpStream) -> io::Result<()> {
    let host = open("tcp", addr)?;
    host.set_read_timeout(None)?;
    let mut to_host = host.try_clone()?;
    let back = microrun_protocol::relay::spawn(host, client.try_clone()?, |c: TcpStream| {
        let _ = c.shutdown(std::net::Shutdown::Write);
    });
    let _ = microrun_protocol::relay::copy(&mut &client, &mut to_host);
    microrun_protocol::relay::shutdown_write(to_host);
    let _ = back.join();
    Ok(())
}
