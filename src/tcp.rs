/*!
What the kernel knows about a client's TCP connection: the bytes queued on
the socket, the round-trip times, and the window the peer advertises, read
in one [`look`], one `getsockopt(TCP_INFO)`. What follows from them (how
much is ahead of a frame started now) is worked out from a [`Look`]
without further syscalls. Callers still ration looks: one costs about as
much as a small write.
*/

use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The log has said that this kernel does not report the peer's window.
static NO_WINDOW_SAID: AtomicBool = AtomicBool::new(false);

/// How much is ahead of a frame started now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backlog {
    /// Under a quarter of the limit, unsent and in flight together.
    Light,
    /// Under the limit.
    Some,
    /// The limit or more: the viewer waits for the newest frame.
    Full,
}

/// `struct tcp_info` of `<linux/tcp.h>` up to `tcpi_snd_wnd` (Linux 5.4).
/// The libc crate's own stops earlier and differs between glibc and musl,
/// so the layout is spelled out here and its offsets are checked below.
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    /// Milliseconds since the last acknowledgement came in.
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    /// Smoothed round-trip time, µs.
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    /// Bytes the peer's kernel has acknowledged: taken off the wire into its
    /// receive buffer, not necessarily read by its application.
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    /// The smallest round-trip time seen, µs: the path's own delay.
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    /// Bytes of data transmitted, retransmissions included.
    bytes_sent: u64,
    /// Bytes of data retransmitted.
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    /// The peer's receive window as last advertised, in bytes (scaled):
    /// the room left in its receive buffer for what it has not yet read.
    snd_wnd: u32,
}

// The kernel's ABI (offsetof in <linux/tcp.h>): a wrong field here once
// read tcpi_rcv_ssthresh as the round trip.
const _: () = assert!(offset_of!(TcpInfo, rcv_ssthresh) == 64);
const _: () = assert!(offset_of!(TcpInfo, rtt) == 68);
const _: () = assert!(offset_of!(TcpInfo, min_rtt) == 148);
const _: () = assert!(offset_of!(TcpInfo, bytes_acked) == 120);
const _: () = assert!(offset_of!(TcpInfo, bytes_sent) == 200);
const _: () = assert!(offset_of!(TcpInfo, bytes_retrans) == 208);
const _: () = assert!(offset_of!(TcpInfo, snd_wnd) == 228);

/// What the kernel says of one connection at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// Bytes written to the socket and not yet sent (`tcpi_notsent_bytes`).
    pub unsent: u64,
    /// Bytes sent and not yet acknowledged: `tcpi_bytes_sent` less
    /// `tcpi_bytes_retrans` (each byte once) less `tcpi_bytes_acked`; what
    /// `SIOCOUTQ` less the unsent would say, without a second syscall
    /// (but for kernels before 4.19, which are asked `SIOCOUTQ`).
    pub in_flight: u64,
    /// Smoothed and smallest round trip, µs (`tcpi_rtt`, `tcpi_min_rtt`).
    pub srtt: u64,
    pub min_rtt: u64,
    /// Bytes the peer's kernel has taken (`tcpi_bytes_acked`).
    pub acked: u64,
    /// The peer's advertised window (`tcpi_snd_wnd`); None on kernels
    /// before 5.4, which do not report it.
    pub window: Option<u64>,
    /// Time since the last acknowledgement (`tcpi_last_ack_recv`, whole ms).
    pub since_ack: Duration,
    /// For a viewer on this host, the bytes its own socket holds unread
    /// ([`crate::sock_diag`]); None for one elsewhere.
    pub peer_unread: Option<u64>,
}

impl Look {
    /// For a viewer on this host, what it has yet to read before a frame
    /// started now: what its socket holds unread, and what ours has not
    /// sent. (What is in flight on loopback is in its socket already, as
    /// soon as it is sent, though not acknowledged until a delayed ACK.)
    pub fn unread_here(&self) -> Option<u64> {
        Some(self.peer_unread? + self.unsent)
    }

    /// For a viewer on this host, the bytes its application has read:
    /// all that was sent, less what its socket holds.
    pub fn read_here(&self) -> Option<u64> {
        Some((self.acked + self.in_flight).saturating_sub(self.peer_unread?))
    }
}

/// Looks at a connection: one `getsockopt(TCP_INFO)`, and on kernels
/// before 4.19, which report no `tcpi_bytes_sent`, a `SIOCOUTQ` too. None
/// before 4.6, which reports no `tcpi_min_rtt`.
pub fn look(socket: &impl AsRawFd) -> Option<Look> {
    let (info, len) = tcp_info(socket)?;
    let has = |end: usize| len >= end;
    if !has(offset_of!(TcpInfo, min_rtt) + size_of::<u32>()) {
        return None;
    }
    let unsent = u64::from(info.notsent_bytes);
    let in_flight = if has(offset_of!(TcpInfo, bytes_retrans) + size_of::<u64>()) {
        let sent_once = info.bytes_sent.saturating_sub(info.bytes_retrans);
        sent_once.saturating_sub(info.bytes_acked)
    } else {
        queued_bytes(socket).map_or(0, |n| (n as u64).saturating_sub(unsent))
    };
    let window = has(offset_of!(TcpInfo, snd_wnd) + size_of::<u32>());
    if !window && !NO_WINDOW_SAID.swap(true, Ordering::Relaxed) {
        log!(
            "warning: this kernel does not report a client's receive window (tcpi_snd_wnd, \
             Linux 5.4): viewers that read slowly are paced by their link only"
        );
    }
    Some(Look {
        unsent,
        in_flight,
        srtt: u64::from(info.rtt),
        min_rtt: u64::from(info.min_rtt),
        acked: info.bytes_acked,
        window: window.then_some(u64::from(info.snd_wnd)),
        since_ack: Duration::from_millis(u64::from(info.last_ack_recv)),
        peer_unread: None,
    })
}

