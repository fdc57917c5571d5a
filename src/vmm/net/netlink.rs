//! A small synchronous rtnetlink client for the container's network
//! namespace: list links, IPv4 addresses and routes; put an ingress qdisc
//! with a matchall → mirred redirect filter on a link; remove it again.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterMatchAllOption, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("netlink: malformed reply: {0}")]
    Decode(String),
    #[error("netlink {what}: {source}")]
    Kernel {
        what: &'static str,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub index: u32,
    pub dest: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

const ETH_P_ALL: u16 = 0x0003;
/// The ingress qdisc's handle, `ffff:`; its parent is TcHandle::INGRESS.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
const IFF_LOOPBACK: u32 = 0x8;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_KERNEL: u8 = 2;

pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends one request; returns the messages of its reply (a dump's
    /// parts, or nothing for an acknowledged change).
    fn request(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.sock.recv(&mut &mut rx[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(NetlinkError::Decode("zero-length message".into()));
                }
                off += len.div_ceil(4) * 4;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(NetlinkError::Kernel {
                                what,
                                source: e.to_io(),
                            }),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.request(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link(&l)),
                _ => None,
            })
            .collect())
    }

    pub fn addresses(&mut self) -> Result<Vec<Addr>, NetlinkError> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let replies = self.request(
            "list addresses",
            RouteNetlinkMessage::GetAddress(req),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => address(&a),
                _ => None,
            })
            .collect())
    }

    /// The main table's IPv4 routes, without the ones the kernel derives
    /// from addresses (the guest's kernel derives them again).
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let replies = self.request(
            "list routes",
            RouteNetlinkMessage::GetRoute(req),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route(&r),
                _ => None,
            })
            .collect())
    }

    /// `tc qdisc add dev IF ingress`
    pub fn add_ingress(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut m = ingress(index);
        m.attributes.push(TcAttribute::Kind("ingress".into()));
        self.request(
            "add ingress qdisc",
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// `tc qdisc del dev IF ingress` (and with it the filters on it).
    pub fn del_ingress(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.request(
            "delete ingress qdisc",
            RouteNetlinkMessage::DelQueueDiscipline(ingress(index)),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// `tc filter add dev FROM parent ffff: protocol all matchall action
    /// mirred egress redirect dev TO`: every frame arriving on FROM leaves
    /// through TO.
    pub fn redirect(&mut self, from: u32, to: u32) -> Result<(), NetlinkError> {
        let mut m = TcMessage::with_index(from as i32);
        m.header.parent = INGRESS_HANDLE;
        // info: priority 1 in the high half, the protocol (network order) below.
        m.header.info = (1 << 16) | u32::from(ETH_P_ALL.to_be());
        let mut mirror = TcMirror::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to;
        let mut action = TcAction::default();
        action.tab = 1;
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        m.attributes = vec![
            TcAttribute::Kind("matchall".into()),
            TcAttribute::Options(vec![TcOption::MatchAll(TcFilterMatchAllOption::Action(
                vec![action],
            ))]),
        ];
        self.request(
            "add redirect filter",
            RouteNetlinkMessage::NewTrafficFilter(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

/// The ingress qdisc of a link, as add and delete name it.
fn ingress(index: u32) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.handle = INGRESS_HANDLE;
    m.header.parent = TcHandle::INGRESS;
    m
}

fn link(l: &LinkMessage) -> Link {
    let mut out = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 1500,
        loopback: l.header.flags.bits() & IFF_LOOPBACK != 0,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Mtu(m) => out.mtu = *m,
            LinkAttribute::Address(b) => out.mac = b.as_slice().try_into().ok(),
            _ => {}
        }
    }
    out
}

fn address(a: &AddressMessage) -> Option<Addr> {
    let addr = a.attributes.iter().find_map(|at| match at {
        AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) => {
            Some(*v)
        }
        _ => None,
    })?;
    Some(Addr {
        index: a.header.index,
        addr,
        prefix: a.header.prefix_len,
    })
}

fn route(r: &RouteMessage) -> Option<Route> {
    if r.header.table != RT_TABLE_MAIN || u8::from(r.header.protocol) == RTPROT_KERNEL {
        return None;
    }
    let mut out = Route {
        index: 0,
        dest: Ipv4Addr::UNSPECIFIED,
        prefix: r.header.destination_prefix_length,
        gateway: None,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => out.dest = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => out.gateway = Some(*g),
            RouteAttribute::Oif(i) => out.index = *i,
            _ => {}
        }
    }
    Some(out)
}
