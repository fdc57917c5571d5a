//! The container's network namespace, wired to the VM: each interface
//! docker/CNI put there (a veth) gets a tap, joined to it in both
//! directions by tc ingress + matchall + mirred redirect, and a virtio-net
//! device on the tap with the veth's MAC and MTU. The guest agent gives the
//! guest interface the veth's addresses and routes.

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
    /// Interfaces of the namespace that were not there at create (Docker
    /// ≥ 26 moves the veth in between create and start): the VM cannot take
    /// them without hotplug, which microrun does not do.
    pub fn unwired(&self) -> Result<Vec<String>, NetError> {
        let links = Netlink::open()?.links()?;
        Ok(links
            .into_iter()
            .filter(|l| {
                !l.loopback
                    && !self
                        .wired
                        .iter()
                        .any(|w| w.veth == l.index || w.tap.index == l.index)
            })
            .map(|l| l.name)
            .collect())
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
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let addrs = nl.addresses()?;
    let routes = nl.routes()?;
    let mut net = Network {
        wired: Vec::new(),
        routes: Vec::new(),
        sysctls: read_sysctls(),
    };
    let res = (|| {
        for (i, l) in links.iter().filter(|l| !l.loopback).enumerate() {
            let mac = l.mac.ok_or_else(|| NetError::NoMac(l.name.clone()))?;
            let mtu = u16::try_from(l.mtu)
                .ok()
                .filter(|m| *m >= 68)
                .ok_or(NetError::Mtu {
                    name: l.name.clone(),
                    mtu: l.mtu,
                })?;
            let tap = Tap::create(&format!("mrtap{i}"), l.mtu)?;
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
            net.wired.push(wired);
            nl.redirect(l.index, tap_index)?;
            nl.add_ingress(tap_index)?;
            nl.redirect(tap_index, l.index)?;
        }
        for r in &routes {
            let Some(dev) = links.iter().find(|l| l.index == r.index && !l.loopback) else {
                continue;
            };
            net.routes.push(NetRoute {
                destination: format!("{}/{}", r.dest, r.prefix),
                gateway: r.gateway.map(|g| g.to_string()),
                device: dev.name.clone(),
            });
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(net),
        Err(e) => {
            net.unwire();
            Err(e)
        }
    }
}
