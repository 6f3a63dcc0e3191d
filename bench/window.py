"""The window and package rows of `scripts/bench` (README "Performance"), measured side by side
with their floor in one run:

- cold start to an interactive board under Xvfb: from spawning the release window to the line
  it writes on stderr when the UI has rendered and painted the first list
  (`MAILBOX_AUTH_REPORT_READY=1`; the UI's `board-ready` event), the median of several runs, with
  an empty data directory and with M mailboxes; beside it the floor, a blank Tauri window from
  the same crate and profile (`bench/blank-window.rs`) that writes the line when its empty page
  has loaded;
- idle memory: PSS (`/proc/PID/smaps_rollup`) summed over the process and its WebKit children
  (web and network processes) once the tree has gone quiet and then stayed idle: PSS shares each
  shared page among the processes mapping it, so the sum counts the libraries once, where a sum
  of RSS counts WebKit's libraries in every process;
- the `.deb`'s size and the binaries in it.

Targets (issue 10): cold start < 1 s, idle memory < 120 MB, `.deb` < 15 MB; cold start and memory
are also reported as ratios to the blank window, the floor no app code can go below.
"""
import os
import re
import select
import signal
import statistics
import subprocess
import time

READY = re.compile(rb"board ready: ([^\n]*?),? (\d+) ms after start")
START_TARGET_MS = 1000
MEMORY_TARGET_MB = 120
DEB_TARGET_MB = 15


def add_args(ap):
    ap.add_argument("--window", action="store_true",
                    help="also the window: cold start and idle memory against a blank Tauri window")
    ap.add_argument("--deb", nargs="?", const="auto",
                    help="also the .deb's size (PATH, or the newest under $CARGO_TARGET_DIR/release/bundle/deb)")
    ap.add_argument("--window-runs", type=int, default=5, help="cold starts per variant (the median is reported)")
    ap.add_argument("--only", choices=["window", "keyring"],
                    help="run only this part (no bulk verify): the window, or the keyring layouts")


class Xvfb:
    """A private X server on a free display (Xvfb picks it: -displayfd)."""

    def __enter__(self):
        r, w = os.pipe()
        self.p = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                                  pass_fds=(w,), stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            self.display = ":" + f.readline().strip()
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        self.p.wait()


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def rollup_mb(pids, field):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1024


