"""Talking through a tap fd by hand, as QEMU would: ARP and ICMP echo frames behind the
virtio-net header an IFF_VNET_HDR tap puts in front of every frame."""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

VNET_HDR_LEN = 10  # struct virtio_net_hdr: the tap's default until QEMU sets TUNSETVNETHDRSZ
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
BROADCAST = "ff:ff:ff:ff:ff:ff"
T = TypeVar("T")


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    frame = mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload
    return frame.ljust(60, b"\0")  # the minimum frame, as a NIC pads it


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    """Who has target_ip? Tell src_ip (at src_mac)."""
    payload = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, mac_bytes(src_mac),
                          socket.inet_aton(src_ip), bytes(6), socket.inet_aton(target_ip))
    return ethernet(BROADCAST, src_mac, ETH_P_ARP, payload)


@dataclass(frozen=True)
class ArpReply:
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


def parse_arp_reply(frame: bytes) -> ArpReply | None:
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_P_ARP:
        return None
    op, smac, sip, tmac, tip = struct.unpack("!6xH6s4s6s4s", frame[14:42])
    if op != 2:
        return None
    return ArpReply(mac_str(smac), socket.inet_ntoa(sip), mac_str(tmac), socket.inet_ntoa(tip))


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, ident: int, seq: int,
              data: bytes) -> bytes:
    """An IPv4 ICMP echo request in an Ethernet frame."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0x4000, 64,
                         socket.IPPROTO_ICMP, 0, socket.inet_aton(src_ip),
                         socket.inet_aton(dst_ip))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return ethernet(dst_mac, src_mac, ETH_P_IP, header + icmp)


@dataclass(frozen=True)
class EchoReply:
    dst_mac: str
    src_ip: str
    dst_ip: str
    ident: int
    seq: int
    data: bytes


def parse_echo_reply(frame: bytes) -> EchoReply | None:
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total_len = struct.unpack("!H", frame[16:18])[0]
    if frame[23] != socket.IPPROTO_ICMP or frame[14 + ihl] != 0:  # ICMP echo reply
        return None
    ident, seq = struct.unpack("!HH", frame[14 + ihl + 4:14 + ihl + 8])
    return EchoReply(mac_str(frame[0:6]), socket.inet_ntoa(frame[26:30]),
                     socket.inet_ntoa(frame[30:34]), ident, seq,
                     frame[14 + ihl + 8:14 + total_len])


def tap_write(fd: int, frame: bytes) -> None:
    """One frame into the tap, behind an all-zero virtio-net header (no offloads)."""
    os.write(fd, bytes(VNET_HDR_LEN) + frame)


def tap_read_until(fd: int, match: Callable[[bytes], T | None], timeout: float = 5.0) -> T:
    """Read frames from the tap until match() returns something; fail after timeout."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        frame = os.read(fd, 65536)[VNET_HDR_LEN:]
        found = match(frame)
        if found is not None:
            return found
        seen.append(frame[:34].hex())
    raise AssertionError(f"no matching frame within {timeout} s; seen: {seen}")
