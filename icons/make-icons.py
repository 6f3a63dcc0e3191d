#!/usr/bin/env python3
"""Draws the Mailbox Auth icon (an envelope with a green check) as RGBA PNGs, no dependencies.

Run from anywhere: python3 icons/make-icons.py. Writes icon.png (512), 128x128@2x.png (256),
128x128.png and 32x32.png next to itself.
"""
import math, os, struct, zlib

def png(path, w, h, px):
    raw = b"".join(b"\x00" + bytes(px[y * w * 4:(y + 1) * w * 4]) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)

def seg_dist(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)

def sample(x, y):
    """Colour (r,g,b,a) at unit coordinates x,y in [0,1]."""
    # Rounded square background, blue gradient.
    r = 0.2
    qx, qy = max(abs(x - 0.5) - (0.5 - r) + 0.02, 0), max(abs(y - 0.5) - (0.5 - r) + 0.02, 0)
    if math.hypot(qx, qy) > r:
        return None
    top, bot = (37, 99, 235), (29, 78, 216)
    c = tuple(int(top[i] + (bot[i] - top[i]) * y) for i in range(3))
    # Envelope body.
    ex0, ey0, ex1, ey1 = 0.18, 0.28, 0.78, 0.70
    if ex0 <= x <= ex1 and ey0 <= y <= ey1:
        c = (248, 250, 252)
        if seg_dist(x, y, ex0, ey0, 0.48, 0.50) < 0.025 or seg_dist(x, y, ex1, ey0, 0.48, 0.50) < 0.025:
            c = (148, 163, 184)
    # Green badge with a check.
    cx, cy, cr = 0.72, 0.70, 0.17
    d = math.hypot(x - cx, y - cy)
    if d < cr + 0.025:
        c = (29, 78, 216) if d >= cr else (22, 163, 74)
        if d < cr and (seg_dist(x, y, 0.645, 0.70, 0.70, 0.755) < 0.022 or seg_dist(x, y, 0.70, 0.755, 0.80, 0.645) < 0.022):
            c = (255, 255, 255)
    return c + (255,)

def render(size, ss=3):
    px = bytearray(size * size * 4)
    for j in range(size):
        for i in range(size):
            acc = [0, 0, 0, 0]
            for sj in range(ss):
                for si in range(ss):
                    s = sample((i + (si + 0.5) / ss) / size, (j + (sj + 0.5) / ss) / size)
                    if s:
                        for k in range(3):
                            acc[k] += s[k] * s[3]
                        acc[3] += s[3]
            n = ss * ss
            a = acc[3] / n
            o = (j * size + i) * 4
            if acc[3]:
                px[o:o + 4] = bytes([int(acc[0] / acc[3]), int(acc[1] / acc[3]), int(acc[2] / acc[3]), int(a)])
    return px

here = os.path.dirname(os.path.abspath(__file__))
for name, size in [("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)]:
    png(os.path.join(here, name), size, size, render(size, 3 if size <= 256 else 2))
    print("wrote", name)
