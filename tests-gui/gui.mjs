// Real-window scenarios for Mailbox Auth: the built app under Xvfb, driven over W3C WebDriver
// (tauri-driver -> WebKitWebDriver) with plain HTTP calls. Signs in through the sandbox's
// scripted headless browser ($BROWSER) and asserts what the admin sees.
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const shots = path.join(root, "docs", "screenshots");
const bin = process.env.MAILBOX_AUTH_DESKTOP_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "debug", "mailbox-auth-desktop");
const sandbox = readEnvFile(process.env.SANDBOX_ENV_FILE);
const work = mkdtempSync(path.join(os.tmpdir(), "mailbox-auth-gui."));
const log = (...a) => console.error("[gui]", ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];

function readEnvFile(file) {
  if (!file) throw new Error("SANDBOX_ENV_FILE is not set");
  const env = {};
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    if (m) env[m[1]] = m[2].replace(/^"(.*)"$/, "$1").replace(/^'(.*)'$/, "$1");
  }
  return env;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitPort(port, ms = 15000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, "127.0.0.1", () => (c.end(), r(true)));
      c.on("error", () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

function start(cmd, args, env, name) {
  const out = path.join(work, `${name}.log`);
  const p = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const chunks = [];
  const keep = (d) => {
    chunks.push(d);
    appendFileSync(out, d);
  };
  p.stdout.on("data", keep);
  p.stderr.on("data", keep);
  p.logTail = () => Buffer.concat(chunks).toString().split("\n").slice(-25).join("\n");
  children.push(p);
  return p;
}

function stop(p) {
  if (!p || p.exitCode !== null) return;
  try {
    process.kill(-p.pid, "SIGTERM");
  } catch {}
}

async function startXvfb() {
  for (let n = 90 + (process.pid % 50); n < 250; n++) {
    if (existsSync(`/tmp/.X${n}-lock`) || existsSync(`/tmp/.X11-unix/X${n}`)) continue;
    const x = start("Xvfb", [`:${n}`, "-screen", "0", "1280x800x24", "-nolisten", "tcp"], process.env, "xvfb");
    for (let i = 0; i < 50; i++) {
      if (existsSync(`/tmp/.X11-unix/X${n}`)) return { x, display: `:${n}` };
      if (x.exitCode !== null) break;
      await sleep(100);
    }
    stop(x);
  }
  throw new Error("no free X display for Xvfb");
}

// --- W3C WebDriver over HTTP --------------------------------------------------------------
class Session {
  static async open(base, app) {
    const r = await req(base, "POST", "/session", { capabilities: { alwaysMatch: { "tauri:options": { application: app } } } });
    const s = new Session(base, r.sessionId);
    return s;
  }
  constructor(base, id) {
    this.base = base;
    this.id = id;
  }
  cmd(method, p, body) {
    return req(this.base, method, `/session/${this.id}${p}`, body);
  }
  async find(css) {
    const r = await this.cmd("POST", "/element", { using: "css selector", value: css });
    return Object.values(r)[0];
  }
  async findAll(css) {
    const r = await this.cmd("POST", "/elements", { using: "css selector", value: css });
    return r.map((e) => Object.values(e)[0]);
  }
  async click(css) {
    const el = await this.waitFor(() => this.find(css), `${css} to appear`);
    await this.cmd("POST", `/element/${el}/click`, {});
  }
  async text(css) {
    return this.cmd("GET", `/element/${await this.find(css)}/text`);
  }
  async attr(css, name) {
    return this.cmd("GET", `/element/${await this.find(css)}/attribute/${name}`);
  }
  script(body, ...args) {
    return this.cmd("POST", "/execute/sync", { script: body, args });
  }
  /** Sets an input/textarea/select value the way typing would (input + change events). */
  async set(css, value) {
    await this.waitFor(() => this.find(css), `${css} to appear`);
    const ok = await this.script(
      `const el = document.querySelector(arguments[0]); if (!el) return false;
       el.focus(); el.value = arguments[1];
       el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true}));
       return true;`,
      css,
      value,
    );
    if (!ok) throw new Error(`no element ${css}`);
  }
  async type(css, value) {
    const el = await this.waitFor(() => this.find(css), `${css} to appear`);
    await this.cmd("POST", `/element/${el}/clear`, {});
    await this.cmd("POST", `/element/${el}/value`, { text: value });
  }
  /** Polls until fn returns something truthy (exceptions count as not yet). */
  async waitFor(fn, what, ms = 20000) {
    const end = Date.now() + ms;
    let last;
    while (Date.now() < end) {
      try {
        const v = await fn();
        if (v) return v;
      } catch (e) {
        last = e;
      }
      await sleep(150);
    }
    throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${last ? ` (${last.message})` : ""}`);
  }
  async screenshot(file) {
    // Two animation frames so the last DOM change is painted.
    await this.cmd("POST", "/execute/async", {
      script: "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
      args: [],
    });
    const b64 = await this.cmd("GET", "/screenshot");
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, Buffer.from(b64, "base64"));
    log("screenshot", path.relative(root, file));
  }
  close() {
    return this.cmd("DELETE", "").catch(() => {});
  }
}

async function req(base, method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({}));
  if (!r.ok || (j.value && j.value.error)) {
    throw new Error(`${method} ${p}: ${j.value?.error ?? r.status} ${j.value?.message ?? ""}`.trim());
  }
  return j.value;
}

// --- one app run: its own data dir and keyring service --------------------------------------
async function withApp(label, display, fn) {
  const home = mkdtempSync(path.join(work, `${label}-home.`));
  const port = await freePort();
  const nativePort = await freePort();
  const env = {
    ...process.env,
    DISPLAY: display,
    MAILBOX_AUTH_HOME: home,
    MAILBOX_AUTH_KEYRING_SERVICE: `mailbox-auth-gui-${process.pid}-${label}`,
    BROWSER: sandbox.SANDBOX_BROWSER,
    SANDBOX_LOGIN_USER: "alice@sandbox.test",
    SANDBOX_LOGIN_PASSWORD: "alice-password",
    SANDBOX_BROWSER_OUT: path.join(work, `${label}-browser.log`),
    RUST_LOG: "warn,mailbox_auth_desktop=info",
  };
  delete env.WEBKIT_DISABLE_COMPOSITING_MODE; // makes WebDriver screenshots hang
  const driver = start("tauri-driver", ["--port", String(port), "--native-port", String(nativePort)], env, `${label}-driver`);
  let s;
  try {
    await waitPort(port);
    // tauri-driver answers before the WebKitWebDriver it starts is listening; on a cold
    // machine that takes a while, so wait for the native driver too, and retry the session.
    await waitPort(nativePort, 30000);
    for (let attempt = 1; ; attempt++) {
      try {
        s = await Session.open(`http://127.0.0.1:${port}`, bin);
        break;
      } catch (e) {
        if (attempt >= 5) throw e;
        await sleep(1000);
      }
    }
    current = s;
    await s.waitFor(() => s.find("#board"), "the board to render", 30000);
    await fn(s);
  } catch (e) {
    if (s) await s.screenshot(path.join(work, `${label}-failure.png`)).catch(() => {});
    e.message += `\n--- tauri-driver/app log (last lines):\n${driver.logTail()}`;
    throw e;
  } finally {
    current = null;
    if (s) await s.close();
    stop(driver);
    await sleep(300);
  }
}

