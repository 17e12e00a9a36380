/*!
What the kernel knows about a client's TCP connection: the bytes queued on
the socket and the round-trip times, and from them how much is ahead of a
frame started now. Each look is a syscall, so callers ration them.
*/

use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, RawFd};

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

/// `struct tcp_info` of `<linux/tcp.h>` up to `tcpi_min_rtt` (Linux 4.6).
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
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    /// The smallest round-trip time seen, µs: the path's own delay.
    min_rtt: u32,
}

// The kernel's ABI (offsetof in <linux/tcp.h>): a wrong field here once
// read tcpi_rcv_ssthresh as the round trip.
const _: () = assert!(offset_of!(TcpInfo, rcv_ssthresh) == 64);
const _: () = assert!(offset_of!(TcpInfo, rtt) == 68);
const _: () = assert!(offset_of!(TcpInfo, min_rtt) == 148);

/// The smoothed and the smallest round-trip time in µs, or None where the
/// kernel does not report both.
pub fn round_trips(socket: &impl AsRawFd) -> Option<(u64, u64)> {
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
    let complete = len as usize >= offset_of!(TcpInfo, min_rtt) + size_of::<u32>();
    (rc == 0 && complete).then(|| (u64::from(info.rtt), u64::from(info.min_rtt)))
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
/// keep its rate. Where the kernel cannot say, nothing is ahead.
pub fn backlog(socket: &impl AsRawFd, max: usize) -> Backlog {
    // Below `max` there is no need to look closer: the common case, one ioctl.
    let Some(total) = queued_bytes(socket) else { return Backlog::Light };
    if total < max / 4 {
        return Backlog::Light;
    }
    if total < max {
        return Backlog::Some;
    }
    let Some(unsent) = unsent_bytes(socket) else { return Backlog::Some };
    let in_flight = total.saturating_sub(unsent) as u64;
    let queued = match round_trips(socket) {
        Some((srtt, min_rtt)) => path_queue(in_flight, srtt, min_rtt),
        None => 0,
    };
    if unsent as u64 + queued >= max as u64 {
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
        let (srtt, min_rtt) = round_trips(&server).expect("Linux reports TCP_INFO");
        assert!(srtt >= min_rtt, "srtt {srtt} µs below min_rtt {min_rtt} µs");
        assert!(srtt < 10_000, "a loopback srtt of {srtt} µs: the wrong field?");
        assert!(min_rtt > 0 && min_rtt < 10_000, "min_rtt {min_rtt} µs");
        assert_eq!(unsent_bytes(&server), Some(0));
        // The last reply may wait for a delayed acknowledgement.
        assert!(queued_bytes(&server).is_some_and(|n| n <= 4));
        assert_eq!(backlog(&server, 32 * 1024), Backlog::Light);
    }
}
