/*!
What a viewer on this host has left unread, read from its own socket.

A viewer elsewhere is seen only through the window its kernel advertises
([`crate::reader`]), which a Linux receiver moves in steps of 64 KB or
more, and which on loopback stays open while frames queue unread. A viewer
on this host has its receiving socket in our kernel, and the kernel's
socket diagnostics (`NETLINK_SOCK_DIAG`, what `ss` reads) report that
socket's receive queue: `idiag_rqueue`, which for a TCP socket is
`rcv_nxt - copied_seq`, exactly the bytes its application has not read.

One lookup is one exact request (`inet_diag_req_v2` without `NLM_F_DUMP`)
for the connection's four addresses as the viewer's socket has them: a
hash lookup in the kernel, answered before `send` returns, so one `send`
and one `recv`. A viewer in another network namespace (a container, a
namespace of its own) or behind NAT is not found and is asked no more.
*/

use std::io;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `<linux/sock_diag.h>`: the request and reply type of socket diagnostics.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `<linux/netlink.h>`: an error (or acknowledgement) reply.
const NLMSG_ERROR: u16 = 2;
/// `<linux/inet_diag.h>`: no cookie to check the socket against.
const INET_DIAG_NOCOOKIE: u32 = !0;
/// `<net/tcp_states.h>`: the states whose receive queue is a reader's.
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;

/// `struct nlmsghdr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Header {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid`: ports and addresses in network order, as
/// the socket looked up has them (its own first).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

/// A netlink header and `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    header: Header,
    family: u8,
    protocol: u8,
    extensions: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// A netlink header and `struct inet_diag_msg`, without attributes (none
/// are asked for).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Reply {
    header: Header,
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    /// Bytes received and not yet read by the socket's application.
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

// The kernel's ABI (<linux/inet_diag.h>).
const _: () = assert!(size_of::<SockId>() == 48);
const _: () = assert!(size_of::<Request>() == 16 + 56);
const _: () = assert!(size_of::<Reply>() == 16 + 72);
const _: () = assert!(offset_of!(Reply, rqueue) == 16 + 56);

/// The viewer's socket to look up: built once per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    family: u8,
    id: SockId,
}

impl Peer {
    /// The viewer's socket of a connection from `peer` to our `local`,
    /// or None if the two are not of one family. An IPv4 viewer of a
    /// dual-stack listener is seen by us as `::ffff:a.b.c.d`, but its own
    /// socket is IPv4.
    pub fn new(local: SocketAddr, peer: SocketAddr) -> Option<Peer> {
        let (local_ip, peer_ip) = (local.ip().to_canonical(), peer.ip().to_canonical());
        let mut id = SockId {
            sport: peer.port().to_be_bytes(),
            dport: local.port().to_be_bytes(),
            cookie: [INET_DIAG_NOCOOKIE; 2],
            ..SockId::default()
        };
        let family = match (peer_ip, local_ip) {
            (IpAddr::V4(p), IpAddr::V4(l)) => {
                id.src[..4].copy_from_slice(&p.octets());
                id.dst[..4].copy_from_slice(&l.octets());
                libc::AF_INET
            }
            (IpAddr::V6(p), IpAddr::V6(l)) => {
                id.src = p.octets();
                id.dst = l.octets();
                libc::AF_INET6
            }
            _ => return None,
        };
        Some(Peer { family: family as u8, id })
    }
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The viewer's socket is here, with this many bytes unread.
    Unread(u64),
    /// No such socket here: the viewer is elsewhere.
    Elsewhere,
    /// The kernel did not answer as expected; ask again later.
    Unknown,
}

/// A socket-diagnostics socket.
pub struct Diag {
    fd: OwnedFd,
    seq: u32,
}

