//! Configures the guest's network interfaces as the host's namespace has
//! them (name, MTU, IPv4 address, routes), with plain interface ioctls.

use microrun_protocol::{NetInterface, NetRoute};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct NetError(pub String);

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn last(what: &str, name: &str) -> NetError {
    NetError(format!(
        "{name}: {what}: {}",
        std::io::Error::last_os_error()
    ))
}

fn ifreq(name: &str) -> Result<libc::ifreq, NetError> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= req.ifr_name.len() {
        return Err(NetError(format!("bad interface name {name:?}")));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the bytes are a
    // valid sockaddr for AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// "a.b.c.d/n" → (address, netmask).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (a, p) = s.split_once('/')?;
    let p: u32 = p.parse().ok().filter(|p| *p <= 32)?;
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    Some((a.parse().ok()?, Ipv4Addr::from(mask)))
}

struct Ctl(OwnedFd);

impl Ctl {
    fn open() -> Result<Ctl, NetError> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last("socket", "net"));
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Ctl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl(
        &self,
        req: libc::c_ulong,
        arg: &mut libc::ifreq,
        what: &str,
        name: &str,
    ) -> Result<(), NetError> {
        // SAFETY: the interface ioctls used here read or write the ifreq we own.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), req, arg as *mut libc::ifreq) } < 0 {
            return Err(last(what, name));
        }
        Ok(())
    }

    fn set_flags(&self, name: &str, up: bool) -> Result<(), NetError> {
        let mut req = ifreq(name)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req, "get flags", name)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let mut flags = unsafe { req.ifr_ifru.ifru_flags };
        if up {
            flags |= libc::IFF_UP as libc::c_short;
        } else {
            flags &= !(libc::IFF_UP as libc::c_short);
        }
        req.ifr_ifru.ifru_flags = flags;
        self.ioctl(libc::SIOCSIFFLAGS, &mut req, "set flags", name)
    }
}

/// Writes network sysctls (only `net.*` keys) in the guest's namespace.
pub fn sysctls(list: &[(String, String)]) -> Result<(), NetError> {
    for (key, value) in list {
        let path = sysctl_path(key).ok_or_else(|| NetError(format!("refused sysctl {key:?}")))?;
        std::fs::write(&path, value).map_err(|e| NetError(format!("sysctl {key}: {e}")))?;
    }
    Ok(())
}

fn sysctl_path(key: &str) -> Option<String> {
    let ok = key.starts_with("net.")
        && key.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    ok.then(|| format!("/proc/sys/{}", key.replace('.', "/")))
}

/// How long a hotplugged device may take to show up as an interface.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The guest interface with MAC `mac`, waiting for it to be probed.
fn interface_by_mac(mac: &str) -> Result<String, NetError> {
    let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
            for e in dir.flatten() {
                let addr = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
                if addr.trim().eq_ignore_ascii_case(mac) {
                    return Ok(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(NetError(format!("no guest interface with MAC {mac}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Probes hotplugged devices: placeholders (`virtio-mmio.<n>`) the
/// monitor announced at boot and has since filled; binding the driver
/// again makes it look.
pub fn probe(devices: &[String]) -> Result<(), NetError> {
    for d in devices {
        let ok = d
            .strip_prefix("virtio-mmio.")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Err(NetError(format!("bad device name {d:?}")));
        }
        std::fs::write("/sys/bus/platform/drivers/virtio-mmio/bind", d)
            .map_err(|e| NetError(format!("probe device {d}: {e}")))?;
    }
    Ok(())
}

/// Brings up loopback and each interface, found by its MAC, named, sized
/// and addressed as on the host; then adds the routes.
pub fn configure(ifaces: &[NetInterface], routes: &[NetRoute]) -> Result<(), NetError> {
    let ctl = Ctl::open()?;
    ctl.set_flags("lo", true)?;
    for iface in ifaces {
        let kernel_name = interface_by_mac(&iface.mac)?;
        if iface.name != kernel_name {
            let mut req = ifreq(&kernel_name)?;
            let new = ifreq(&iface.name)?;
            req.ifr_ifru.ifru_newname = new.ifr_name;
            ctl.ioctl(libc::SIOCSIFNAME, &mut req, "rename", &kernel_name)?;
        }
        let name = &iface.name;
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_mtu = iface.mtu as libc::c_int;
        ctl.ioctl(libc::SIOCSIFMTU, &mut req, "set MTU", name)?;
        // The ioctls take one address; a second one is reported, not hidden.
        if iface.addresses.len() > 1 {
            return Err(NetError(format!(
                "{name}: {} IPv4 addresses; only one per interface is supported",
                iface.addresses.len()
            )));
        }
        if let Some(cidr) = iface.addresses.first() {
            let (addr, mask) = parse_cidr(cidr)
                .ok_or_else(|| NetError(format!("{name}: bad address {cidr:?}")))?;
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_addr = sockaddr(addr);
            ctl.ioctl(libc::SIOCSIFADDR, &mut req, "set address", name)?;
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_netmask = sockaddr(mask);
            ctl.ioctl(libc::SIOCSIFNETMASK, &mut req, "set netmask", name)?;
        }
        ctl.set_flags(name, true)?;
    }
    for r in routes {
        add_route(&ctl, r)?;
    }
    Ok(())
}

fn add_route(ctl: &Ctl, r: &NetRoute) -> Result<(), NetError> {
    let (dest, mask) = parse_cidr(&r.destination)
        .ok_or_else(|| NetError(format!("bad route destination {:?}", r.destination)))?;
    let gateway = match &r.gateway {
        Some(g) => Some(
            g.parse::<Ipv4Addr>()
                .map_err(|_| NetError(format!("bad gateway {g:?}")))?,
        ),
        None => None,
    };
    let dev = std::ffi::CString::new(r.device.as_str())
        .map_err(|_| NetError(format!("bad device {:?}", r.device)))?;
    // SAFETY: rtentry is plain data; all zeroes is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(dest);
    rt.rt_genmask = sockaddr(mask);
    rt.rt_flags = libc::RTF_UP;
    if let Some(g) = gateway {
        rt.rt_gateway = sockaddr(g);
        rt.rt_flags |= libc::RTF_GATEWAY;
    }
    rt.rt_dev = dev.as_ptr() as *mut libc::c_char;
    // SAFETY: SIOCADDRT reads the rtentry and the device name, both alive here.
    if unsafe {
        libc::ioctl(
            ctl.0.as_raw_fd(),
            libc::SIOCADDRT,
            &mut rt as *mut libc::rtentry,
        )
    } < 0
    {
        let e = std::io::Error::last_os_error();
        // The kernel adds the subnet route of an address itself.
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(NetError(format!("route {}: {e}", r.destination)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_net_sysctls_are_written() {
        assert_eq!(
            sysctl_path("net.ipv6.conf.all.disable_ipv6").as_deref(),
            Some("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        );
        assert_eq!(sysctl_path("kernel.panic"), None);
        assert_eq!(sysctl_path("net..x"), None);
        assert_eq!(sysctl_path("net.ipv4/../../x"), None);
    }

    #[test]
    fn cidrs_parse_to_address_and_mask() {
        assert_eq!(
            parse_cidr("172.17.0.2/16"),
            Some((Ipv4Addr::new(172, 17, 0, 2), Ipv4Addr::new(255, 255, 0, 0)))
        );
        assert_eq!(
            parse_cidr("0.0.0.0/0"),
            Some((Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(parse_cidr("1.2.3.4/33"), None);
        assert_eq!(parse_cidr("1.2.3.4"), None);
        assert_eq!(parse_cidr("x/8"), None);
    }
}
