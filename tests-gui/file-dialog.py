#!/usr/bin/env python3
"""Answers the app's native file dialog the way a user does at the keyboard: waits for the X11
window titled ARGV[1] ("Save File" / "Open File", the GTK FileChooser the dialog plugin opens),
gives it the keyboard focus, types the path ARGV[2] into its location entry and presses Return,
then waits for the dialog to go. Keys are sent with the XTest extension (real key events through
the X server, as a keyboard makes them), libX11 + libXtst through ctypes: no Python packages.

The real-window tests run under a bare Xvfb without a window manager, so nothing gives a new
window the focus: it is set here with XSetInputFocus (ICCCM §4.1.7 allows a client to do so).
Save: Ctrl+A selects the proposed name in the name entry, the typed absolute path replaces it
(GTK reads a path there as folder + name). Open: Ctrl+L opens the location entry.
Exit status 0 once the dialog is gone; 1 with a message on stderr otherwise."""
import ctypes
import ctypes.util
import sys
import time

title, target = sys.argv[1].encode(), sys.argv[2]
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0

x = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
xt = ctypes.CDLL(ctypes.util.find_library("Xtst") or "libXtst.so.6")
x.XOpenDisplay.restype = ctypes.c_void_p
x.XOpenDisplay.argtypes = [ctypes.c_char_p]
x.XDefaultRootWindow.restype = ctypes.c_ulong
x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_ulong),
                         ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)), ctypes.POINTER(ctypes.c_uint)]
x.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
x.XSetInputFocus.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong]
x.XRaiseWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
x.XKeysymToKeycode.restype = ctypes.c_ubyte
x.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
x.XKeycodeToKeysym.restype = ctypes.c_ulong
x.XKeycodeToKeysym.argtypes = [ctypes.c_void_p, ctypes.c_ubyte, ctypes.c_int]
x.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
x.XCloseDisplay.argtypes = [ctypes.c_void_p]
xt.XTestQueryExtension.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int)] * 4
xt.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]


class WindowAttributes(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
                ("border_width", ctypes.c_int), ("depth", ctypes.c_int), ("visual", ctypes.c_void_p),
                ("root", ctypes.c_ulong), ("class_", ctypes.c_int), ("bit_gravity", ctypes.c_int),
                ("win_gravity", ctypes.c_int), ("backing_store", ctypes.c_int), ("backing_planes", ctypes.c_ulong),
                ("backing_pixel", ctypes.c_ulong), ("save_under", ctypes.c_int), ("colormap", ctypes.c_ulong),
                ("map_installed", ctypes.c_int), ("map_state", ctypes.c_int), ("all_event_masks", ctypes.c_long),
                ("your_event_mask", ctypes.c_long), ("do_not_propagate_mask", ctypes.c_long),
                ("override_redirect", ctypes.c_int), ("screen", ctypes.c_void_p)]


x.XGetWindowAttributes.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(WindowAttributes)]
IS_VIEWABLE, REVERT_TO_PARENT = 2, 2
SHIFT, CONTROL, RETURN = 0xFFE1, 0xFFE3, 0xFF0D

d = x.XOpenDisplay(None)
if not d:
    sys.exit("file-dialog: cannot open the display $DISPLAY")
if not xt.XTestQueryExtension(d, *(ctypes.pointer(ctypes.c_int()) for _ in range(4))):
    sys.exit("file-dialog: the X server has no XTest extension")


def dialogs():
    """The viewable top-level windows titled `title` (GTK names its toplevel, a child of the root)."""
    root, parent, children, n = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
    if not x.XQueryTree(d, x.XDefaultRootWindow(d), ctypes.byref(root), ctypes.byref(parent), ctypes.byref(children), ctypes.byref(n)):
        return []
    found = []
    for i in range(n.value):
        w, name, attrs = children[i], ctypes.c_char_p(), WindowAttributes()
        if x.XFetchName(d, w, ctypes.byref(name)) and name.value == title:
            if x.XGetWindowAttributes(d, w, ctypes.byref(attrs)) and attrs.map_state == IS_VIEWABLE:
                found.append(w)
    return found


def key(keysym, down):
    code = x.XKeysymToKeycode(d, keysym)
    if not code:
        sys.exit(f"file-dialog: no key for keysym {keysym:#x} in the X keymap")
    xt.XTestFakeKeyEvent(d, code, down, 0)
    x.XSync(d, 0)
    time.sleep(0.01)


def press(keysym, *modifiers):
    for m in modifiers:
        key(m, 1)
    key(keysym, 1)
    key(keysym, 0)
    for m in reversed(modifiers):
        key(m, 0)


def type_text(text):
    for c in text:
        # Latin-1 keysyms are the characters' code points (X11 keysymdef.h).
        keysym = ord(c)
        if keysym > 0xFF:
            sys.exit(f"file-dialog: cannot type {c!r}")
        code = x.XKeysymToKeycode(d, keysym)
        shifted = code and x.XKeycodeToKeysym(d, code, 0) != keysym
        press(keysym, *([SHIFT] if shifted else []))


def wait(cond, what):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    sys.exit(f"file-dialog: timed out after {timeout:.0f} s waiting for {what}")


w = wait(dialogs, f"a window titled {title.decode()!r}")[0]
time.sleep(0.5)  # GTK realises the dialog's widgets and focus chain after mapping it
x.XRaiseWindow(d, w)
x.XSetInputFocus(d, w, REVERT_TO_PARENT, 0)
x.XSync(d, 0)
time.sleep(0.3)
if b"Save" in title:
    press(ord("a"), CONTROL)
else:
    press(ord("l"), CONTROL)
time.sleep(0.3)
type_text(target)
time.sleep(0.5)  # let the entry's completion settle before Return
for attempt in range(3):
    press(RETURN)
    end = time.time() + 3
    while time.time() < end and dialogs():
        time.sleep(0.1)
    if not dialogs():
        break
    # A completion popup may take the first Return; give it another.
    x.XSetInputFocus(d, w, REVERT_TO_PARENT, 0)
still = bool(dialogs())
x.XCloseDisplay(d)
if still:
    sys.exit(f"file-dialog: the {title.decode()!r} dialog is still open after Return")
print("answered")
