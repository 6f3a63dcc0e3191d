#!/usr/bin/env python3
"""Asks the X11 window titled ARGV[1] to close, the way a window manager's close button does:
a WM_PROTOCOLS client message carrying WM_DELETE_WINDOW (ICCCM §4.2.8.1). The real-window tests
run under a bare Xvfb without a window manager, so this stands in for one. libX11 through ctypes:
no Python packages needed. Prints how many windows were asked; exits 1 when none matched."""
import ctypes
import ctypes.util
import sys

title = sys.argv[1].encode()
x = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
x.XOpenDisplay.restype = ctypes.c_void_p
x.XOpenDisplay.argtypes = [ctypes.c_char_p]
x.XDefaultRootWindow.restype = ctypes.c_ulong
x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
x.XInternAtom.restype = ctypes.c_ulong
x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_ulong),
                         ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)), ctypes.POINTER(ctypes.c_uint)]
x.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
x.XFlush.argtypes = [ctypes.c_void_p]
x.XCloseDisplay.argtypes = [ctypes.c_void_p]


class ClientMessage(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                ("format", ctypes.c_int), ("data", ctypes.c_long * 5)]


class Event(ctypes.Union):
    _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]


d = x.XOpenDisplay(None)
if not d:
    sys.exit("wm-close: cannot open the display $DISPLAY")
protocols = x.XInternAtom(d, b"WM_PROTOCOLS", 0)
delete = x.XInternAtom(d, b"WM_DELETE_WINDOW", 0)


def windows(w):
    root, parent, children, n = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
    if not x.XQueryTree(d, w, ctypes.byref(root), ctypes.byref(parent), ctypes.byref(children), ctypes.byref(n)):
        return
    for i in range(n.value):
        c = children[i]
        yield c
        yield from windows(c)


asked = 0
for w in windows(x.XDefaultRootWindow(d)):
    name = ctypes.c_char_p()
    if x.XFetchName(d, w, ctypes.byref(name)) and name.value == title:
        e = Event()
        e.xclient.type = 33  # ClientMessage
        e.xclient.window = w
        e.xclient.message_type = protocols
        e.xclient.format = 32
        e.xclient.data[0] = delete
        e.xclient.data[1] = 0  # CurrentTime
        x.XSendEvent(d, w, 0, 0, ctypes.byref(e))
        asked += 1
x.XFlush(d)
x.XCloseDisplay(d)
print(asked)
sys.exit(0 if asked else 1)
