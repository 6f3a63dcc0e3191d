#!/usr/bin/env python3
"""The bulk-verify benchmark (`scripts/bench` runs it inside the sandbox; see README "Performance").

Everything runs side by side in one run on one machine, so the ratios compare like with like:

1. N mailboxes (all on the sandbox's IMAPS server) are imported and signed in once, through the
   real `mailbox-auth authenticate` with a plain-HTTP stand-in for the browser.
2. Behind a wide-area link (`bench-tool proxy`: one-way delay D each way, the TCP handshake's
   round trip charged too) in front of the IdP and the mail server:
   - the sequential script (`bench/sequential.py`: refresh + IMAPS AUTHENTICATE XOAUTH2 +
     EXAMINE + LOGOUT, one mailbox after another, as `mutt_oauth2.py --test` does);
   - `mailbox-auth verify --all` at several concurrencies C;
   - the latency floor: the protocol-minimum round trips of one check (TCP, TLS 1.3, the
     greeting, AUTHENTICATE with SASL-IR, EXAMINE; the refresh runs while connecting and LOGOUT
     is not waited for: 5) × RTT × ⌈N/C⌉.
3. On bare loopback: the same, plus the stack's ceiling (`bench-tool ceiling`: N logins with one
   access token, no refresh, at each C; the best).
4. `list` with M mailboxes; the headless monitor with M mailboxes: time to check them all behind
   the link, then idle RSS and CPU between checks.
5. With `--window` / `--deb` (`--only window` for these alone): the window's cold start to an
   interactive board under Xvfb and its idle memory, beside a blank Tauri window (the floor), and
   the `.deb`'s size (`bench/window.py`).

Client CPU and peak RSS are the measured process's own (`wait4` rusage: user + system time,
its children included; `ru_maxrss`).
"""
import argparse
import concurrent.futures
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import window

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FLOOR_ROUND_TRIPS = 5


def sandbox_env() -> dict:
    path = os.environ["SANDBOX_ENV_FILE"]
    out = {}
    for line in open(path):
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"').strip("'")
    return out


class Measured:
    def __init__(self, wall, cpu, rss_mb, rc, stdout, stderr):
        self.wall, self.cpu, self.rss_mb, self.rc, self.stdout, self.stderr = wall, cpu, rss_mb, rc, stdout, stderr


