"""Minimal raw Thrift binary-protocol message builder for the repro scripts."""
import socket, struct, zlib, os, time

def s(b):
    if isinstance(b, str): b = b.encode()
    return struct.pack(">i", len(b)) + b

def header(name, mtype=1, seqid=0):
    if isinstance(name, str): name = name.encode()
    return struct.pack(">I", 0x80010000 | mtype) + s(name) + struct.pack(">i", seqid)

def f_str(fid, b): return b"\x0b" + struct.pack(">h", fid) + s(b)
def f_i64(fid, v): return b"\x0a" + struct.pack(">h", fid) + struct.pack(">q", v)
def f_i32(fid, v): return b"\x08" + struct.pack(">h", fid) + struct.pack(">i", v)

def append_group(agent, seq, payload, count, seqid=0):
    return (header("appendGroup", 1, seqid) + f_str(1, agent) + f_i64(2, seq)
            + f_i64(3, zlib.crc32(payload)) + f_str(4, payload) + f_i32(5, count) + b"\x00")

def append_packed(payload, count, seqid=0):
    return header("appendPacked", 1, seqid) + f_str(1, payload) + f_i32(2, count) + b"\x00"

def read_reply(sock, timeout=10):
    sock.settimeout(timeout)
    data = b""
    t = time.time()
    while time.time() - t < timeout:
        try:
            c = sock.recv(1 << 20)
        except socket.timeout:
            break
        if not c: break
        data += c
        if data.endswith(b"\x00\x00"): break
    return data

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])

def threads(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Threads"): return int(line.split()[1])