/// `TCP_INFO` and how many of its bytes the kernel filled in.
fn tcp_info(socket: &impl AsRawFd) -> Option<(TcpInfo, usize)> {
    let mut info = TcpInfo::default();
    let mut len = size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, a plain
    // struct of integers for which any bytes are valid.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some((info, len as usize))
}

/// Bytes the kernel holds for this socket that have not been sent yet
/// (`SIOCOUTQNSD`), or None where the kernel cannot say.
pub fn unsent_bytes(socket: &impl AsRawFd) -> Option<usize> {
    outq(socket.as_raw_fd(), libc::SIOCOUTQNSD as _)
}

/// Unsent and unacknowledged bytes together (`SIOCOUTQ`, alias `TIOCOUTQ`).
fn queued_bytes(socket: &impl AsRawFd) -> Option<usize> {
    outq(socket.as_raw_fd(), libc::TIOCOUTQ as _)
}

/// One queue ioctl. The request's type differs between C libraries (an
/// unsigned long in glibc, an int in musl), hence the inferred casts.
fn outq(fd: RawFd, request: libc::Ioctl) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: both requests write one int through a valid pointer.
    let rc = unsafe { libc::ioctl(fd, request, &mut n) };
    (rc == 0).then_some(n as usize)
}

/// Whether `max` bytes or more are ahead of a frame started now: the
/// unsent bytes, plus the sent but unacknowledged ones that wait in a queue
/// on the path rather than travel. A loss-based congestion control (cubic,
/// the usual default) keeps a slow link's bottleneck queue full, so counting
/// only the unsent bytes lets a frame wait behind that queue too.
///
/// The queued share is estimated from the round trip as the kernel sees it:
/// of the bytes in flight, the share `(srtt - min_rtt) / srtt` is waiting,
/// the rest is the path's own delay, which a long link needs in flight to
/// keep its rate.
pub fn backlog(look: &Look, max: usize) -> Backlog {
    let max = max as u64;
    let total = look.unsent + look.in_flight;
    if total < max / 4 {
        return Backlog::Light;
    }
    if total < max {
        return Backlog::Some;
    }
    if look.unsent + path_queue(look.in_flight, look.srtt, look.min_rtt) >= max {
        Backlog::Full
    } else {
        Backlog::Some
    }
}

/// The share of `in_flight` bytes that waits in a queue on the path rather
/// than travels, from the smoothed and the smallest round trip.
pub fn path_queue(in_flight: u64, srtt: u64, min_rtt: u64) -> u64 {
    if srtt > min_rtt {
        in_flight * (srtt - min_rtt) / srtt
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_queued_share_grows_with_the_queueing_delay() {
        assert_eq!(path_queue(80_000, 40_000, 40_000), 0);
        assert_eq!(path_queue(80_000, 80_000, 40_000), 40_000);
        assert_eq!(path_queue(80_000, 30, 40), 0);
        assert_eq!(path_queue(0, 100, 1), 0);
    }

    #[test]
    fn a_loopback_socket_reports_plausible_round_trips_and_queues() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // A few exchanges, so that the kernel has measured round trips.
        for _ in 0..20 {
            client.write_all(b"ping").unwrap();
            let mut buf = [0; 4];
            server.read_exact(&mut buf).unwrap();
            server.write_all(&buf).unwrap();
            client.read_exact(&mut buf).unwrap();
        }
        let look = look(&server).expect("Linux reports TCP_INFO");
        let (srtt, min_rtt) = (look.srtt, look.min_rtt);
        assert!(srtt >= min_rtt, "srtt {srtt} µs below min_rtt {min_rtt} µs");
        assert!(srtt < 10_000, "a loopback srtt of {srtt} µs: the wrong field?");
        assert!(min_rtt > 0 && min_rtt < 10_000, "min_rtt {min_rtt} µs");
        assert_eq!(unsent_bytes(&server), Some(0));
        // The last reply may wait for a delayed acknowledgement.
        assert!(queued_bytes(&server).is_some_and(|n| n <= 4));
        assert_eq!(backlog(&look, 32 * 1024), Backlog::Light);
        // All but the last reply, which may wait for a delayed ACK.
        assert!((19 * 4..=20 * 4).contains(&look.acked), "{look:?}");
        assert!(look.window.is_some_and(|w| w > 0), "{look:?}");
    }

    #[test]
    fn what_is_in_flight_is_what_siocoutq_counts_beyond_the_unsent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        // The client reads nothing: its buffer fills, and bytes wait unsent.
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0;
        for _ in 0..1000 {
            match server.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        // Acknowledgements may land between the two calls: take a pair
        // that agrees, as the queue settles.
        let mut seen = Vec::new();
        for _ in 0..100 {
            let look = look(&server).expect("Linux 4.19 or later");
            let queued = queued_bytes(&server).unwrap() as u64;
            if look.unsent + look.in_flight == queued {
                assert!(look.in_flight > 0 && look.unsent > 0, "{look:?} of {written} written");
                drop(client);
                return;
            }
            seen.push((look, queued));
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("unsent + in flight never matched SIOCOUTQ: {seen:?}");
    }
}
