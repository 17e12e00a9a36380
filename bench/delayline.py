"""A delay line for the packets a network namespace sends: the kernel here
has no netem, so this adds round-trip time in user space.

    ip netns exec NS python3 delayline.py TUN DEV PEER_MAC DELAY_MS

It creates the TUN interface TUN (gone when this exits). Route the traffic
to delay into it (`ip route replace PEER/32 dev TUN src OWN_ADDR`); every
IP packet read from TUN is sent DELAY_MS later, unchanged, out of the
Ethernet interface DEV to PEER_MAC. Replies come back through DEV as usual,
so the round trip grows by DELAY_MS.
"""
import fcntl
import heapq
import os
import select
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def main():
    tun_name, dev, peer_mac, delay_ms = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    delay = delay_ms / 1000
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", tun_name.encode(), IFF_TUN | IFF_NO_PI))
    out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    out.bind((dev, 0))
    own_mac = open(f"/sys/class/net/{dev}/address").read().strip()
    header = bytes.fromhex(peer_mac.replace(":", "")) + bytes.fromhex(own_mac.replace(":", "")) + b"\x08\x00"
    queue = []  # (due, sequence, packet)
    seq = 0
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, packet = heapq.heappop(queue)
            try:
                out.send(header + packet)
            except OSError:
                pass
        timeout = max(0.0, queue[0][0] - now) if queue else 1.0
        ready, _, _ = select.select([tun], [], [], timeout)
        if ready:
            packet = os.read(tun, 65536)
            if packet and packet[0] >> 4 == 4:
                heapq.heappush(queue, (time.monotonic() + delay, seq, packet))
                seq += 1


if __name__ == "__main__":
    main()