impl Diag {
    /// Opens the socket. Fails where netlink is not allowed (a sandbox
    /// that restricts address families) or the kernel lacks `inet_diag`.
    pub fn open() -> io::Result<Diag> {
        let kind = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, kind, libc::NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Diag { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 0 })
    }

    /// How many bytes the socket of `peer` holds unread, if it is here.
    pub fn unread(&mut self, peer: &Peer) -> Lookup {
        self.seq = self.seq.wrapping_add(1);
        let request = Request {
            header: Header {
                len: size_of::<Request>() as u32,
                kind: SOCK_DIAG_BY_FAMILY,
                flags: libc::NLM_F_REQUEST as u16,
                seq: self.seq,
                pid: 0,
            },
            family: peer.family,
            protocol: libc::IPPROTO_TCP as u8,
            states: !0,
            id: peer.id,
            ..Request::default()
        };
        let fd = self.fd.as_raw_fd();
        // SAFETY: sends the bytes of a plain struct to the kernel (the
        // socket's default destination, pid 0).
        let sent = unsafe {
            libc::send(fd, (&raw const request).cast(), size_of::<Request>(), libc::MSG_DONTWAIT)
        };
        if sent != size_of::<Request>() as isize {
            return Lookup::Unknown;
        }
        // The kernel answers within `send`: a reply, or an error. A reply
        // to an earlier request that timed out is skipped by its number.
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            // SAFETY: the kernel writes at most `buf.len()` bytes into it.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                return Lookup::Unknown;
            }
            match parse(&buf[..n as usize], self.seq, &peer.id) {
                Some(found) => return found,
                None => continue,
            }
        }
        Lookup::Unknown
    }
}

