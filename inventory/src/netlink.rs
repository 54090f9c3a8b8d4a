//! rtnetlink queries the inventory needs, on a blocking `NETLINK_ROUTE`
//! socket (the `netlink-sys` and `netlink-packet-route` crates; no async
//! runtime).
//!
//! - [`Rtnl::links`]: every link of the caller's netns, or of another netns
//!   named by its nsid (`IFLA_TARGET_NETNSID`, no `setns`): index, name, kind,
//!   MAC, peer index (`IFLA_LINK`) and the peer's netns id
//!   (`IFLA_LINK_NETNSID`).
//! - [`Rtnl::addresses`]: the IPv4/IPv6 addresses of a netns, likewise.
//! - [`Rtnl::nsid_of`]: the nsid the caller's netns gives the namespace behind
//!   an open file (`RTM_GETNSID` with `NETNSA_FD`).
//! - [`LinkEvents`]: a socket subscribed to link changes (`RTNLGRP_LINK`).
//!
//! Privileges: dumping the own netns and `RTM_GETNSID` need none; dumping
//! another netns by nsid needs CAP_NET_ADMIN over it (the kernel checks
//! `ns_capable(CAP_NET_ADMIN)`); without it those calls fail with EPERM and
//! the caller falls back to what the container runtime reports.
//!
//! Guarantees: a message the parser does not understand is skipped, never a
//! panic; a dump ends at `NLMSG_DONE` or an error reply.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// `RTNLGRP_LINK`: link created, changed, deleted.
const RTNLGRP_LINK: u32 = 1;

/// One network interface as rtnetlink reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInfoRow {
    /// Interface index (in its own netns).
    pub index: u32,
    /// Name.
    pub name: String,
    /// `veth`, `bridge`, `tun`, ... (`IFLA_INFO_KIND`); empty for physical NICs and loopback.
    pub kind: String,
    /// MAC address (empty when the link has none).
    pub mac: Vec<u8>,
    /// `IFLA_LINK`: for a veth, the peer's index in the peer's netns.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the nsid of the peer's netns, when it is another netns.
    pub link_netnsid: Option<i32>,
    /// Index of the bridge this link is a port of.
    pub master: Option<u32>,
}

/// A blocking rtnetlink socket for requests.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

/// `NLM_F_DUMP_INTR`: the dump was interrupted by a change and may be inconsistent.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// How many times a dump is asked for before an interrupted one is taken as it is.
const DUMP_TRIES: usize = 4;