def tree_ticks(pids):
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def cold_start(binary, env, timeout=90):
    """Spawns `binary`; seconds until its "board ready" line (None if it never came), the line's
    words, and the running process (in its own process group, with its WebKit children)."""
    start = time.monotonic()
    p = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    buf = b""
    while time.monotonic() - start < timeout:
        ready, _, _ = select.select([p.stderr], [], [], 0.5)
        if ready:
            chunk = os.read(p.stderr.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            m = READY.search(buf)
            if m:
                at = time.monotonic() - start
                # Keep draining stderr so the window never blocks on a full pipe.
                subprocess.Popen(["cat"], stdin=p.stderr, stdout=subprocess.DEVNULL)
                return at, m.group(1).decode(), p
    stop(p)
    raise RuntimeError(f"{binary}: no 'board ready' line within {timeout} s: {buf[-600:].decode(errors='replace')}")


def idle_memory(p, idle_secs):
    """Waits until the tree has used no CPU for 3 s (start-up work done, e.g. the monitor's first
    pass), then `idle_secs` more; PSS and the sum of RSS over the tree."""
    last, still, deadline = tree_ticks(descendants(p.pid)), 0, time.monotonic() + 600
    while still < 3 and time.monotonic() < deadline:
        time.sleep(1)
        now = tree_ticks(descendants(p.pid))
        still = still + 1 if now == last else 0
        last = now
    time.sleep(idle_secs)
    pids = descendants(p.pid)
    return {"pss_mb": rollup_mb(pids, "Pss"), "rss_mb": rollup_mb(pids, "Rss"), "procs": len(pids)}


def measure(label, binary, env, runs, idle_secs, log):
    """`runs` cold starts (median), then the idle memory of the last one."""
    times, what = [], ""
    for i in range(runs):
        at, what, p = cold_start(binary, env)
        times.append(at)
        if i < runs - 1:
            stop(p)
    try:
        mem = idle_memory(p, idle_secs)
    finally:
        stop(p)
    out = {"label": label, "start_ms": 1000 * statistics.median(times), "starts_ms": [1000 * t for t in times],
           "shown": what, **mem}
    log(f"{label}: cold start {out['start_ms']:.0f} ms (median of {runs}: "
        f"{', '.join('%.0f' % t for t in out['starts_ms'])}; {what}); idle PSS {mem['pss_mb']:.0f} MB "
        f"over {mem['procs']} processes (RSS summed {mem['rss_mb']:.0f} MB)")
    return out


def run_window(bench, big_home, n, signed_in, log):
    """The blank window, the window with an empty board and with `n` mailboxes, under one Xvfb."""
    a = bench.a
    bins = os.path.dirname(bench.bin)
    app = os.path.join(bins, "mailbox-auth-desktop")
    blank = os.path.join(bins, "examples", "blank-window")
    for b in (app, blank):
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: scripts/bench --window builds it")
    empty = os.path.join(bench.work, "window-empty")
    os.makedirs(empty, exist_ok=True)
    rows = []
    with Xvfb() as x:
        def env(home, variant):
            # Each variant its own WebKit data and cache (the blank window shares the app's identifier).
            xdg = os.path.join(bench.work, f"xdg-{variant}")
            e = bench.env(home, DISPLAY=x.display, MAILBOX_AUTH_REPORT_READY="1",
                          XDG_DATA_HOME=os.path.join(xdg, "data"), XDG_CACHE_HOME=os.path.join(xdg, "cache"),
                          XDG_CONFIG_HOME=os.path.join(xdg, "config"))
            return e

        runs = a.window_runs
        floor = measure("blank Tauri window (floor)", blank, env(empty, "blank"), runs, a.idle_secs, log)
        rows.append(floor)
        rows.append(measure("window, empty board", app, env(empty, "empty"), runs, a.idle_secs, log))
        state = "signed in" if signed_in else "not signed in"
        rows.append(measure(f"window, {n} mailboxes ({state})", app, env(big_home, "big"), runs, a.idle_secs, log))
    # What the board waits for before it can render: the core's list of the same data (the CLI's).
    for r, home in ((rows[1], empty), (rows[2], big_home)):
        r["list_ms"] = 1000 * statistics.median(bench.cli(home, "list", "--json").wall for _ in range(3))
        log(f"{r['label']}: `list --json` of the same data {r['list_ms']:.0f} ms")
    for r in rows[1:]:
        r["x_start"] = r["start_ms"] / floor["start_ms"]
        r["x_pss"] = r["pss_mb"] / floor["pss_mb"]
        r["added_mb"] = r["pss_mb"] - floor["pss_mb"]
    return rows


def deb_size(path, target_dir):
    if path == "auto":
        d = os.path.join(target_dir, "release", "bundle", "deb")
        debs = sorted((os.path.join(d, f) for f in os.listdir(d) if f.endswith(".deb")), key=os.path.getmtime) \
            if os.path.isdir(d) else []
        if not debs:
            raise SystemExit(f"no .deb in {d}: build it with packaging/deb/build")
        path = debs[-1]
    files = {}
    for line in subprocess.run(["dpkg-deb", "-c", path], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if f[-1].lstrip(".").startswith("/usr/bin/") or f[-1].startswith("usr/bin/"):
            if os.path.basename(f[-1]):
                files[os.path.basename(f[-1])] = int(f[2]) / 1e6
    members = subprocess.run(["ar", "t", path], capture_output=True, text=True, check=True).stdout.split()
    data = next((m for m in members if m.startswith("data.tar")), "?")
    return {"deb_path": path, "deb_mb": os.path.getsize(path) / 1e6, "deb_bins": files, "deb_data": data}


def report(extra, rows):
    """The bullet lines for the window and the .deb."""
    lines = []
    if rows:
        floor = rows[0]
        lines.append("")
        lines.append(f"| window under Xvfb | cold start to interactive, median ms | × floor | `list` of the same data ms | "
                     f"idle PSS MB | × floor | added to the floor MB | RSS summed MB | processes |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            lines.append(f"| {r['label']} | {r['start_ms']:.0f} | {'%.2f×' % r['x_start'] if 'x_start' in r else ''} | "
                         f"{'%.0f' % r['list_ms'] if 'list_ms' in r else ''} | "
                         f"{r['pss_mb']:.0f} | {'%.2f×' % r['x_pss'] if 'x_pss' in r else ''} | "
                         f"{'%+.0f' % r['added_mb'] if 'added_mb' in r else ''} | {r['rss_mb']:.0f} | {r['procs']} |")
        lines.append("")
        worst_start = max(r["start_ms"] for r in rows[1:])
        worst_pss = max(r["pss_mb"] for r in rows[1:])
        lines.append(f"- window cold start to an interactive board: {worst_start:.0f} ms at most "
                     f"(target < {START_TARGET_MS} ms: {'met' if worst_start < START_TARGET_MS else 'not met'}; "
                     f"the blank window takes {floor['start_ms']:.0f} ms)")
        lines.append(f"- window idle PSS: {worst_pss:.0f} MB at most (target < {MEMORY_TARGET_MB} MB: "
                     f"{'met' if worst_pss < MEMORY_TARGET_MB else 'not met'}; the blank window's is "
                     f"{floor['pss_mb']:.0f} MB)")
    if "deb_mb" in extra:
        bins = ", ".join(f"{k} {v:.1f} MB" for k, v in sorted(extra["deb_bins"].items()))
        lines.append(f"- `.deb`: {extra['deb_mb']:.1f} MB (target < {DEB_TARGET_MB} MB: "
                     f"{'met' if extra['deb_mb'] < DEB_TARGET_MB else 'not met'}; {extra['deb_data']}; "
                     f"unpacked: {bins})")
    return lines