/// The answer in one datagram `reply` to request `seq` for `id`, or None
/// if it answers another request.
fn parse(reply: &[u8], seq: u32, id: &SockId) -> Option<Lookup> {
    if reply.len() < size_of::<Header>() {
        return Some(Lookup::Unknown);
    }
    // SAFETY: at least a header's bytes, read unaligned; any bytes are a
    // valid header of integers.
    let header: Header = unsafe { std::ptr::read_unaligned(reply.as_ptr().cast()) };
    if header.seq != seq {
        return None;
    }
    Some(match header.kind {
        NLMSG_ERROR => {
            let at = size_of::<Header>();
            let error = reply.get(at..at + 4).map(|b| i32::from_ne_bytes(b.try_into().unwrap()));
            if error == Some(-libc::ENOENT) {
                Lookup::Elsewhere
            } else {
                Lookup::Unknown
            }
        }
        SOCK_DIAG_BY_FAMILY if reply.len() >= size_of::<Reply>() => {
            // SAFETY: as above, a whole reply's bytes.
            let r: Reply = unsafe { std::ptr::read_unaligned(reply.as_ptr().cast()) };
            // The lookup falls back to a listener on the viewer's address
            // and port, whose queue is its backlog: only the connection
            // itself will do.
            let ours = r.id.sport == id.sport
                && r.id.dport == id.dport
                && r.id.src == id.src
                && r.id.dst == id.dst;
            if ours && matches!(r.state, TCP_ESTABLISHED | TCP_CLOSE_WAIT) {
                Lookup::Unread(u64::from(r.rqueue))
            } else {
                Lookup::Elsewhere
            }
        }
        _ => Lookup::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// A connection on loopback: the viewer's end, ours, and its `Peer`.
    fn pair(addr: &str) -> (TcpStream, TcpStream, Peer) {
        let listener = TcpListener::bind(addr).unwrap();
        let viewer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, from) = listener.accept().unwrap();
        let peer = Peer::new(ours.local_addr().unwrap(), from).unwrap();
        (viewer, ours, peer)
    }

    /// Asks until the kernel's count settles at `want` (bytes on loopback
    /// land in the receiver's queue within a softirq, not within `write`).
    fn settles_at(diag: &mut Diag, peer: &Peer, want: u64) {
        let mut seen = Vec::new();
        for _ in 0..200 {
            let found = diag.unread(peer);
            if found == Lookup::Unread(want) {
                return;
            }
            seen.push(found);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("wanted {want} unread, saw {seen:?}");
    }

    #[test]
    fn a_viewer_on_this_host_shows_exactly_what_it_has_not_read() {
        let mut diag = Diag::open().expect("NETLINK_SOCK_DIAG");
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let (mut viewer, mut ours, peer) = pair(addr);
            settles_at(&mut diag, &peer, 0);
            ours.write_all(&[7; 10_000]).unwrap();
            settles_at(&mut diag, &peer, 10_000);
            let mut buf = [0; 2_500];
            viewer.read_exact(&mut buf).unwrap();
            settles_at(&mut diag, &peer, 7_500);
        }
    }

    #[test]
    fn a_viewer_that_is_not_here_is_elsewhere() {
        let mut diag = Diag::open().unwrap();
        let (_viewer, ours, _) = pair("127.0.0.1:0");
        let local = ours.local_addr().unwrap();
        // No socket here has this port towards us.
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag.unread(&Peer::new(local, gone).unwrap()), Lookup::Elsewhere);
        // Our own socket is not the viewer's: looked up from its side it
        // is the listener's port, which no viewer has.
        let listening = TcpListener::bind("127.0.0.1:0").unwrap();
        let backwards = Peer::new(ours.peer_addr().unwrap(), listening.local_addr().unwrap());
        assert_eq!(diag.unread(&backwards.unwrap()), Lookup::Elsewhere);
    }

    #[test]
    fn an_ipv4_viewer_of_a_dual_stack_listener_is_looked_up_as_ipv4() {
        let listener = TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let Ok(mut viewer) = TcpStream::connect(("127.0.0.1", port)) else {
            panic!("this kernel's [::] listener does not take IPv4 (bindv6only set?)");
        };
        let (mut ours, from) = listener.accept().unwrap();
        assert!(from.is_ipv6(), "{from}");
        let peer = Peer::new(ours.local_addr().unwrap(), from).unwrap();
        let mut diag = Diag::open().unwrap();
        ours.write_all(b"four").unwrap();
        settles_at(&mut diag, &peer, 4);
        viewer.read_exact(&mut [0; 4]).unwrap();
        settles_at(&mut diag, &peer, 0);
    }

    /// The bytes of a plain struct of integers.
    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: reads the struct's own bytes; the structs here have no
        // padding.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn replies_are_parsed_by_their_number_and_their_error() {
        let id = SockId { sport: [1, 2], ..SockId::default() };
        let header = |kind: u16, seq: u32, len: usize| Header {
            len: len as u32,
            kind,
            flags: 0,
            seq,
            pid: 0,
        };
        let bytes = |reply: &Reply| bytes_of(reply);
        let mut reply = Reply {
            header: header(SOCK_DIAG_BY_FAMILY, 9, size_of::<Reply>()),
            state: TCP_ESTABLISHED,
            id,
            rqueue: 1234,
            ..Reply::default()
        };
        assert_eq!(parse(&bytes(&reply), 9, &id), Some(Lookup::Unread(1234)));
        assert_eq!(parse(&bytes(&reply), 10, &id), None, "another request's reply");
        assert_eq!(parse(&bytes(&reply)[..40], 9, &id), Some(Lookup::Unknown), "cut short");
        reply.state = 10; // TCP_LISTEN
        assert_eq!(parse(&bytes(&reply), 9, &id), Some(Lookup::Elsewhere));
        reply.state = TCP_ESTABLISHED;
        reply.id.dport = [0, 80];
        assert_eq!(parse(&bytes(&reply), 9, &id), Some(Lookup::Elsewhere), "another socket");
        let error = |errno: i32| {
            let mut b = bytes_of(&header(NLMSG_ERROR, 9, size_of::<Header>() + 4));
            b.extend_from_slice(&(-errno).to_ne_bytes());
            b
        };
        assert_eq!(parse(&error(libc::ENOENT), 9, &id), Some(Lookup::Elsewhere));
        assert_eq!(parse(&error(libc::EPERM), 9, &id), Some(Lookup::Unknown));
    }
}