// --- scenarios -----------------------------------------------------------------------------
const results = [];
let current = null; // the open session, for failure screenshots
async function scenario(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name}: ${e.message}`);
    const shot = path.join(work, `failure-${results.length}.png`);
    if (current) await current.screenshot(shot).catch(() => {});
    if (current) {
      const toasts = await current.script("return [...document.querySelectorAll('[data-testid=toast]')].map(t => t.innerText).join(' | ')").catch(() => "");
      if (toasts) console.log(`     messages on screen: ${toasts}`);
    }
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

/** Fills the editor with a sandbox mailbox (generic provider). */
async function fillSandboxMailbox(s, name, { folder = "INBOX", protocol = "imap" } = {}) {
  await s.click('[data-testid="add-mailbox"], [data-testid="empty-add"]');
  await s.waitFor(() => s.find("#editor"), "the editor");
  await s.set("#field-provider", "generic");
  await sleep(300); // the preset lookup
  await s.type("#field-name", name);
  await s.type("#field-email", "alice@sandbox.test");
  await s.type("#field-client_id", sandbox.SANDBOX_CLIENT_ID);
  await s.set("#field-scopes", sandbox.SANDBOX_SCOPES);
  await s.set("#field-auth_url", sandbox.SANDBOX_AUTH_URL);
  await s.set("#field-token_url", sandbox.SANDBOX_TOKEN_URL);
  await s.set("#field-protocol", protocol);
  await sleep(200);
  await s.type("#field-host", sandbox.SANDBOX_MAIL_HOST);
  await s.set("#field-port", protocol === "imap" ? sandbox.SANDBOX_IMAPS_PORT : sandbox.SANDBOX_POP3S_PORT);
  if (protocol === "imap") await s.set("#field-folder", folder);
  await s.set("#field-ca_file", sandbox.SANDBOX_CA_FILE);
  for (const [i, pair] of sandbox.SANDBOX_AUTH_PARAMS.split(/[\s&]+/).filter(Boolean).entries()) {
    const [k, v] = pair.split("=");
    await s.click('[data-testid="add-param"]');
    await s.set(`#param-key-${i}`, k);
    await s.set(`#param-value-${i}`, v);
  }
}

