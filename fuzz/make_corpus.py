#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (run from anywhere; overwrites seeds of
the same name, leaves other files alone). Each seed is a realistic input in the target's
layout: see the comment at the top of each fuzz_targets/*.rs."""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
TESTDATA = os.path.join(HERE, "..", "src", "proto", "mysql", "testdata")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# http_request_head: byte 0 = limits (0 = defaults), byte 1 = prefix seed, then the head.
REQUESTS = {
    "get": b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n",
    "post_cl": b"POST /api/v1/items HTTP/1.1\r\nHost: api.local:8080\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":1,\"b\":2}",
    "post_chunked": b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "absolute": b"GET http://Example.COM:80?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "options_star": b"\r\nOPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "websocket": b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket/13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "pipelined": b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "smuggle_te_cl": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl_list": b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nX-Tab:\tv a l \t\r\n\r\nabc",
    "obs_text": b"PATCH /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n",
}
for name, head in REQUESTS.items():
    write("http_request_head", name, bytes([0, 0x5A]) + head)
# Small limits (byte 0 = 0b01_01_01_01: 16-byte line, 128-byte head, 0 headers, max_body 0).
write("http_request_head", "get_small_limits", bytes([0x55, 3]) + REQUESTS["get"])

# http_response_head: byte 0 = method (%10) and limits (/10 %4), byte 1 = seed.
RESPONSES = {
    "ok_cl": (0, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
    "chunked": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"),
    "head_cl": (1, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
    "no_content": (2, b"HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n"),
    "not_modified": (0, b"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\n\r\n"),
    "continue": (2, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    "until_close": (0, b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until close"),
    "no_reason": (9, b"HTTP/1.1 404\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    "switching": (0, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    "gzip_te": (3, b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: gzip\r\n\r\n"),
}
for name, (method, head) in RESPONSES.items():
    write("http_response_head", name, bytes([method, 0x33]) + head)
write("http_response_head", "ok_small_limits", bytes([25, 7]) + RESPONSES["ok_cl"][1])

# chunked: byte 0 = piece-size seed, then the body and whatever follows it.
CHUNKED = {
    "simple": (0, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "extensions": (1, b"a;name=value;q=\"x y\"\r\n0123456789\r\n0;last\r\n\r\nGET / HTTP/1.1\r\n"),
    "bws": (2, b"3 ;ext\r\nabc\r\n0\t;x\r\n\r\n"),
    "trailers": (3, b"2\r\nok\r\n0\r\nExpires: never\r\nX-Sum: caf\xc3\xa9\t1\r\nX-Empty:\r\n\r\nNEXT"),
    "hex_case": (4, b"1A\r\n" + b"x" * 26 + b"\r\nfF\r\n" + b"y" * 255 + b"\r\n0000\r\n\r\n"),
    "leading_zeros": (5, b"0000000000000003\r\nabc\r\n0\r\n\r\n"),
    "crlf_data": (6, b"3\r\n\r\n\r\r\n0\r\n\r\n"),
    "unfinished": (7, b"ffffffff\r\n" + b"z" * 100),
    "bad_smuggle": (0, b"5\r\nhello\n0\r\n\r\n"),
    "quoted_ext": (1, b"1 ; a = \"b\\\"c d\" ;e;f=g\r\nx\r\n0;z=\"\"\r\n\r\n"),
    "bad_ext_trailing_bws": (2, b"1;a \r\nx\r\n0\r\n\r\n"),
    "bad_ext_empty": (3, b"1;\r\nx\r\n0\r\n\r\n"),
}
for name, (seed, body) in CHUNKED.items():
    write("chunked", name, bytes([seed]) + body)

# chunked_canonical: byte 0 = piece-size seed, byte 1 = limit (0 = none, 3 = 5 bytes,
# 5 = 100 bytes), then the body.
for name, lim in [("simple", 0), ("extensions", 5), ("trailers", 0), ("hex_case", 5),
                  ("quoted_ext", 0), ("leading_zeros", 3), ("unfinished", 6)]:
    seed, body = CHUNKED[name]
    write("chunked_canonical", name, bytes([seed, lim]) + body)
write("chunked_canonical", "over_limit", bytes([1, 3]) + CHUNKED["simple"][1])


# mysql_observer: byte 0 = piece-size seed, then records [dir][len u16 le][bytes].
def conversation(path):
    out = bytearray()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d, hexs = line.split(" ", 1)
            data = bytes.fromhex(hexs)
            out += bytes([0 if d == "C" else 1]) + struct.pack("<H", len(data)) + data
    return bytes(out)


for fn in sorted(os.listdir(TESTDATA)):
    if fn.endswith(".txt"):
        conv = conversation(os.path.join(TESTDATA, fn))
        write("mysql_observer", fn[:-4], bytes([len(fn) % 4]) + conv)


# dns_response: byte 0 picks the queried name (0 example.com, 1 _http._tcp.example.com, 2 a,
# 3 Api.Internal.), then a response as a server sends it.
def dns_name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_rr(owner, rtype, rdata, ttl=60):
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def dns_response(qid, name, qtype, answers=(), authority=(), additional=(), flags=0x8180):
    head = struct.pack(">HHHHHH", qid, flags, 1, len(answers), len(authority), len(additional))
    q = dns_name(name) + struct.pack(">HH", qtype, 1)
    return head + q + b"".join(answers) + b"".join(authority) + b"".join(additional)


PTR_Q = b"\xc0\x0c"  # a pointer to the question's name
write("dns_response", "a_two", bytes([0]) + dns_response(0x1234, "example.com", 1, [
    dns_rr(PTR_Q, 1, bytes([192, 0, 2, 1])), dns_rr(PTR_Q, 1, bytes([192, 0, 2, 2]), 30)]))
write("dns_response", "aaaa", bytes([3]) + dns_response(0xBEEF, "api.internal", 28, [
    dns_rr(PTR_Q, 28, bytes.fromhex("fd000000000000000000000000000001"))]))
write("dns_response", "cname_chain", bytes([2]) + dns_response(7, "a", 1, [
    dns_rr(PTR_Q, 5, dns_name("b.example.com")),
    dns_rr(dns_name("b.example.com"), 5, b"\x01c\xc0\x21"),
    dns_rr(dns_name("c.example.com"), 1, bytes([10, 0, 0, 3]))]))
srv = lambda prio, weight, port, target: struct.pack(">HHH", prio, weight, port) + target
write("dns_response", "srv_additional", bytes([1]) + dns_response(42, "_http._tcp.example.com", 33, [
    dns_rr(PTR_Q, 33, srv(10, 60, 8080, b"\x03web\xc0\x17")),
    dns_rr(PTR_Q, 33, srv(10, 40, 8081, dns_name("web2.example.com"))),
    dns_rr(PTR_Q, 33, srv(20, 0, 0, b"\0"))],
    [dns_rr(b"\xc0\x17", 2, dns_name("ns.example.com"))],
    [dns_rr(dns_name("web.example.com"), 1, bytes([10, 0, 0, 1])),
     dns_rr(dns_name("web2.example.com"), 28, bytes(15) + b"\x02")]))
write("dns_response", "nxdomain", bytes([0]) + dns_response(9, "example.com", 1, flags=0x8183))
write("dns_response", "truncated", bytes([2]) + dns_response(9, "a", 28, flags=0x8380))

# upgrade_message: one message of the binary-upgrade channel (kind line, then key=value lines;
# `\\`, `\n` and `\r` escaped in values), as the daemon writes them.
write("upgrade_message", "ready", b"ready\npid=4242\n")
write("upgrade_message", "setup_done", b"setup_done\nupgrades=3\npid=4100\n")
write("upgrade_message", "counters", b"counters\nt=stat\trequests\t12\nt=site\twww\texample.com\t1 2 3 4\nt=user\tapp\\\\1\t1 0 2 0 10 20 300 0 1 1 0\n")
write("upgrade_message", "conns", b"conns\nfe=web\npeer=127.0.0.1:5555\nfe=web\npeer=[::1]:80\n")
write("upgrade_message", "failed", b"failed\nreason=/etc/sg.toml: pool.app.servers[0].addr: bad\\nsecond line\n")

# proxy_header: the first bytes a client sent, as is: valid v1 and v2 headers (each followed by
# the proxied protocol's first bytes) and near misses.
SIG = b"\r\n\r\n\0\r\nQUIT\n"
ONES = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def pp2(ver_cmd, fam, body):
    return SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(body)) + body


TCP4 = bytes([192, 168, 0, 1, 10, 0, 0, 2]) + struct.pack(">HH", 56324, 443)
TCP6 = bytes(15) + b"\x01" + bytes.fromhex("20010db8000000000000000000000001") + struct.pack(">HH", 1, 2)
write("proxy_header", "v1_tcp4", b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\nGET / HTTP/1.1\r\n\r\n")
write("proxy_header", "v1_tcp6_max", b"PROXY TCP6 " + ONES + b" " + ONES + b" 65535 65535\r\n")
write("proxy_header", "v1_tcp6_mapped", b"PROXY TCP6 ::ffff:1.2.3.4 2001:db8::1 0 80\r\n\x03")
write("proxy_header", "v1_unknown", b"PROXY UNKNOWN\r\n")
write("proxy_header", "v1_unknown_max", b"PROXY UNKNOWN " + ONES + b" " + ONES + b" 65535 65535\r\n")
write("proxy_header", "v1_lf_only", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")
write("proxy_header", "v1_port_65536", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n")
write("proxy_header", "v1_two_spaces", b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n")
write("proxy_header", "v1_family_mismatch", b"PROXY TCP4 ::1 ::1 1 2\r\n")
write("proxy_header", "v2_tcp4", pp2(0x21, 0x11, TCP4) + b"\x16\x03\x01")
write("proxy_header", "v2_tcp6_tlv", pp2(0x21, 0x21, TCP6 + b"\x04\x00\x03abc\x01\x00\x02h2"))
write("proxy_header", "v2_local", pp2(0x20, 0x00, b""))
write("proxy_header", "v2_unix", pp2(0x21, 0x31, bytes(216)))
write("proxy_header", "v2_dgram", pp2(0x21, 0x12, TCP4))
write("proxy_header", "v2_short_block", pp2(0x21, 0x21, TCP4))
write("proxy_header", "v2_bad_version", pp2(0x11, 0x11, TCP4))
write("proxy_header", "v2_tcp4_block_11", pp2(0x21, 0x11, TCP4[:11]))
write("proxy_header", "v2_tcp6_block_35", pp2(0x21, 0x21, TCP6[:35]))
write("proxy_header", "v2_local_any_family", pp2(0x20, 0x22, b"\x01\x02\x03"))
write("proxy_header", "not_proxy_http", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")


# mysql_digest: byte 0 seeds the piece sizes, the rest is one statement.
DIGEST_SEEDS = [
    ("select", b"SELECT * FROM t WHERE id = 42 AND name = 'bob' LIMIT 10"),
    ("in_list", b"SELECT a FROM t WHERE id IN (1, 2, 3) OR x IN (-1,+2.5e-3)"),
    ("insert_rows", b"INSERT INTO `t``x` (a, b) VALUES (1, 'a\\'b'), (2, \"c\"\"d\"),(0x1F, X'ab')"),
    ("comments", b"/*!40101 SET NAMES utf8 */; SELECT /*+ hint */ 1 -- c\n, 2 # d\n /* e */;"),
    ("mariadb_exec", b"SELECT /*M!100000 1 + */ 2, _utf8mb4'x', N'y', b'01', .5, 1., 1e, 0xZZ"),
    ("prepared", b"UPDATE t SET a = ?, b = ? WHERE c IN (?, ?) AND d = -?"),
    ("non_utf8", b"SELECT \xff\xfe, `\x80\n` FROM t WHERE a = '\xc3"),
]
for i, (name, stmt) in enumerate(DIGEST_SEEDS):
    write("mysql_digest", name, bytes([i * 37 % 256]) + stmt)

if __name__ == "__main__":
    for t in sorted(os.listdir(CORPUS)):
        print(t, len(os.listdir(os.path.join(CORPUS, t))), file=sys.stderr)
