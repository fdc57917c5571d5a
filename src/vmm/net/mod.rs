//! The container's network namespace, wired to the VM: each interface
//! docker/CNI put there (a veth) gets a tap, joined to it in both
//! directions by tc ingress + matchall + mirred redirect, and a virtio-net
//! device on the tap with the veth's MAC and MTU. The guest agent gives the
//! guest interface the veth's addresses and routes.

pub mod dns;
pub mod netlink;
pub mod tap;

use microrun_protocol::{NetInterface, NetRoute};
use netlink::{Netlink, NetlinkError};
use tap::{Tap, TapError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("network interface {0} has no MAC address (only Ethernet interfaces can be given to the VM)")]
    NoMac(String),
    #[error("the host kernel has no tc matchall filter or mirred action (modules cls_matchall, act_mirred): {0}")]
    NoTc(NetlinkError),
    #[error("network interface {name}: MTU {mtu} is out of range")]
    Mtu { name: String, mtu: u32 },
}

/// One interface wired to a tap.
pub struct Wired {
    pub tap: Tap,
    /// The veth's index in the namespace (its ingress qdisc is ours).
    pub veth: u32,
    pub mac: [u8; 6],
    pub mtu: u16,
    pub guest: NetInterface,
}

/// Everything the namespace has: the wired interfaces, the routes and the
/// sysctls the guest mirrors.
pub struct Network {
    pub wired: Vec<Wired>,
    pub routes: Vec<NetRoute>,
    pub sysctls: Vec<(String, String)>,
}

/// Namespace settings the guest copies: Docker turns IPv6 off in the
/// container's namespace unless the network has it.
const MIRRORED_SYSCTLS: &[&str] = &[
    "net.ipv6.conf.all.disable_ipv6",
    "net.ipv6.conf.default.disable_ipv6",
];