const status = (s, css) => s.attr(css, "data-status");

async function main() {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build it with cargo build -p mailbox-auth-desktop`);
  const { x, display } = await startXvfb();
  log("Xvfb on", display, "work dir", work);
  try {
    await withApp("editor", display, async (s) => {
      await scenario("first run shows the empty state with add and import", async () => {
        const t = await s.waitFor(() => s.text('[data-testid="empty-state"]'), "the empty state");
        assert(t.includes("No mailboxes yet"), `empty state says ${JSON.stringify(t)}`);
        await s.find('[data-testid="empty-add"]');
        await s.find('[data-testid="empty-import"]');
      });

      await scenario("editor shows validation errors next to their fields", async () => {
        await s.click('[data-testid="empty-add"]');
        await s.set("#field-provider", "generic");
        await sleep(300);
        await s.type("#field-name", "broken");
        await s.type("#field-email", "not-an-address");
        await s.set("#field-port", "99999");
        await s.click('[data-testid="save"]');
        const portErr = await s.waitFor(() => s.text('[data-testid="error-port"]'), "the port error");
        assert(portErr.includes("between 1 and 65535"), `port error: ${portErr}`);
        await s.set("#field-port", "993");
        await s.click('[data-testid="save"]');
        const emailErr = await s.waitFor(() => s.text('[data-testid="error-email"]'), "the email error from the core");
        assert(emailErr.includes("must be an address"), `email error: ${emailErr}`);
        const cidErr = await s.text('[data-testid="error-client_id"]');
        assert(cidErr.includes("is required"), `client_id error: ${cidErr}`);
        assert((await s.attr("#field-email", "aria-invalid")) === "true", "email input marked invalid");
        await s.click('[data-testid="back"]');
      });

      await scenario("add a sandbox mailbox, Authenticate, browser signs in, badge turns Verified", async () => {
        await fillSandboxMailbox(s, "alice-imap");
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(() => s.find("#sign-in"), "the sign-in sheet");
        const url = await s.waitFor(async () => s.script("return document.querySelector('#sign-in-url')?.value || ''"), "the sign-in URL");
        assert(url.startsWith(sandbox.SANDBOX_AUTH_URL), `sign-in URL ${url}`);
        const waiting = await s.text('[data-testid="step-waiting"]');
        assert(waiting.includes("Waiting for sign-in in your browser"), `step text ${waiting}`);
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "verified", "Verified", 90000);
        const badge = await s.text('[data-testid="status-badge"]');
        assert(badge.includes("Verified"), `badge ${badge}`);
        const msg = await s.text('[data-testid="last-message"]');
        assert(/3 messages/.test(msg), `last message ${msg}`);
        const hist = await s.findAll('[data-testid="history"] li');
        assert(hist.length >= 2, `history has ${hist.length} entries (sign-in + IMAP login)`);
        await s.script("document.querySelector('#mailbox-form').scrollTop = 0; document.activeElement?.blur();");
        await s.screenshot(path.join(shots, "editor.png"));
      });

      await scenario("a mailbox with a wrong folder turns Failed with a hint", async () => {
        await s.click('[data-testid="back"]');
        await fillSandboxMailbox(s, "alice-wrong-folder", { folder: "NoSuchFolder" });
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "failed", "Failed", 90000);
        const badge = await s.text('[data-testid="status-badge"]');
        assert(badge.includes("Failed"), `badge ${badge}`);
        const hint = await s.text('[data-testid="last-hint"]');
        assert(/folder name/i.test(hint), `hint ${hint}`);
        const words = await s.text('[data-testid="server-words"]').catch(() => "");
        log("server words:", words);
        await s.click('[data-testid="back"]');
        await s.waitFor(async () => (await status(s, '[data-testid="row-alice-wrong-folder"]')) === "failed", "the board row to be Failed");
        assert((await status(s, '[data-testid="row-alice-imap"]')) === "verified", "alice-imap still Verified on the board");
      });
    });

    await withApp("bulk", display, async (s) => {
      const iss = sandbox;
      const common = `generic,${iss.SANDBOX_CLIENT_ID},${iss.SANDBOX_SCOPES},${iss.SANDBOX_AUTH_URL},${iss.SANDBOX_TOKEN_URL},${iss.SANDBOX_AUTH_PARAMS},${iss.SANDBOX_CA_FILE}`;
      const kinds = [
        ["imap", iss.SANDBOX_IMAPS_PORT, "tls"],
        ["imap", iss.SANDBOX_IMAP_STARTTLS_PORT, "starttls"],
        ["pop3", iss.SANDBOX_POP3S_PORT, "tls"],
        ["pop3", iss.SANDBOX_POP3_STLS_PORT, "starttls"],
      ];
      const rows = Array.from({ length: 10 }, (_, i) => {
        const [proto, port, sec] = kinds[i % kinds.length];
        return `desk-${String(i + 1).padStart(2, "0")},alice@sandbox.test,${proto},${iss.SANDBOX_MAIL_HOST},${port},${sec},INBOX,${common}`;
      });
      const csv = [
        "name,email,protocol,host,port,security,folder,provider,client_id,scopes,auth_url,token_url,auth_params,ca_file",
        ...rows.slice(0, 5),
        `bad-row,not-an-address,imap,${iss.SANDBOX_MAIL_HOST},${iss.SANDBOX_IMAPS_PORT},tls,INBOX,${common}`,
        ...rows.slice(5),
      ].join("\n");

      await scenario("bulk: paste CSV, preview shows per-row errors, import 10", async () => {
        await s.click('[data-testid="empty-import"]');
        await s.set("#csv-text", csv);
        await s.click('[data-testid="preview"]');
        await s.waitFor(() => s.find('[data-testid="preview-table"]'), "the preview table");
        const valid = await s.attr('[data-testid="preview-summary"]', "data-valid");
        const invalid = await s.attr('[data-testid="preview-summary"]', "data-invalid");
        assert(valid === "10" && invalid === "1", `preview valid=${valid} invalid=${invalid}`);
        const errs = await s.text('[data-testid="row-errors-7"]');
        assert(errs.includes("email") && errs.includes("must be an address"), `row 7 errors: ${errs}`);
        await s.click('[data-testid="import"]');
        const res = await s.waitFor(() => s.text('[data-testid="import-result"]'), "the import result");
        assert(res.includes("Imported 10 mailboxes"), `import result ${res}`);
      });

      await scenario("bulk: Authenticate all (one sign-in at a time) then Verify all -> 10 Verified, progress seen", async () => {
        await s.click('[data-testid="authenticate-all"]');
        const pos = await s.waitFor(() => s.text('[data-testid="sign-in-position"]'), "the queue position");
        assert(/of 10/.test(pos), `queue position ${pos}`);
        await s.waitFor(async () => (await s.attr('[data-testid="bulk-summary"]', "data-verified")) === "10", "10 Verified after Authenticate all", 300000);
        let seen = new Set();
        await s.click('[data-testid="verify-all"]');
        await s.waitFor(async () => {
          const t = await s.text('[data-testid="bulk-progress-text"]').catch(() => "");
          if (t) seen.add(t);
          return (await s.attr('[data-testid="bulk-progress"]', "data-finished")) === "true" && t.includes("finished");
        }, "Verify all to finish", 120000);
        const final = await s.text('[data-testid="bulk-progress-text"]');
        assert(final.includes("10 verified, 0 failed"), `final progress ${final}; seen ${[...seen].join(" | ")}`);
        assert([...seen].some((t) => /Verifying \d+ of 10/.test(t)) || seen.size > 1, `progress seen: ${[...seen].join(" | ")}`);
        await s.waitFor(async () => (await s.attr('[data-testid="bulk-summary"]', "data-verified")) === "10", "10 Verified after Verify all");
        await s.screenshot(path.join(shots, "bulk.png"));
        await s.click('[data-testid="nav-board"]');
        await s.waitFor(() => s.find("#board"), "the board");
        const verified = await s.text('[data-testid="count-verified"]');
        assert(verified === "10", `board counts ${verified} Verified`);
        const rowsShown = await s.findAll('[data-testid^="row-"]');
        assert(rowsShown.length === 10, `board shows ${rowsShown.length} rows`);
        await s.screenshot(path.join(shots, "board.png"));
      });
    });
  } finally {
    stop(x);
  }
}

let fatal = null;
try {
  await main();
} catch (e) {
  fatal = e;
  console.log(`FAIL setup: ${e.message}`);
}
for (const c of children) stop(c);
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed + (fatal ? 1 : 0);
if (failed === 0) rmSync(work, { recursive: true, force: true });
else console.log(`logs and failure screenshots kept in ${work}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