def measure(cmd, env=None, stdin=None) -> Measured:
    """Runs `cmd`, returns wall time, its CPU (user + system, children included) and peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.PIPE if stdin else None)
        if stdin:
            p.stdin.write(stdin.encode())
            p.stdin.close()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, p.returncode,
                        out.read().decode(errors="replace"), err.read().decode(errors="replace"))


class Bench:
    def __init__(self, args):
        self.a = args
        self.sb = sandbox_env()
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        bins = os.environ.get("BENCH_BIN_DIR") or os.path.join(target, os.environ.get("BENCH_PROFILE", "release"))
        self.bin = os.path.join(bins, "mailbox-auth")
        self.tool = os.path.join(bins, "bench-tool")
        for b in (self.bin,) if args.only == "window" else (self.bin, self.tool):
            if not os.path.exists(b):
                sys.exit(f"{b} is missing: scripts/bench builds it")
        self.work = tempfile.mkdtemp(prefix="mailbox-auth-bench.")
        self.service = f"mailbox-auth-bench-{os.getpid()}"
        self.rows = []
        self.notes = []

    # --- the app -------------------------------------------------------------------------------

    def env(self, home, **extra):
        e = dict(os.environ)
        e.update(MAILBOX_AUTH_HOME=home, MAILBOX_AUTH_KEYRING_SERVICE=self.service, MAILBOX_AUTH_LOG="warn")
        e.pop("BROWSER", None)
        e.update(extra)
        return e

    def cli(self, home, *args, **extra):
        return measure([self.bin, *args], env=self.env(home, **extra))

    def home(self, label, count, token_url, port):
        home = os.path.join(self.work, label)
        os.makedirs(home)
        sb = self.sb
        header = "name,email,protocol,host,port,security,folder,provider,client_id,scopes,auth_url,token_url,auth_params,ca_file"
        rows = [
            f"{self.name(i)},alice@sandbox.test,imap,{sb['SANDBOX_MAIL_HOST']},{port},tls,INBOX,generic,"
            f"{sb['SANDBOX_CLIENT_ID']},{sb['SANDBOX_SCOPES']},{sb['SANDBOX_AUTH_URL']},{token_url},"
            f"{sb['SANDBOX_AUTH_PARAMS']},{sb['SANDBOX_CA_FILE']}"
            for i in range(count)
        ]
        csv = os.path.join(home, "mailboxes.csv")
        open(csv, "w").write(header + "\n" + "\n".join(rows) + "\n")
        r = self.cli(home, "import", csv)
        if r.rc != 0:
            sys.exit(f"import failed: {r.stderr}")
        return home

    @staticmethod
    def name(i):
        return f"bench-{i:04d}"

    def authenticate(self, home, count):
        def one(i):
            for _ in range(3):
                r = self.cli(home, "authenticate", self.name(i), "--timeout", "60", "--json",
                             BROWSER=os.path.join(HERE, "http-browser"),
                             BENCH_LOGIN_USER="alice@sandbox.test", BENCH_LOGIN_PASSWORD="alice-password")
                if r.rc == 0:
                    return True
            print(f"authenticate {self.name(i)} failed: {r.stderr[-400:]}", file=sys.stderr)
            return False

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            ok = sum(pool.map(one, range(count)))
        if ok != count:
            sys.exit(f"only {ok} of {count} mailboxes signed in")
        log(f"signed in {count} mailboxes in {time.monotonic() - start:.1f} s")

    # --- the measurements ----------------------------------------------------------------------

    def sequential(self, label, token_url, port, count):
        tsv = os.path.join(self.work, f"seq-{label}.tsv")
        sb = self.sb
        with open(tsv, "w") as f:
            for i in range(count):
                f.write("\t".join([self.name(i), "alice@sandbox.test", token_url, sb["SANDBOX_CLIENT_ID"],
                                   sb["SANDBOX_MAIL_HOST"], str(port), sb["SANDBOX_CA_FILE"], "INBOX"]) + "\n")
        r = measure([sys.executable, os.path.join(HERE, "sequential.py"), self.service, tsv])
        if r.rc != 0:
            sys.exit(f"the sequential script failed: {r.stdout} {r.stderr[-800:]}")
        return r

    def keyring_ticks(self):
        pid = getattr(self, "keyring_pid", None)
        if pid is None:
            # The Secret Service of this D-Bus session (several sandboxes may run side by side).
            out = subprocess.run(["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/",
                                  "org.freedesktop.DBus.GetConnectionUnixProcessID", "string:org.freedesktop.secrets"],
                                 capture_output=True, text=True)
            m = re.search(r"uint32 (\d+)", out.stdout)
            pid = self.keyring_pid = m.group(1) if m else ""
        try:
            return cpu_ticks(int(pid)) if pid else None
        except (OSError, ValueError):
            return None

    def verify(self, home, c, n):
        k0 = self.keyring_ticks()
        r = self.cli(home, "verify", "--all", "--json", "--concurrency", str(c), "--per-account", str(c))
        k1 = self.keyring_ticks()
        # gnome-keyring's CPU for this run, per mailbox: the Secret Service answers one call at a
        # time, so its time per mailbox bounds the rate.
        r.keyring_ms = None if k0 is None or k1 is None else 1000 * (k1 - k0) / os.sysconf("SC_CLK_TCK") / n
        records = json.loads(r.stdout) if r.stdout.strip().startswith("[") else []
        green = sum(1 for x in records if x.get("ok") or x.get("status") == "ok" or x.get("outcome") == "ok")
        if r.rc != 0:
            self.notes.append(f"verify --all C={c}: exit {r.rc}, {green} of {n} green")
        return r

    def keyring_floor(self, items):
        """The Secret Service daemon's own CPU per call with the items it holds now (one scratch
        entry added), measured on the same daemon the runs use: what a verified mailbox costs it
        at least (a lookup of the client secret, which the sandbox's public client does not
        have, one of the refresh token, and a store of the rotated one)."""
        self.keyring_ticks()
        pid = getattr(self, "keyring_pid", "")
        self.keyring_cost = None
        if not pid:
            return
        r = subprocess.run([self.tool, "keyring-cost", pid, "40"], capture_output=True, text=True,
                           env=self.env(self.work))
        if r.returncode != 0:
            self.notes.append(f"keyring-cost failed: {r.stderr.strip()[-300:]}")
            return
        c = json.loads(r.stdout)
        c["items"] = items + 1
        c["per_mailbox_ms"] = c["miss_ms"] + c["lookup_ms"] + c["store_ms"]
        self.keyring_cost = c
        log(f"keyring with {items + 1} items: lookup {c['lookup_ms']:.2f} ms, miss {c['miss_ms']:.2f} ms, "
            f"store {c['store_ms']:.2f} ms of daemon CPU per call")

    def ceiling(self, home, n, c):
        tok = self.cli(home, "token", self.name(0))
        if tok.rc != 0:
            sys.exit(f"token failed: {tok.stderr}")
        sb = self.sb
        env = dict(os.environ, BENCH_ACCESS_TOKEN=tok.stdout.strip())
        r = measure([self.tool, "ceiling", sb["SANDBOX_MAIL_HOST"], sb["SANDBOX_IMAPS_PORT"], sb["SANDBOX_CA_FILE"],
                     "alice@sandbox.test", str(n), str(c)], env=env)
        res = json.loads(r.stdout)
        if res["failed"]:
            self.notes.append(f"ceiling C={c}: {res['failed']} of {n} logins failed")
        return r, res

    def conns(self):
        """Connections the bulk-run link accepted so far: (to the IdP, to the mail server)."""
        self.proxy.stdin.write("stats\n")
        self.proxy.stdin.flush()
        counts = [int(x) for x in self.proxy.stdout.readline().split()]
        return counts[0], counts[1]

    def row(self, scenario, n, r, seq_rate=None, floor=None, ceiling=None, conns=None):
        rate = n / r.wall
        self.rows.append({
            "conns": conns,
            "scenario": scenario,
            "rate": rate,
            "x_seq": rate / seq_rate if seq_rate else None,
            "x_floor": r.wall / floor if floor else None,
            "of_ceiling": rate / ceiling if ceiling else None,
            "cpu_ms": 1000 * r.cpu / n,
            "keyring_ms": getattr(r, "keyring_ms", None),
            "rss_mb": r.rss_mb,
        })
        log(f"{scenario}: {rate:.1f}/s")
        return rate

    def run(self):
        a, sb = self.a, self.sb
        n, m = a.mailboxes, a.big
        rtt = 2 * a.delay_ms / 1000
        token = urllib.parse.urlsplit(sb["SANDBOX_TOKEN_URL"])
        idp = f"{token.hostname}:{token.port}"
        imaps = f"{sb['SANDBOX_MAIL_HOST']}:{sb['SANDBOX_IMAPS_PORT']}"
        proxy = subprocess.Popen([self.tool, "proxy", str(a.delay_ms), idp, imaps, idp, imaps],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ports = [int(proxy.stdout.readline()) for _ in range(4)]
        self.proxy = proxy
        # Two links: one for the bulk runs, one with a 40 ms round trip for the monitor.
        wan_token = token._replace(netloc=f"{token.hostname}:{ports[0]}").geturl()
        proxy40 = subprocess.Popen([self.tool, "proxy", "20", idp, imaps], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        p40 = [int(proxy40.stdout.readline()) for _ in range(2)]
        token40 = token._replace(netloc=f"{token.hostname}:{p40[0]}").geturl()

        total = max(n, m)
        auth_home = self.home("all-bare", total, sb["SANDBOX_TOKEN_URL"], sb["SANDBOX_IMAPS_PORT"])
        self.authenticate(auth_home, total)
        self.keyring_floor(total)
        bare = self.home("bare", n, sb["SANDBOX_TOKEN_URL"], sb["SANDBOX_IMAPS_PORT"])
        wan = self.home("wan", n, wan_token, ports[1])
        seq_n = min(n, a.seq_max)
        concurrencies = [int(c) for c in a.concurrency.split(",")]

        # Behind the link.
        label = f"{2 * a.delay_ms} ms RTT"
        c0 = self.conns()
        r = self.sequential("wan", wan_token, ports[1], seq_n)
        c1 = self.conns()
        seq_rate = self.row(f"{label}: sequential script ({seq_n} mailboxes)", seq_n, r,
                            conns=(c1[0] - c0[0], c1[1] - c0[1]))
        for c in concurrencies:
            c0 = self.conns()
            r = self.verify(wan, c, n)
            c1 = self.conns()
            floor = FLOOR_ROUND_TRIPS * rtt * math.ceil(n / c)
            self.row(f"{label}: verify --all C={c}", n, r, seq_rate=seq_rate, floor=floor,
                     conns=(c1[0] - c0[0], c1[1] - c0[1]))
            self.rows[-1]["floor_rate"] = n / floor

        # Bare loopback.
        r = self.sequential("bare", sb["SANDBOX_TOKEN_URL"], sb["SANDBOX_IMAPS_PORT"], seq_n)
        seq_bare = self.row(f"loopback: sequential script ({seq_n} mailboxes)", seq_n, r)
        best = None
        for c in concurrencies:
            r, _ = self.ceiling(bare, n, c)
            if best is None or r.wall < best[1].wall:
                best = (c, r)
        ceiling = self.row(f"loopback: stack ceiling (one token, no refresh, C={best[0]})", n, best[1],
                           seq_rate=seq_bare)
        for c in concurrencies:
            r = self.verify(bare, c, n)
            self.row(f"loopback: verify --all C={c}", n, r, seq_rate=seq_bare, ceiling=ceiling)

        # list with M mailboxes (all signed in, each with a health history).
        lists = sorted(self.cli(auth_home, "list", "--json").wall for _ in range(3))
        self.extra = {"list_ms": 1000 * lists[1], "list_n": total}
        log(f"list with {total} mailboxes: {1000 * lists[1]:.0f} ms")

        # The headless monitor with M mailboxes behind a 40 ms round trip.
        if not a.skip_monitor:
            self.monitor(m, token40, p40[1])

        # The window beside a blank Tauri window, the .deb (bench/window.py).
        self.window_part(auth_home, total, True)
        for p in (proxy, proxy40):
            p.stdin.close()
            p.wait()
        self.report()

    def monitor(self, m, token_url, port):
        home = self.home("monitor", m, token_url, port)
        r = self.cli(home, "monitor", "--once")
        self.extra.update(monitor_once_s=r.wall, monitor_n=m, monitor_cpu_ms=1000 * r.cpu / m,
                          monitor_once_rss=r.rss_mb)
        if r.rc != 0:
            self.notes.append(f"monitor --once: exit {r.rc}: {r.stderr[-300:]}")
        log(f"monitor --once, {m} mailboxes behind 40 ms RTT: {r.wall:.1f} s")
        # Long-running: a pass at start, then idle until the next (an hour away).
        p = subprocess.Popen([self.bin, "monitor", "--interval", "3600"], env=self.env(home),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # The first pass is done when the process stops using CPU for a while.
            last, still = cpu_ticks(p.pid), 0
            deadline = time.monotonic() + 600
            while still < 3 and time.monotonic() < deadline:
                time.sleep(1)
                now = cpu_ticks(p.pid)
                still = still + 1 if now == last else 0
                last = now
            t0, c0 = time.monotonic(), cpu_ticks(p.pid)
            time.sleep(self.a.idle_secs)
            t1, c1 = time.monotonic(), cpu_ticks(p.pid)
            hz = os.sysconf("SC_CLK_TCK")
            self.extra.update(monitor_idle_cpu=100 * (c1 - c0) / hz / (t1 - t0), monitor_idle_rss=rss_mb(p.pid),
                              monitor_idle_secs=t1 - t0)
        finally:
            p.terminate()
            p.wait()

    def window_part(self, big_home, n, signed_in):
        if self.a.window and shutil.which("Xvfb"):
            self.window_rows = window.run_window(self, big_home, n, signed_in, log)
        elif self.a.window:
            self.notes.append("window: Xvfb is not installed")
        if self.a.deb:
            target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
            self.extra.update(window.deb_size(self.a.deb, target))

    def run_only_window(self):
        """`--only window`: the window and the .deb, with `--big` mailboxes imported (not signed in)."""
        self.extra = {}
        self.a.window = True
        n = self.a.big
        home = self.home("window-big", n, self.sb["SANDBOX_TOKEN_URL"], self.sb["SANDBOX_IMAPS_PORT"])
        self.window_part(home, n, False)
        self.report()

    # Layouts of the same secrets: (entries, bytes each). 1,000 mailboxes with Microsoft-sized
    # refresh tokens (about 1,500 bytes) one per entry, as stored now; the same bytes in fewer,
    # larger entries (shards); and 1,000 small tokens (the sandbox's are 43 bytes), alone and in 32
    # shards.
    KEYRING_LAYOUTS = [(1000, 1500), (100, 15000), (32, 47000), (8, 190000), (1000, 100), (32, 3200), (1, 1500)]

    def run_only_keyring(self):
        """`--only keyring`: what gnome-keyring spends per store and lookup for other layouts of
        the same secrets, each alone in this run's private keyring."""
        self.keyring_ticks()
        pid = getattr(self, "keyring_pid", "")
        if not pid:
            sys.exit("no Secret Service daemon found on this session bus")
        lines = [f"Machine: {machine()}", "",
                 "| keyring layout | entries | bytes each | total KB | store, daemon CPU ms | lookup, daemon CPU ms |",
                 "|---|---:|---:|---:|---:|---:|"]
        for items, size in self.KEYRING_LAYOUTS:
            r = subprocess.run([self.tool, "keyring-layout", pid, str(items), str(size), "30"], capture_output=True,
                               text=True, env=self.env(self.work))
            if r.returncode != 0:
                sys.exit(f"keyring-layout failed: {r.stderr.strip()[-300:]}")
            c = json.loads(r.stdout)
            log(f"{items} entries of {size} bytes: store {c['store_ms']:.2f} ms, lookup {c['lookup_ms']:.2f} ms")
            lines.append(f"| {items} × {size} B | {items} | {size} | {items * size // 1000} | {c['store_ms']:.2f} | "
                         f"{c['lookup_ms']:.2f} |")
        text = "\n".join(lines)
        print(text)
        if self.a.out:
            open(self.a.out, "w").write(text + "\n")

    def report(self):
        a = self.a
        lines = []
        lines.append(f"Machine: {machine()}; N={a.mailboxes}, one-way delay {a.delay_ms} ms "
                     f"({2 * a.delay_ms} ms RTT), floor = {FLOOR_ROUND_TRIPS} round trips × RTT × ⌈N/C⌉")
        lines.append("")
        lines.append("| scenario | mailboxes/s | × sequential | × floor (time) | floor mailboxes/s | of ceiling | client CPU ms/mailbox | keyring CPU ms/mailbox | peak RSS MB | connections IdP / mail |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        fmt = lambda v, f: "" if v is None else f.format(v)
        for r in self.rows:
            lines.append(f"| {r['scenario']} | {r['rate']:.1f} | {fmt(r['x_seq'], '{:.1f}×')} | "
                         f"{fmt(r['x_floor'], '{:.2f}×')} | {fmt(r.get('floor_rate'), '{:.1f}')} | "
                         f"{fmt(r['of_ceiling'], '{:.2f}×')} | {r['cpu_ms']:.2f} | {fmt(r['keyring_ms'], '{:.2f}')} | {r['rss_mb']:.0f} | "
                         f"{'' if not r['conns'] else '%d / %d' % r['conns']} |")
        e = self.extra
        if "list_ms" not in e:  # --only window
            lines = [f"Machine: {machine()}"]
        lines.append("")
        if "list_ms" in e:
            lines.append(f"- `list --json` with {e['list_n']} mailboxes: {e['list_ms']:.0f} ms")
            k = getattr(self, "keyring_cost", None)
            if k:
                lines.append(f"- keyring floor (`bench-tool keyring-cost`, the same daemon with {k['items']} items): "
                             f"{k['lookup_ms']:.2f} ms of its CPU per lookup, {k['miss_ms']:.2f} ms per lookup of a "
                             f"missing entry, {k['store_ms']:.2f} ms per store; {k['per_mailbox_ms']:.2f} ms per "
                             f"verified mailbox (client secret looked up, refresh token read, rotated one stored), "
                             f"so at most {1000 / k['per_mailbox_ms']:.0f} mailboxes/s on a whole idle core")
        if "monitor_once_s" in e:
            lines.append(f"- `monitor --once` with {e['monitor_n']} mailboxes behind a 40 ms RTT: "
                         f"{e['monitor_once_s']:.1f} s ({e['monitor_n'] / e['monitor_once_s']:.1f}/s, "
                         f"{e['monitor_cpu_ms']:.2f} ms CPU per mailbox, peak RSS {e['monitor_once_rss']:.0f} MB)")
            lines.append(f"- `monitor` idle between checks ({e['monitor_idle_secs']:.0f} s sampled): "
                         f"RSS {e['monitor_idle_rss']:.1f} MB, CPU {e['monitor_idle_cpu']:.2f} %")
        lines += window.report(e, getattr(self, "window_rows", []))
        for n in self.notes:
            lines.append(f"- note: {n}")
        text = "\n".join(lines)
        print(text)
        if a.out:
            open(a.out, "w").write(text + "\n")


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mailboxes", "-n", type=int, default=500)
    ap.add_argument("--delay-ms", type=int, default=20, help="one-way delay (RTT is twice this)")
    ap.add_argument("--concurrency", default="4,8,16,32,64")
    ap.add_argument("--seq-max", type=int, default=100,
                    help="mailboxes the sequential script checks (its rate is constant per mailbox)")
    ap.add_argument("--big", type=int, default=1000, help="mailboxes for `list` and the monitor")
    ap.add_argument("--idle-secs", type=int, default=30)
    ap.add_argument("--skip-monitor", action="store_true")
    window.add_args(ap)
    ap.add_argument("--out", help="also write the table here")
    b = Bench(ap.parse_args())
    try:
        if b.a.only == "window":
            b.run_only_window()
        elif b.a.only == "keyring":
            b.run_only_keyring()
        else:
            b.run()
    finally:
        shutil.rmtree(b.work, ignore_errors=True)


if __name__ == "__main__":
    main()