fn read_sysctls() -> Vec<(String, String)> {
    MIRRORED_SYSCTLS
        .iter()
        .filter_map(|k| {
            // /proc/sys/net shows the reading process's network namespace.
            let v = std::fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/"))).ok()?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

impl Network {
    /// Interfaces of the namespace that are not wired yet.
    pub fn unwired(&self) -> Result<Vec<String>, NetError> {
        let links = Netlink::open()?.links()?;
        Ok(links
            .into_iter()
            .filter(|l| self.wants_wiring(l))
            .map(|l| l.name)
            .collect())
    }

    /// A non-loopback interface that is neither a wired veth nor our tap.
    fn wants_wiring(&self, l: &netlink::Link) -> bool {
        !l.loopback
            && !self
                .wired
                .iter()
                .any(|w| w.veth == l.index || w.tap.index == l.index)
    }

    /// Removes the tc state from the veths (the taps go with their fds).
    pub fn unwire(&self) {
        if let Ok(mut nl) = Netlink::open() {
            for w in &self.wired {
                let _ = nl.del_ingress(w.veth);
            }
        }
    }
}

fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Wires every non-loopback interface of the current network namespace.
/// On error, whatever was wired so far is undone.
pub fn wire() -> Result<Network, NetError> {
    let mut net = Network {
        wired: Vec::new(),
        routes: Vec::new(),
        sysctls: read_sysctls(),
    };
    match net.wire_new() {
        Ok(_) => Ok(net),
        Err(e) => {
            net.unwire();
            Err(e)
        }
    }
}

impl Network {
    /// Wires the interfaces that are not wired yet (all at create; at start
    /// those Docker ≥ 26 moved in since) and reads the routes again.
    /// Returns the newly wired ones; on error they stay in `wired`, for
    /// `unwire`.
    pub fn wire_new(&mut self) -> Result<&[Wired], NetError> {
        let mut nl = Netlink::open()?;
        let links = nl.links()?;
        let addrs = nl.addresses()?;
        let routes = nl.routes()?;
        let first_new = self.wired.len();
        let new: Vec<_> = links.iter().filter(|l| self.wants_wiring(l)).collect();
        for l in new {
            let mac = l.mac.ok_or_else(|| NetError::NoMac(l.name.clone()))?;
            let mtu = u16::try_from(l.mtu)
                .ok()
                .filter(|m| *m >= 68)
                .ok_or(NetError::Mtu {
                    name: l.name.clone(),
                    mtu: l.mtu,
                })?;
            let tap = Tap::create(&format!("mrtap{}", self.wired.len()), l.mtu)?;
            nl.add_ingress(l.index)?;
            let wired = Wired {
                veth: l.index,
                mac,
                mtu,
                guest: NetInterface {
                    name: l.name.clone(),
                    mac: mac_string(&mac),
                    mtu: l.mtu,
                    addresses: addrs
                        .iter()
                        .filter(|a| a.index == l.index)
                        .map(|a| format!("{}/{}", a.addr, a.prefix))
                        .collect(),
                },
                tap,
            };
            let tap_index = wired.tap.index;
            self.wired.push(wired);
            nl.redirect(l.index, tap_index).map_err(|e| match &e {
                NetlinkError::Kernel { source, .. }
                    if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::EOPNOTSUPP)) =>
                {
                    NetError::NoTc(e)
                }
                _ => NetError::Netlink(e),
            })?;
            nl.add_ingress(tap_index)?;
            nl.redirect(tap_index, l.index)?;
        }
        self.routes.clear();
        for r in &routes {
            let Some(dev) = links.iter().find(|l| l.index == r.index && !l.loopback) else {
                continue;
            };
            self.routes.push(NetRoute {
                destination: format!("{}/{}", r.dest, r.prefix),
                gateway: r.gateway.map(|g| g.to_string()),
                device: dev.name.clone(),
            });
        }
        Ok(&self.wired[first_new..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A frame arriving on the namespace's interface comes out of the tap,
    /// and back: real taps and tc in a fresh network namespace (a tap
    /// stands in for the veth: writing to its fd is its ingress).
    #[test]
    fn frames_cross_the_tc_redirects_both_ways() {
        if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("skipped: needs root and /dev/net/tun");
            return;
        }
        // SAFETY: the child runs only the code below and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = (|| -> Option<bool> {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
                    let veth = Tap::create("veth-test", 1400).ok()?;
                    let net = match wire() {
                        Err(NetError::NoTc(e)) => {
                            eprintln!("skipped: {e}");
                            std::process::exit(77);
                        }
                        r => r.ok()?,
                    };
                    let w = net.wired.first()?;
                    let mut frame = vec![0xffu8; 6];
                    frame.extend(w.mac);
                    frame.extend([0x88, 0xb5]); // local experimental ethertype
                    frame.extend(b"microrun-wire-test");
                    // The kernel sends its own frames (IPv6 solicitations) too.
                    let arrives = |f: &std::fs::File| {
                        let mut buf = [0u8; 2048];
                        for _ in 0..400 {
                            match (&*f).read(&mut buf) {
                                Ok(n) if buf[..n] == frame[..] => return true,
                                Ok(_) => {}
                                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                            }
                        }
                        false
                    };
                    veth.file().write_all(&frame).ok()?;
                    let at_tap = arrives(w.tap.file());
                    w.tap.file().write_all(&frame).ok()?;
                    let at_veth = arrives(veth.file());
                    let checks = [
                        at_tap,
                        at_veth,
                        net.wired.len() == 1,
                        w.mtu == 1400,
                        w.guest.name == "veth-test",
                        net.unwired().ok()?.is_empty(),
                    ];
                    net.unwire();
                    Some(checks.iter().all(|c| *c))
                })();
                std::process::exit(if ok == Some(true) { 0 } else { 1 });
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                if st == nix::sys::wait::WaitStatus::Exited(child, 77) {
                    eprintln!("skipped: this kernel has no tc matchall/mirred");
                    return;
                }
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