impl Rtnl {
    /// Opens a `NETLINK_ROUTE` socket.
    ///
    /// # Errors
    /// The kernel refuses the socket.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // The kernel reads IFA_TARGET_NETNSID of an address dump only under strict checking.
        sock.set_netlink_get_strict_chk(true)?;
        Ok(Self { sock, seq: 0 })
    }

    fn request(&mut self, msg: RouteNetlinkMessage, dump: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
        // A dump that raced a change (links coming and going while a container starts) is
        // marked NLM_F_DUMP_INTR and may be incomplete: ask again, a few times at most.
        for _ in 0..DUMP_TRIES - 1 {
            let (out, interrupted) = self.request_once(msg.clone(), dump)?;
            if !interrupted {
                return Ok(out);
            }
        }
        self.request_once(msg, dump).map(|(out, _)| out)
    }

    /// One request: the messages and whether the kernel marked the dump interrupted.
    fn request_once(&mut self, msg: RouteNetlinkMessage, dump: bool) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        hdr.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
                if len < 16 || off + len > data.len() {
                    break;
                }
                let flags = u16::from_ne_bytes([data[off + 6], data[off + 7]]);
                let seq = u32::from_ne_bytes([data[off + 8], data[off + 9], data[off + 10], data[off + 11]]);
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len]);
                off += (len + 3) & !3;
                if seq != self.seq {
                    continue;
                }
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match parsed.map(|p| p.payload) {
                    Ok(NetlinkPayload::Done(_)) => return Ok((out, interrupted)),
                    Ok(NetlinkPayload::Error(e)) => {
                        return match e.code {
                            None => Ok((out, interrupted)),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    Ok(NetlinkPayload::InnerMessage(m)) => {
                        out.push(m);
                        if !dump {
                            return Ok((out, interrupted));
                        }
                    }
                    // Not understood (a newer kernel's attribute): skip it.
                    _ => {}
                }
            }
        }
    }

    /// Every link of the own netns (`target` None) or of the netns with nsid `target`.
    ///
    /// # Errors
    /// The dump failed (EPERM for another netns without CAP_NET_ADMIN over it).
    pub fn links(&mut self, target: Option<i32>) -> io::Result<Vec<LinkInfoRow>> {
        let mut req = LinkMessage::default();
        if let Some(id) = target {
            req.attributes.push(LinkAttribute::IfNetnsId(id));
        }
        let msgs = self.request(RouteNetlinkMessage::GetLink(req), true)?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_row(&l)),
                _ => None,
            })
            .collect())
    }

    /// The addresses of every interface, as (interface index, address), of the
    /// own netns or of the netns with nsid `target`.
    ///
    /// # Errors
    /// As [`Rtnl::links`].
    pub fn addresses(&mut self, target: Option<i32>) -> io::Result<Vec<(u32, IpAddr)>> {
        let mut req = AddressMessage::default();
        if let Some(id) = target {
            req.attributes.push(AddressAttribute::TargetNetNsId(id));
        }
        let msgs = self.request(RouteNetlinkMessage::GetAddress(req), true)?;
        let mut out = Vec::new();
        for m in msgs {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                // IFA_LOCAL is the own address on point-to-point links; IFA_ADDRESS elsewhere.
                let local = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                if let Some(ip) = local.or(addr) {
                    out.push((a.header.index, ip));
                }
            }
        }
        Ok(out)
    }

    /// The nsid the own netns has for the namespace `ns` (an open
    /// `/proc/PID/ns/net` or `/run/netns/NAME`); `None` when it has none
    /// (no veth or other link joins the two).
    ///
    /// # Errors
    /// The request failed.
    pub fn nsid_of(&mut self, ns: &std::fs::File) -> io::Result<Option<i32>> {
        let mut req = NsidMessage::default();
        req.attributes.push(NsidAttribute::Fd(ns.as_raw_fd() as u32));
        let msgs = self.request(RouteNetlinkMessage::GetNsId(req), false)?;
        for m in msgs {
            if let RouteNetlinkMessage::NewNsId(n) = m {
                for a in n.attributes {
                    if let NsidAttribute::Id(id) = a {
                        return Ok((id >= 0).then_some(id));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn link_row(l: &LinkMessage) -> LinkInfoRow {
    let mut row = LinkInfoRow { index: l.header.index, ..Default::default() };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => row.name.clone_from(n),
            LinkAttribute::Address(m) => row.mac.clone_from(m),
            LinkAttribute::Link(i) => row.link = Some(*i),
            LinkAttribute::LinkNetNsId(i) => row.link_netnsid = Some(*i),
            LinkAttribute::Controller(i) => row.master = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        row.kind = match k {
                            InfoKind::Veth => "veth".to_owned(),
                            InfoKind::Bridge => "bridge".to_owned(),
                            InfoKind::Tun => "tun".to_owned(),
                            InfoKind::MacVlan => "macvlan".to_owned(),
                            InfoKind::Vlan => "vlan".to_owned(),
                            InfoKind::Other(s) => s.clone(),
                            other => format!("{other:?}").to_lowercase(),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    row
}

/// A socket subscribed to link events; [`LinkEvents::wait`] blocks until one
/// comes (or the timeout passes).
#[derive(Debug)]
pub struct LinkEvents {
    sock: Socket,
}

impl LinkEvents {
    /// Subscribes to `RTNLGRP_LINK`.
    ///
    /// # Errors
    /// The kernel refuses the socket or the membership.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.add_membership(RTNLGRP_LINK)?;
        Ok(Self { sock })
    }

    /// Blocks until a link event arrives; drains whatever else is queued.
    ///
    /// # Errors
    /// The socket failed (an overrun, ENOBUFS, counts as an event).
    pub fn wait(&mut self) -> io::Result<()> {
        let mut buf = Vec::with_capacity(65536);
        match self.sock.recv(&mut buf, 0) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(105) => {} // ENOBUFS: events were lost, rescan anyway
            Err(e) => return Err(e),
        }
        self.sock.set_non_blocking(true)?;
        loop {
            buf.clear();
            if self.sock.recv(&mut buf, 0).is_err() {
                break;
            }
        }
        self.sock.set_non_blocking(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_netns_has_loopback() {
        let mut nl = Rtnl::open().expect("netlink");
        let links = nl.links(None).expect("dump");
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
        let addrs = nl.addresses(None).expect("addresses");
        assert!(addrs.iter().any(|(_, ip)| ip.is_loopback()), "{addrs:?}");
    }
}
