// Real-window scenarios for Mailbox Auth: the built app under Xvfb, driven over W3C WebDriver
// (tauri-driver -> WebKitWebDriver) with plain HTTP calls. Signs in through the sandbox's
// scripted headless browser ($BROWSER) and asserts what the admin sees.
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
// Screenshots go to test-artifacts/screenshots (ignored by git), so a test run leaves the clone
// clean; scripts/screenshots points this at docs/screenshots to refresh the README's pictures.
const shots = process.env.TESTS_GUI_SCREENSHOTS
  ? path.resolve(process.env.TESTS_GUI_SCREENSHOTS)
  : path.join(root, "test-artifacts", "screenshots");
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
const appBrowserLog = (label) => path.join(work, `${label}-browser.log`);
async function withApp(label, display, fn, extraEnv = {}) {
  // TESTS_GUI_ONLY=flows,bulk runs only those groups (for iterating on one of them).
  const only = (process.env.TESTS_GUI_ONLY ?? "").split(",").filter(Boolean);
  if (only.length && !only.includes(label)) return log("skipping group", label);
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
    // One line per page the app opened in $BROWSER (the device flow must open none).
    SANDBOX_BROWSER_LOG: appBrowserLog(label),
    RUST_LOG: "warn,mailbox_auth_desktop=info",
    ...extraEnv,
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
    await fn(s, { home, display, log: path.join(work, `${label}-driver.log`) });
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
async function fillSandboxMailbox(s, name, { folder = "INBOX", protocol = "imap", email = "alice@sandbox.test", clientId = sandbox.SANDBOX_CLIENT_ID, flow = "auth_code" } = {}) {
  await s.click('[data-testid="add-mailbox"], [data-testid="empty-add"]');
  await s.waitFor(() => s.find("#editor"), "the editor");
  await s.set("#field-provider", "generic");
  await sleep(300); // the preset lookup
  await s.type("#field-name", name);
  await s.type("#field-email", email);
  await s.type("#field-client_id", clientId);
  await s.set("#field-flow", flow);
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

/** Clicks an element of the editor's long form after scrolling it to the middle of its pane
 *  (WebKitWebDriver does not scroll nested panes for a click). */
async function clickInView(s, css) {
  await s.waitFor(() => s.find(css), `${css} to appear`);
  await s.script("document.querySelector(arguments[0]).scrollIntoView({ block: 'center' })", css);
  await s.click(css);
}

/** Answers the app's native file dialog (the GTK FileChooser titled `title`, "Save File" or
 *  "Open File") at the keyboard: `tests-gui/file-dialog.py` waits for its X window, focuses it,
 *  types `file` and presses Return (XTest key events). Resolves once the dialog is gone. */
function answerFileDialog(display, title, file) {
  return new Promise((resolve, reject) => {
    const p = spawn("python3", [path.join(root, "tests-gui", "file-dialog.py"), title, file, "40"], {
      env: { ...process.env, DISPLAY: display },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    p.on("error", reject);
    p.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`the ${title} dialog: ${out.trim()}`))));
  });
}

/** A zip's entries as { name: text } (python3's zipfile: also proves the file is a valid zip). */
function zipEntries(file) {
  const r = spawnSync("python3", ["-c", "import base64, json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nprint(json.dumps({n: base64.b64encode(z.read(n)).decode() for n in z.namelist()}))", file], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${file} is not a zip: ${r.stderr}`);
  return Object.fromEntries(Object.entries(JSON.parse(r.stdout)).map(([n, b]) => [n, Buffer.from(b, "base64").toString("latin1")]));
}

/** Every file under `dir` (recursively) with its bytes. */
function filesUnder(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? filesUnder(p) : [[p, readFileSync(p)]];
  });
}

/** Files (and logs) that hold `secret` as it is or base64-encoded. */
function holdersOf(secret, dirs, files = []) {
  const needles = [Buffer.from(secret), Buffer.from(Buffer.from(secret).toString("base64"))];
  const all = [...dirs.flatMap(filesUnder), ...files.filter(existsSync).map((f) => [f, readFileSync(f)])];
  return all.filter(([, b]) => needles.some((n) => b.includes(n))).map(([f]) => f);
}

/** Sends keystrokes (e.g. "\uE007" Enter, "\uE00C" Escape) to the element that has the focus. */
async function keys(s, text) {
  const el = Object.values(await s.cmd("GET", "/element/active"))[0];
  await s.cmd("POST", `/element/${el}/value`, { text });
}

/** The generated PowerShell as it is in the page (all of it, not only what is scrolled into view). */
const scriptText = (s) => s.script("return document.querySelector('[data-testid=exchange-script-text]')?.textContent ?? ''");

const GUID = "8C1B7A3E-2F4D-4B9A-9E61-0D5F3C2A7B10";

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
        // The core's typed fix names the field; its button takes the focus there.
        assert((await s.attr('[data-testid="hint-edit-field"]', "data-field")) === "folder", "the fix edits the folder");
        await s.click('[data-testid="hint-edit-field"]');
        await s.waitFor(async () => (await s.script("return document.activeElement?.id")) === "field-folder", "the focus on the folder field");
        const words = await s.text('[data-testid="server-words"]').catch(() => "");
        log("server words:", words);
        await s.click('[data-testid="back"]');
        await s.waitFor(async () => (await status(s, '[data-testid="row-alice-wrong-folder"]')) === "failed", "the board row to be Failed");
        assert((await status(s, '[data-testid="row-alice-imap"]')) === "verified", "alice-imap still Verified on the board");
      });
    });

    await withApp("flows", display, async (s, app) => {
      await scenario("device code: the window shows the code and address, a second device enters that code -> Verified with 3 messages", async () => {
        await fillSandboxMailbox(s, "alice-device", { flow: "device" });
        await s.set("#field-device_url", sandbox.SANDBOX_DEVICE_URL);
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(() => s.find("#sign-in"), "the sign-in sheet");
        const code = (await s.waitFor(() => s.text('[data-testid="device-code"]'), "the device code")).trim();
        const uri = await s.script("return document.querySelector('[data-testid=device-verification-uri]').value");
        assert(/^[A-Z0-9-]{4,}$/.test(code), `device code ${JSON.stringify(code)}`);
        assert(new URL(uri).origin === new URL(sandbox.SANDBOX_DEVICE_URL).origin, `verification address ${uri}`);
        assert(!uri.includes(code) && !uri.includes(code.replace(/-/g, "")), `the address shown does not carry the code: ${uri}`);
        const waiting = await s.text('[data-testid="step-waiting"]');
        assert(waiting.includes("Waiting for sign-in on the other device"), `step text ${waiting}`);
        assert((await s.attr('[data-testid="step-waiting"]', "data-state")) === "active", "waiting is the active step");
        await s.screenshot(path.join(shots, "device.png"));
        // The app opened nothing on this machine: its $BROWSER wrote no line.
        await sleep(500);
        const opened = existsSync(appBrowserLog("flows")) ? readFileSync(appBrowserLog("flows"), "utf8").trim() : "";
        assert(opened === "", `the app opened a page itself: ${opened}`);
        // The admin's second device: the plain verification address, and the code read from the window.
        const deviceLog = path.join(work, "second-device.log");
        const r = spawnSync(sandbox.SANDBOX_BROWSER, [uri], {
          env: { ...process.env, SANDBOX_LOGIN_USER: "alice@sandbox.test", SANDBOX_LOGIN_PASSWORD: "alice-password", SANDBOX_DEVICE_CODE: code, SANDBOX_BROWSER_LOG: deviceLog },
          stdio: "ignore",
        });
        assert(r.status === 0, `the scripted browser did not start (${r.status ?? r.error})`);
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "verified", "Verified", 90000);
        const msg = await s.text('[data-testid="last-message"]');
        assert(/3 messages/.test(msg), `last message ${msg}`);
        const line = readFileSync(deviceLog, "utf8");
        assert(/steps=\S*device_code/.test(line) && /result=device_done/.test(line), `second device: ${line}`);
      });

      const secret = JSON.parse(readFileSync(path.join(sandbox.SANDBOX_STATE_DIR, "idp.json"), "utf8")).appClient?.secret;
      const appOnly = { flow: "client_credentials", clientId: sandbox.SANDBOX_APP_CLIENT_ID };
      await scenario("app-only: no secret -> store-the-secret hint; secret stored in the window -> alice Failed with the Exchange fix; bob POP3 -> Verified with 2 messages", async () => {
        assert(secret, "idp.json has .appClient.secret");
        await s.click('[data-testid="back"]');
        await fillSandboxMailbox(s, "alice-app", appOnly);
        const legend = await s.text('[data-testid="secret-legend"]');
        assert(legend.includes("required for app-only"), `secret legend ${legend}`);
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "failed", "Failed without a secret", 30000);
        const noSecret = await s.text('[data-testid="last-hint"]');
        assert(/store the client secret/i.test(noSecret), `hint without a secret: ${noSecret}`);
        assert((await s.attr('[data-testid="hint-edit-field"]', "data-field")) === "client_secret", "the fix edits the client secret");

        // The secret is typed into the window and goes only to the keyring (set_client_secret).
        await s.type("#field-client_secret", secret);
        await s.set("#field-client_secret_expires", "2099-12-31");
        await s.click('[data-testid="store-secret"]');
        await s.waitFor(async () => (await s.script("return [...document.querySelectorAll('[data-testid=toast]')].map(t => t.innerText).join('|')")).includes("Client secret stored in the OS keyring"), "the stored toast");
        assert((await s.script("return document.querySelector('#field-client_secret').value")) === "", "the secret field is emptied");

        await s.click('[data-testid="authenticate"]');
        const fix = await s.waitFor(async () => {
          const h = await s.text('[data-testid="last-hint"]').catch(() => "");
          return h.includes("Add-MailboxPermission") && h;
        }, "the app-only fix", 60000);
        assert((await status(s, '[data-testid="status-badge"]')) === "failed", "alice-app Failed");
        assert(/service principal/i.test(fix) && fix.includes("New-ServicePrincipal"), `app-only fix ${fix}`);
        const words = await s.text('[data-testid="server-words"]');
        assert(/AUTHENTICATIONFAILED/.test(words), `server words ${words}`);
        assert((await s.attr('[data-testid="hint-exchange-script"]', "data-fix")) === "exchange_script", "the Exchange fix from the record's typed fix");
        const held = holdersOf(secret, [app.home], [app.log]);
        assert(held.length === 0, `the client secret is in ${held.join(", ")}`);

        await s.click('[data-testid="back"]');
        await fillSandboxMailbox(s, "bob-app", { ...appOnly, email: "bob@sandbox.test", protocol: "pop3" });
        await s.click('[data-testid="save"]');
        await s.waitFor(async () => (await s.attr("#field-name", "readonly")) !== null, "bob-app saved");
        // Authenticate with the secret typed but not stored: it is stored first.
        await s.type("#field-client_secret", secret);
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await s.script("return document.querySelector('#field-client_secret').value")) === "", "the typed secret stored");
        await s.waitFor(async () => ["verified", "failed"].includes(await status(s, '[data-testid="status-badge"]')), "a result for bob-app", 60000);
        const bob = await s.text('[data-testid="last-message"]');
        assert((await status(s, '[data-testid="status-badge"]')) === "verified" && /2 messages/.test(bob),
          `bob-app (granted in SANDBOX_APP_GRANTS=${JSON.stringify(sandbox.SANDBOX_APP_GRANTS)}): ${bob}`);
      });

      await scenario("Exchange script: for the selected app-only mailboxes; a bad Object ID is named at its field, a good one gives New-ServicePrincipal and one Add-MailboxPermission each", async () => {
        await s.click('[data-testid="nav-board"]');
        await s.waitFor(() => s.find('[data-testid="row-bob-app"]'), "the board");
        assert((await s.attr('[data-testid="exchange-script-selected"]', "disabled")) !== null, "no selection: the button is disabled");
        for (const n of ["alice-app", "bob-app", "alice-device"]) await s.click(`[data-testid="select-${n}"]`);
        await s.click('[data-testid="exchange-script-selected"]');
        await s.waitFor(() => s.find('[data-testid="exchange-dialog"]'), "the Exchange script dialog");
        const listed = await s.text('[data-testid="exchange-mailboxes"]');
        assert(listed.includes("alice-app") && listed.includes("bob-app") && !listed.includes("alice-device"), `mailboxes ${listed}`);
        assert((await s.text('[data-testid="exchange-skipped"]')).includes("alice-device"), "the device mailbox is left out, and says so");
        assert((await s.script("return document.querySelector('#field-exchange-display_name').value")) === "Mailbox Auth", "default display name");
        const help = await s.text("#help-exchange-object_id");
        assert(help.includes("Enterprise applications") && help.includes("Object ID"), `object id help ${help}`);
        assert((await s.script("return document.activeElement?.id")) === "field-exchange-object_id", "the Object ID field has the focus");

        await s.type("#field-exchange-object_id", "not-a-guid");
        await s.click('[data-testid="exchange-generate"]');
        const bad = await s.waitFor(() => s.text('[data-testid="error-exchange-object_id"]'), "the object_id field error");
        assert(/GUID/.test(bad), `object_id error ${bad}`);
        assert((await s.attr("#field-exchange-object_id", "aria-invalid")) === "true", "the Object ID input is marked invalid");
        assert((await s.findAll('[data-testid="exchange-script-text"]')).length === 0, "no script for a bad Object ID");

        // Keyboard: Enter in the field generates.
        await s.type("#field-exchange-object_id", GUID);
        await keys(s, "\uE007");
        const script = await s.waitFor(() => scriptText(s), "the script");
        const id = GUID.toLowerCase();
        assert(script.includes(`New-ServicePrincipal -AppId '${sandbox.SANDBOX_APP_CLIENT_ID}' -ObjectId '${id}' -DisplayName 'Mailbox Auth'`), `script:\n${script}`);
        const perms = script.split("\n").filter((l) => l.startsWith("Add-MailboxPermission"));
        assert(perms.length === 2 && perms.some((l) => l.includes("'alice@sandbox.test'")) && perms.some((l) => l.includes("'bob@sandbox.test'")),
          `Add-MailboxPermission lines: ${perms.join(" | ")}`);
        assert((await s.findAll('[data-testid="error-exchange-object_id"]')).length === 0, "the field error is gone");
        await s.find('[data-testid="exchange-copy"]');
        await s.script("document.querySelectorAll('[data-testid=toast] button.close').forEach((b) => b.click())");
        await s.screenshot(path.join(shots, "exchange-script.png"));
        await keys(s, "\uE00C"); // Escape closes
        await s.waitFor(async () => (await s.findAll('[data-testid="exchange-dialog"]')).length === 0, "the dialog to close");

        // From the red app-only mailbox's fix: the script for that mailbox alone.
        await s.click('[data-testid="open-alice-app"]');
        await s.click('[data-testid="hint-exchange-script"]');
        await s.waitFor(() => s.find('[data-testid="exchange-dialog"]'), "the dialog from the editor");
        await s.type("#field-exchange-object_id", GUID);
        await s.click('[data-testid="exchange-generate"]');
        const one = await s.waitFor(() => scriptText(s), "the one-mailbox script");
        const onePerms = one.split("\n").filter((l) => l.startsWith("Add-MailboxPermission"));
        assert(onePerms.length === 1 && onePerms[0].includes("'alice@sandbox.test'"), `one mailbox: ${onePerms.join(" | ")} in:\n${one}`);
        await s.click('[data-testid="exchange-close"]');
        await s.waitFor(async () => (await s.findAll('[data-testid="exchange-dialog"]')).length === 0, "the dialog to close");
      });

      await scenario("the client secret is in no file of MAILBOX_AUTH_HOME and not in the app's log", async () => {
        assert(secret, "idp.json has .appClient.secret");
        const files = filesUnder(app.home);
        assert(files.length > 0, "the data directory has files");
        const held = holdersOf(secret, [app.home], [app.log]);
        assert(held.length === 0, `the client secret is in ${held.join(", ")}`);
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
        // The refused row shows what line 7 says, from the core's cells (the window parses no CSV).
        assert((await s.attr('tr[data-line="7"]', "data-ok")) === "false", "line 7 is refused");
        const typed = await s.text('[data-testid="row-email-7"]');
        assert(typed === "not-an-address", `line 7's email cell: ${typed}`);
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

      await scenario("bulk: re-import with a changed token URL previews the update and the sign-out, then signs out", async () => {
        await s.click('[data-testid="nav-bulk"]');
        await s.waitFor(() => s.find("#csv-text"), "the CSV box");
        const moved = rows[0].replace(`,${iss.SANDBOX_TOKEN_URL},`, ",http://127.0.0.1:9/token,");
        assert(moved !== rows[0], "token URL replaced");
        await s.set("#csv-text", [csv.split("\n")[0], moved, rows[1]].join("\n"));
        await s.click('[data-testid="preview"]');
        await s.waitFor(() => s.find('[data-testid="preview-table"]'), "the preview table");
        const a2 = await s.attr('tr[data-line="2"]', "data-action");
        const o2 = await s.attr('tr[data-line="2"]', "data-signs-out");
        const a3 = await s.attr('tr[data-line="3"]', "data-action");
        assert(a2 === "update" && o2 === "true" && a3 === "unchanged", `actions ${a2}/${o2}/${a3}`);
        const what = await s.text('[data-testid="row-action-2"]');
        assert(what.includes("token_url") && what.includes("Signs out"), `row 2 says ${what}`);
        const signouts = await s.attr('[data-testid="preview-updates"]', "data-signouts");
        assert(signouts === "1", `summary sign-outs ${signouts}`);
        await s.click('[data-testid="import"]');
        const out = await s.waitFor(() => s.text('[data-testid="signed-out"]'), "the signed-out list");
        assert(out.includes("desk-01") && !out.includes("desk-02"), `signed out: ${out}`);
      });
    });
    await withApp("smtp", display, async (s) => {
      await scenario("SMTP presets come from the core: Google smtp.gmail.com 465 TLS, Microsoft smtp.office365.com 587 STARTTLS", async () => {
        await s.click('[data-testid="empty-add"]');
        await s.waitFor(() => s.find('[data-testid="smtp-section"]'), "the Outgoing mail (SMTP) section");
        const smtpValues = () => s.script("return ['smtp_host', 'smtp_port', 'smtp_security'].map((f) => document.querySelector('#field-' + f).value).join(' ')");
        await s.set("#field-provider", "google");
        await sleep(300);
        await clickInView(s, '[data-testid="smtp-preset"]');
        await s.waitFor(async () => (await smtpValues()) === "smtp.gmail.com 465 tls", "Google's SMTP preset");
        await s.set("#field-smtp_security", "starttls");
        await s.waitFor(async () => (await smtpValues()) === "smtp.gmail.com 587 starttls", "the port to follow the security");
        await s.set("#field-provider", "microsoft");
        await sleep(300);
        await clickInView(s, '[data-testid="smtp-preset"]');
        await s.waitFor(async () => (await smtpValues()) === "smtp.office365.com 587 starttls", "Microsoft's SMTP preset");
        await s.set("#field-smtp_port", "eighty");
        await s.click('[data-testid="save"]');
        const err = await s.waitFor(() => s.text('[data-testid="error-smtp_port"]'), "the SMTP port error next to its input");
        assert(err.includes("between 1 and 65535"), `smtp_port error ${err}`);
        assert((await s.attr("#field-smtp_port", "aria-invalid")) === "true", "the SMTP port input is marked invalid");
        await s.click('[data-testid="back"]');
      });

      // Nothing listens on this port: the connection is refused, as a wrong SMTP port would be.
      const closedPort = String(await freePort());
      await scenario("a refused SMTP server turns the mailbox red with the SMTP hint while IMAP stays fine; the right port -> Verify checks both, Verified", async () => {
        await fillSandboxMailbox(s, "alice-out");
        await s.type("#field-smtp_host", sandbox.SANDBOX_MAIL_HOST);
        await s.set("#field-smtp_security", "starttls");
        await sleep(300); // the preset port for the security
        await s.set("#field-smtp_port", closedPort);
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "failed", "Failed by SMTP", 90000);
        const msg = await s.text('[data-testid="last-message"]');
        assert(msg.includes("SMTP") && msg.includes(closedPort), `the deciding message names the SMTP server: ${msg}`);
        const hint = await s.text('[data-testid="last-hint"]');
        assert(/check the port/i.test(hint), `SMTP hint ${hint}`);
        // The core's fix for a refused SMTP server is the SMTP port, not the IMAP one.
        assert((await s.attr('[data-testid="hint-edit-field"]', "data-field")) === "smtp_port", "the fix edits the SMTP port");
        await s.click('[data-testid="hint-edit-field"]');
        await s.waitFor(async () => (await s.script("return document.activeElement?.id")) === "field-smtp_port", "the focus on the SMTP port");
        assert((await s.attr('[data-testid="check-incoming"]', "data-ok")) === "true", "IMAP stays fine");
        assert(/3 messages/.test(await s.text('[data-testid="check-incoming"]')), "the IMAP line says what it opened");
        assert((await s.attr('[data-testid="check-smtp"]', "data-ok")) === "false", "the SMTP line is red");
        await s.click('[data-testid="back"]');
        await s.waitFor(async () => (await status(s, '[data-testid="row-alice-out"]')) === "failed", "the board row to be Failed");
        assert((await s.attr('[data-testid="smtp-alice-out"]', "data-ok")) === "false", "the board shows the SMTP result");
        const row = await s.script("return document.querySelector('[data-testid=row-alice-out] .last').textContent");
        assert(/3 messages/.test(row) && row.includes("refused"), `the board row shows both results: ${row}`);

        // The right submission port (a new server for the token: the mailbox signs in again).
        await s.click('[data-testid="open-alice-out"]');
        // The inputs are there before the mailbox has loaded into them: wait for its port, or the
        // load would overwrite the one typed.
        await s.waitFor(async () => (await s.script("return document.querySelector('#field-smtp_port')?.value")) === closedPort, "the editor with the mailbox's SMTP port");
        await s.set("#field-smtp_port", sandbox.SANDBOX_SUBMISSION_PORT);
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "verified", "Verified with SMTP", 90000);
        assert((await s.attr('[data-testid="check-smtp"]', "data-ok")) === "true", "the SMTP line is green");
        assert(/XOAUTH2/.test(await s.text('[data-testid="check-smtp"]')), "the SMTP line names the mechanism");
        assert((await s.attr('[data-testid="check-incoming"]', "data-ok")) === "true", "IMAP still fine");

        // Verify in the window (not only the sign-in) checks the outbound server too.
        const smtpChecks = async () => (await s.findAll('[data-testid="history"] li[data-check="smtp"]')).length;
        const before = await smtpChecks();
        await s.click('[data-testid="verify"]');
        await s.waitFor(async () => (await smtpChecks()) === before + 1, "one more SMTP check in the history after Verify", 60000);
        const named = await s.text('[data-testid="history"] li[data-check="smtp"] strong');
        assert(named === "SMTP login", `the SMTP check's name from the core: ${named}`);
        assert((await status(s, '[data-testid="status-badge"]')) === "verified", "still Verified");
      });

      await scenario("Send test message… from the window: the message arrives in the sandbox sink", async () => {
        const to = `gui-${process.pid}@sandbox.test`;
        await clickInView(s, '[data-testid="send-test"]');
        await s.waitFor(() => s.find('[data-testid="send-test-dialog"]'), "the Send test message dialog");
        assert((await s.script("return document.querySelector('#field-send-test-to').value")) === "alice@sandbox.test", "the mailbox's address is offered");
        await s.type("#field-send-test-to", "not an address");
        await s.click('[data-testid="send-test-send"]');
        const bad = await s.waitFor(() => s.text('[data-testid="error-send-test-to"]'), "the recipient error");
        assert(/recipient is not an email address/.test(bad), `recipient error ${bad}`);
        await s.type("#field-send-test-to", to);
        await s.click('[data-testid="send-test-send"]');
        await s.waitFor(async () => (await s.findAll('[data-testid="send-test-dialog"]')).length === 0, "the dialog to close after sending", 60000);
        const sink = sandbox.SANDBOX_SINK_DIR;
        const arrived = await s.waitFor(() => {
          const m = filesUnder(sink).map(([, b]) => b.toString()).filter((t) => t.includes(to));
          return m.length ? m : null;
        }, `a message for ${to} in ${sink}`, 20000);
        assert(arrived.length === 1, `${arrived.length} messages for ${to}`);
        assert(arrived[0].includes("Subject: Mailbox Auth test from alice-out"), arrived[0]);
        assert(arrived[0].includes("X-Sink-From: <alice@sandbox.test>"), arrived[0]);
        const toasts = await s.script("return [...document.querySelectorAll('[data-testid=toast]')].map(t => t.innerText).join(' | ')");
        assert(toasts.includes(`Test message sent to ${to}`), `toasts: ${toasts}`);
      });
    });
    await withApp("handover", display, handoverScenarios);
    await trayGroup(display);
    await withApp("keyring", display, async (s) => {
      await scenario("a sign-in missing from the keyring: the board's banner says Sign-in missing — Authenticate again; Authenticate again from it -> Verified, banner gone", async () => {
        await fillSandboxMailbox(s, "kr-lost");
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "verified", "Verified", 90000);
        assert((await s.findAll('[data-testid="keyring-banner"]')).length === 0, "no banner while all is well");
        // The keyring loses the entry (a reset, or the data directory copied to a new machine).
        const service = `mailbox-auth-gui-${process.pid}-keyring`;
        const cleared = spawnSync("secret-tool", ["clear", "service", service, "username", "refresh_token:kr-lost"], { encoding: "utf8" });
        assert(cleared.status === 0, `secret-tool clear: ${cleared.stderr}`);
        await s.click('[data-testid="back"]');
        await s.waitFor(() => s.find('[data-testid="keyring-banner"]'), "the keyring banner");
        assert((await s.attr('[data-testid="keyring-banner"]', "data-code")) === "signin_missing", "banner code");
        const title = await s.text('[data-testid="keyring-banner-title"]');
        assert(title.includes("Sign-in missing — Authenticate again"), `banner title ${title}`);
        const item = await s.text('[data-testid="keyring-missing-kr-lost"]');
        assert(item.includes("kr-lost"), `banner item ${item}`);
        // The board reads the doctor's record of the loss when it refreshes after the banner.
        await s.waitFor(async () => (await status(s, '[data-testid="row-kr-lost"]')) === "failed", "the row red", 10000);
        await s.screenshot(path.join(shots, "keyring-banner.png"));
        await s.click('[data-testid="keyring-authenticate-again"]');
        await s.waitFor(async () => (await status(s, '[data-testid="row-kr-lost"]')) === "verified", "kr-lost Verified again", 90000);
        await s.waitFor(async () => (await s.findAll('[data-testid="keyring-banner"]')).length === 0, "the banner to go", 30000);
      });
      await scenario("Export support bundle… from the editor of a failing mailbox, the native save dialog answered at the keyboard -> a zip with README.txt and the failing transcript and none of the stored secrets", async () => {
        const service = `mailbox-auth-gui-${process.pid}-keyring`;
        await fillSandboxMailbox(s, "kr-bundle", { folder: "NoSuchFolder" });
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "failed", "Failed (wrong folder)", 90000);
        // A client secret typed into the window goes to the keyring; the bundle must not carry it.
        const typed = `bundle-secret-${process.pid}-${Date.now()}`;
        await s.type("#field-client_secret", typed);
        await clickInView(s, '[data-testid="store-secret"]');
        await s.waitFor(async () => (await s.script("return [...document.querySelectorAll('[data-testid=toast]')].map(t => t.innerText).join('|')")).includes("Client secret stored in the OS keyring"), "the stored toast");
        const stored = ["refresh_token", "client_secret"].map((kind) => {
          const r = spawnSync("secret-tool", ["lookup", "service", service, "username", `${kind}:kr-bundle`], { encoding: "utf8" });
          assert(r.status === 0 && r.stdout.trim(), `secret-tool lookup ${kind}:kr-bundle: ${r.stderr}`);
          return [kind, r.stdout.replace(/\n$/, "")];
        });
        assert(stored[1][1] === typed, "the keyring holds the typed client secret");
        const zip = path.join(mkdtempSync(path.join(work, "bundle.")), "kr-bundle-support.zip");
        await clickInView(s, '[data-testid="support-bundle"]');
        await answerFileDialog(display, "Save File", zip);
        await s.waitFor(async () => (await s.script("return [...document.querySelectorAll('[data-testid=toast]')].map(t => t.innerText).join('|')")).includes(`Support bundle of kr-bundle written to ${zip}`), "the written toast", 30000);
        assert(existsSync(zip), `${zip} exists`);
        const entries = zipEntries(zip);
        const names = Object.keys(entries);
        log("support bundle:", names.join(", "));
        assert(entries["README.txt"]?.length > 0, `README.txt in ${names.join(", ")}`);
        const transcript = names.find((n) => /^mailboxes\/\d+-kr-bundle\/transcript-imap\.txt$/.test(n));
        assert(transcript, `the IMAP transcript of kr-bundle in ${names.join(", ")}`);
        assert(entries[transcript].includes("NoSuchFolder"), `the transcript shows the failing SELECT: ${entries[transcript].slice(0, 400)}`);
        const raw = readFileSync(zip).toString("latin1");
        for (const [kind, value] of stored) {
          for (const form of [value, Buffer.from(value).toString("base64")]) {
            assert(!raw.includes(form), `the zip file holds the stored ${kind}`);
            const held = names.filter((n) => entries[n].includes(form));
            assert(held.length === 0, `the stored ${kind} is in ${held.join(", ")}`);
          }
        }
      });
    });
    await damagedDatabaseAtStart(display);
    await boardReadyLine(display);
    await manyRowsAtStart(display);
  } finally {
    stop(x);
  }
}

/** Certificate credentials and the hand-over dialog. The certificate is made with the CLI on the
 *  same data directory and keyring (what the window's "Make certificate…" calls); the hand-over's
 *  Export… and Import file… go through the native file dialogs, answered at the keyboard
 *  (`answerFileDialog`). */
async function handoverScenarios(s, { home, display }) {
  const cli = path.join(path.dirname(bin), "mailbox-auth");
  const cliEnv = { ...process.env, MAILBOX_AUTH_HOME: home, MAILBOX_AUTH_KEYRING_SERVICE: `mailbox-auth-gui-${process.pid}-handover` };
  await scenario("an app-only mailbox with a certificate shows its thumbprint and signs in with it in the window (amber: it ends within 30 days)", async () => {
    await fillSandboxMailbox(s, "cert-bob", { email: "bob@sandbox.test", clientId: sandbox.SANDBOX_CERT_APP_CLIENT_ID, flow: "client_credentials" });
    await s.click('[data-testid="save"]');
    await s.waitFor(() => s.find('[data-testid="app-cert"]'), "the certificate part of a saved app-only mailbox");
    assert((await s.findAll('[data-testid="app-cert-current"]')).length === 0, "no certificate yet");
    const cer = path.join(home, "cert-bob.cer");
    const made = spawnSync(cli, ["app-cert", "create", "cert-bob", "--days", "20", "-o", cer, "--json"], { env: cliEnv, encoding: "utf8" });
    assert(made.status === 0, `app-cert create: ${made.stderr}`);
    const thumbprint = JSON.parse(made.stdout).certificate.thumbprint;
    const up = await fetch(`${sandbox.SANDBOX_ISSUER}/sandbox/app-cert`, { method: "POST", body: readFileSync(cer) });
    assert(up.ok, `upload: ${up.status}`);
    await s.click('[data-testid="back"]');
    await s.click('[data-testid="open-cert-bob"]');
    const shown = await s.waitFor(() => s.text('[data-testid="app-cert-thumbprint"]'), "the stored certificate's thumbprint");
    assert(shown === thumbprint, `thumbprint ${shown} vs ${thumbprint}`);
    await s.click('[data-testid="authenticate"]');
    // The sign-in with the certificate, then a real IMAP login with its token, both green.
    const hist = await s.waitFor(async () => {
      const t = await s.text('[data-testid="history"]');
      return t.includes("App-only token obtained with the certificate") && t.includes("INBOX opened read-only") ? t : null;
    }, "the sign-in and the IMAP login in the history", 90000);
    assert((await s.findAll('[data-testid="history"] li.bad, [data-testid="history"] [data-ok="false"]')).length === 0, `no failed check: ${hist}`);
    assert((await status(s, '[data-testid="status-badge"]')) === "needs_attention", "green check, amber badge: the certificate ends within 30 days");
  });
  await s.click('[data-testid="nav-board"]').catch(() => {});

  await scenario("the hand-over dialog refuses a short or mistyped passphrase before asking for a file", async () => {
    await s.click('[data-testid="handover"]');
    await s.waitFor(() => s.find('[data-testid="handover-dialog"]'), "the hand-over dialog");
    await s.type("#field-handover-passphrase", "short");
    await s.type("#field-handover-again", "short");
    await s.click('[data-testid="handover-export"]');
    const short = await s.waitFor(() => s.text('[data-testid="error-handover"]'), "the passphrase error from the core");
    assert(short.includes("at least 12 characters"), `error: ${short}`);
    await s.type("#field-handover-passphrase", "a long enough passphrase");
    await s.type("#field-handover-again", "another long passphrase");
    await s.click('[data-testid="handover-export"]');
    await s.waitFor(async () => (await s.text('[data-testid="error-handover"]')).includes("differ"), "the mismatch error");
    await s.script("document.querySelector('[data-testid=handover-dialog]').dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }))");
    await s.waitFor(async () => (await s.findAll('[data-testid="handover-dialog"]')).length === 0, "the dialog to close");
  });

  await scenario("hand-over Export… from the window, the native save dialog answered at the keyboard -> an age file that `mailbox-auth import` opens with the passphrase into another data directory, the certificate with it; Import file… through the native open dialog refuses a wrong passphrase and replaces the mailbox with the right one", async () => {
    const pass = "a long enough passphrase for the move";
    await s.click('[data-testid="handover"]');
    await s.waitFor(() => s.find('[data-testid="handover-dialog"]'), "the hand-over dialog");
    await s.type("#field-handover-passphrase", pass);
    await s.type("#field-handover-again", pass);
    const file = path.join(mkdtempSync(path.join(work, "handover.")), "mailboxes.age");
    await s.click('[data-testid="handover-export"]');
    await answerFileDialog(display, "Save File", file);
    await s.waitFor(async () => (await s.script("return [...document.querySelectorAll('[data-testid=toast]')].map(t => t.innerText).join('|')")).includes(`Hand-over written to ${file}`), "the written toast", 30000);
    await s.waitFor(async () => (await s.findAll('[data-testid="handover-dialog"]')).length === 0, "the dialog to close after the export");
    assert(existsSync(file), `${file} exists`);
    const bytes = readFileSync(file);
    assert(bytes.subarray(0, 21).toString() === "age-encryption.org/v1", "an age file");
    assert((statSync(file).mode & 0o077) === 0, `written 0600, not ${(statSync(file).mode & 0o777).toString(8)}`);
    const secretOf = (service, kind) => spawnSync("secret-tool", ["lookup", "service", service, "username", `${kind}:cert-bob`], { encoding: "utf8" }).stdout;
    const key = secretOf(cliEnv.MAILBOX_AUTH_KEYRING_SERVICE, "client_certificate");
    assert(key, "cert-bob's certificate is in this app's keyring");
    assert(!bytes.toString("latin1").includes("cert-bob"), "the mailbox names are encrypted too");
    // Another machine: a fresh data directory and keyring service; the passphrase on stdin.
    const other = { ...process.env, MAILBOX_AUTH_HOME: mkdtempSync(path.join(work, "handover-other.")), MAILBOX_AUTH_KEYRING_SERVICE: `mailbox-auth-gui-${process.pid}-handover-other` };
    const wrong = spawnSync(cli, ["import", file, "--json"], { env: other, input: "not the passphrase at all\n", encoding: "utf8" });
    assert(wrong.status !== 0 && /passphrase/.test(wrong.stderr), `a wrong passphrase is refused: ${wrong.status} ${wrong.stderr}`);
    const r = spawnSync(cli, ["import", file, "--json"], { env: other, input: `${pass}\n`, encoding: "utf8" });
    assert(r.status === 0, `mailbox-auth import: ${r.stderr}`);
    const done = JSON.parse(r.stdout);
    const bob = done.find((d) => d.name === "cert-bob");
    assert(bob && bob.secrets.includes("client_certificate"), `imported: ${r.stdout}`);
    assert(secretOf(other.MAILBOX_AUTH_KEYRING_SERVICE, "client_certificate") === key, "the other keyring holds the same certificate");
    // Back in the window: Import file… through the native open dialog, a wrong passphrase first.
    await s.click('[data-testid="handover"]');
    await s.waitFor(() => s.find('[data-testid="handover-dialog"]'), "the hand-over dialog");
    await s.type("#field-handover-passphrase", "not the passphrase at all");
    await s.click('[data-testid="handover-import"]');
    await answerFileDialog(display, "Open File", file);
    const refused = await s.waitFor(() => s.text('[data-testid="error-handover"]'), "the wrong-passphrase error", 30000);
    assert(refused.includes("does not open") && refused.includes(file), `error: ${refused}`);
    await s.type("#field-handover-passphrase", pass);
    await s.click('[data-testid="handover-import"]');
    await answerFileDialog(display, "Open File", file);
    const list = await s.waitFor(() => s.text('[data-testid="handover-imported"]'), "what the import did", 30000);
    assert(/cert-bob: replaced the existing mailbox; .*client certificate/.test(list), `imported: ${list}`);
    assert(secretOf(cliEnv.MAILBOX_AUTH_KEYRING_SERVICE, "client_certificate") === key, "the certificate is the same after the import");
    await s.script("document.querySelector('[data-testid=handover-dialog]').dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }))");
    await s.waitFor(async () => (await s.findAll('[data-testid="handover-dialog"]')).length === 0, "the dialog to close");
  });
}

// --- the tray group: the monitor in the background, the tray icon, desktop notifications -----
// The app runs with a 3 s monitor interval; a real notification server (dunst) owns
// org.freedesktop.Notifications on the test's session bus; the tray is read and clicked over
// D-Bus the way a panel does (StatusNotifierItem + com.canonical.dbusmenu); "close the window" is
// the window manager's WM_DELETE_WINDOW (tests-gui/wm-close.py).
const TRAY_PATH = "/org/ayatana/NotificationItem/tray_icon_tray_app_main";
const run = (cmd, args, env = process.env) => spawnSync(cmd, args, { encoding: "utf8", timeout: 15000, env });
function gdbus(...args) {
  const r = run("gdbus", ["call", "--session", "-t", "3", ...args]);
  if (r.status !== 0) throw new Error(`gdbus ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}
const busCall = (dest, objectPath, method, ...args) => gdbus("--dest", dest, "--object-path", objectPath, "--method", method, "--", ...args);

/** The pid of the desktop app whose MAILBOX_AUTH_HOME is `home`, or null when none runs. */
function appPid(home) {
  for (const d of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
    try {
      if (!readlinkSync(`/proc/${d}/exe`).includes("mailbox-auth-desktop")) continue;
      if (readFileSync(`/proc/${d}/environ`, "utf8").split("\0").includes(`MAILBOX_AUTH_HOME=${home}`)) return Number(d);
    } catch {}
  }
  return null;
}

/** The bus name under which process `pid` exports its tray item (StatusNotifierItem). */
function trayOwner(pid) {
  const names = busCall("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames").match(/':1\.\d+'/g) ?? [];
  for (const n of names.map((q) => q.slice(1, -1))) {
    try {
      const p = Number(busCall("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.GetConnectionUnixProcessID", n).match(/\d+/g).pop());
      if (p !== pid) continue;
      busCall(n, TRAY_PATH, "org.freedesktop.DBus.Properties.Get", "org.kde.StatusNotifierItem", "IconName");
      return n;
    } catch {}
  }
  return null;
}
const trayProp = (owner, prop) => busCall(owner, TRAY_PATH, "org.freedesktop.DBus.Properties.Get", "org.kde.StatusNotifierItem", prop);

const TRAY_COLOURS = { idle: [0x8a, 0x8f, 0x98], ok: [0x1e, 0x9e, 0x4a], warn: [0xe0, 0x9b, 0x12], bad: [0xd4, 0x2a, 0x2a] };
/** The state the tray icon shows, from the colour of the PNG the panel is given (ImageMagick). */
function trayColour(owner) {
  const file = trayProp(owner, "IconName").match(/'([^']*)'/)[1];
  const r = run("convert", [file, "-format", "%[pixel:p{16,26}]", "info:"]);
  const rgb = (r.stdout.match(/\d+(\.\d+)?/g) ?? []).slice(0, 3).map(Number);
  const near = Object.entries(TRAY_COLOURS).find(([, c]) => c.every((v, i) => Math.abs(v - rgb[i]) <= 3));
  return near ? near[0] : `rgb(${rgb.join(",")}) from ${file}`;
}

/** The tray menu's items: id, label, toggle state. */
function trayMenu(owner) {
  const menuPath = trayProp(owner, "Menu").match(/'([^']*)'/)[1];
  const layout = busCall(owner, menuPath, "com.canonical.dbusmenu.GetLayout", "0", "-1", "@as []");
  const items = [...layout.matchAll(/\((\d+), \{([^}]*)\}/g)].map(([, id, props]) => ({
    id: Number(id),
    label: props.match(/'label': <'([^']*)'>/)?.[1] ?? "",
    toggle: props.match(/'toggle-state': <(-?\d+)>/)?.[1],
  }));
  return { menuPath, items: items.filter((i) => i.label) };
}
/** Clicks the tray menu item labelled `label`, as a panel does. */
function trayClick(owner, label) {
  const { menuPath, items } = trayMenu(owner);
  const item = items.find((i) => i.label === label);
  if (!item) throw new Error(`no tray menu item "${label}" in ${items.map((i) => i.label).join(", ")}`);
  busCall(owner, menuPath, "com.canonical.dbusmenu.Event", String(item.id), "clicked", "<int32 0>", "0");
}

/** Whether the main window is mapped (shown) on the X display. */
function windowShown(display) {
  const r = run("xwininfo", ["-name", "Mailbox Auth"], { ...process.env, DISPLAY: display });
  return /Map State:\s+IsViewable/.test(r.stdout);
}

/** Every notification the server received so far: each shown one is closed into its history. */
function notificationsReceived() {
  run("dunstctl", ["close-all"]);
  const r = run("dunstctl", ["history"]);
  const j = JSON.parse(r.stdout || "{}");
  return (j.data?.[0] ?? []).map((n) => ({ summary: n.summary?.data ?? "", body: n.body?.data ?? "", id: n.id?.data })).reverse();
}

/** A TCP relay in front of a sandbox port that the test switches off (new connections closed at
 *  once, open ones cut: a server gone down) and on again. */
function relay(upstreamPort) {
  let on = true;
  const open = new Set();
  const srv = net.createServer((c) => {
    if (!on) return c.destroy();
    const u = net.connect(Number(upstreamPort), "127.0.0.1");
    const end = () => (c.destroy(), u.destroy(), open.delete(end));
    open.add(end);
    c.pipe(u);
    u.pipe(c);
    for (const x of [c, u]) x.on("error", end).on("close", end);
  });
  return new Promise((resolve) =>
    srv.listen(0, "127.0.0.1", () =>
      resolve({
        port: srv.address().port,
        set(v) {
          on = v;
          if (!v) for (const end of [...open]) end();
        },
        close: () => srv.close(),
      }),
    ),
  );
}

async function trayGroup(display) {
  const only = (process.env.TESTS_GUI_ONLY ?? "").split(",").filter(Boolean);
  if (only.length && !only.includes("tray")) return log("skipping group", "tray");
  // The notification server, on this run's session bus and display.
  const dunstrc = path.join(work, "dunstrc");
  writeFileSync(dunstrc, "[global]\n    idle_threshold = 0\n");
  const dunst = start("dunst", ["-config", dunstrc], { ...process.env, DISPLAY: display }, "dunst");
  const fakeHome = mkdtempSync(path.join(work, "tray-user-home."));
  const pop3 = await relay(sandbox.SANDBOX_POP3S_PORT);
  const secret = JSON.parse(readFileSync(path.join(sandbox.SANDBOX_STATE_DIR, "idp.json"), "utf8")).appClient?.secret;
  const autostartFile = path.join(fakeHome, ".config", "autostart", "Mailbox Auth.desktop");
  try {
    await sleep(500);
    await withApp("tray", display, async (s, app) => {
      const pid = appPid(app.home);
      let owner = null;
      const forBob = () => notificationsReceived().filter((n) => `${n.summary} ${n.body}`.includes("bob-app"));

      await scenario("tray: the app shows a tray icon with Open, Check all now, Pause monitoring, Start at login, Quit; green once a mailbox is verified", async () => {
        assert(pid, "the app's process");
        owner = await s.waitFor(() => trayOwner(pid), "the tray item on the session bus", 20000);
        const labels = trayMenu(owner).items.map((i) => i.label);
        assert(JSON.stringify(labels) === JSON.stringify(["Open", "Check all now", "Pause monitoring", "Start at login", "Quit"]), `tray menu ${labels}`);
        assert(trayColour(owner) === "idle", `nothing monitored yet: ${trayColour(owner)}`);
        // Paused while the mailbox is set up: a pass between its sign-in and its first check would
        // see it amber ("signed in, not checked yet") and alert its first green as a recovery.
        await s.click('[data-testid="monitor-pause"]');
        await s.waitFor(async () => (await s.attr('[data-testid="monitor-panel"]', "data-paused")) === "true", "monitoring paused");
        await fillSandboxMailbox(s, "bob-app", { flow: "client_credentials", clientId: sandbox.SANDBOX_APP_CLIENT_ID, email: "bob@sandbox.test", protocol: "pop3" });
        await s.set("#field-port", String(pop3.port));
        await s.type("#field-client_secret", secret);
        await s.click('[data-testid="authenticate"]');
        await s.waitFor(async () => (await status(s, '[data-testid="status-badge"]')) === "verified", "bob-app Verified", 60000);
        await s.click('[data-testid="monitor-pause"]');
        await s.waitFor(() => trayColour(owner) === "ok", "the tray icon to turn green", 20000);
        const panel = await s.waitFor(async () => (await s.text('[data-testid="monitor-status"]')) === "All verified" && s.text('[data-testid="monitor-schedule"]'), "the monitoring panel");
        assert(panel.includes("Checks every 3 s"), `panel ${panel}`);
      });

      await scenario("closing the window keeps the process, the tray and the monitor: a mail server going down makes exactly one notification naming the mailbox, its return one recovery", async () => {
        assert(windowShown(display), "the window is shown before closing");
        const r = run("python3", [path.join(root, "tests-gui", "wm-close.py"), "Mailbox Auth"], { ...process.env, DISPLAY: display });
        assert(r.status === 0, `wm-close: ${r.stdout}${r.stderr}`);
        await s.waitFor(() => !windowShown(display), "the window to be hidden", 10000);
        await sleep(1000);
        assert(appPid(app.home) === pid, "the process is still running");
        assert(trayOwner(pid) === owner, "the tray item is still there");
        assert(forBob().length === 0, `no notification yet: ${JSON.stringify(forBob())}`);

        pop3.set(false);
        const down = await s.waitFor(() => { const n = forBob(); return n.length ? n : null; }, "a notification for bob-app", 30000);
        await s.waitFor(() => trayColour(owner) === "bad", "the tray icon to turn red", 15000);
        // Several more passes (3 s apart) while it stays down: still one notification.
        await sleep(10000);
        const stillDown = forBob();
        assert(stillDown.length === 1, `one notification while down, got ${JSON.stringify(stillDown)}`);
        assert(down[0].summary === "Mailbox Auth: bob-app failed", `summary ${down[0].summary}`);
        assert(down[0].body.includes("bob-app: Verified → Failed"), `body ${down[0].body}`);
        assert(!windowShown(display) && appPid(app.home) === pid, "the window stayed hidden, the process alive");

        pop3.set(true);
        await s.waitFor(() => forBob().length >= 2, "a recovery notification", 30000);
        await s.waitFor(() => trayColour(owner) === "ok", "the tray icon to turn green again", 15000);
        await sleep(8000);
        const all = forBob();
        assert(all.length === 2, `exactly two notifications (failed, recovered): ${JSON.stringify(all)}`);
        assert(all[1].summary === "Mailbox Auth: bob-app recovered", `recovery summary ${all[1].summary}`);
        assert(notificationsReceived().length === 2, `no other notification: ${JSON.stringify(notificationsReceived())}`);
      });

      await scenario("tray menu: Open shows the window again; Pause turns the icon grey and the window says paused; Resume", async () => {
        trayClick(owner, "Open");
        await s.waitFor(() => windowShown(display), "the window to show again", 10000);
        await s.waitFor(async () => (await s.attr('[data-testid="row-bob-app"], [data-testid="status-badge"]', "data-status")) === "verified", "bob-app Verified in the window");
        trayClick(owner, "Pause monitoring");
        await s.waitFor(async () => (await s.attr('[data-testid="monitor-panel"]', "data-paused")) === "true", "the window to say paused", 10000);
        assert((await s.text('[data-testid="monitor-status"]')) === "Monitoring paused", "paused words");
        await s.waitFor(() => trayColour(owner) === "idle", "a grey tray icon while paused", 10000);
        await s.waitFor(() => trayMenu(owner).items.some((i) => i.label === "Resume monitoring"), "the menu to offer Resume");
        await s.click('[data-testid="monitor-pause"]');
        await s.waitFor(async () => (await s.attr('[data-testid="monitor-panel"]', "data-paused")) === "false", "monitoring resumed", 10000);
        await s.waitFor(() => trayMenu(owner).items.some((i) => i.label === "Pause monitoring"), "the menu to offer Pause again");
        await s.waitFor(() => trayColour(owner) === "ok", "green again after Resume", 15000);
      });

      await scenario("start at login: from the window writes the XDG autostart entry (started hidden), the tray shows it ticked and turns it off", async () => {
        assert(!existsSync(autostartFile), "no autostart entry at first");
        await s.click('[data-testid="start-at-login"]');
        await s.waitFor(() => existsSync(autostartFile), autostartFile, 10000);
        const entry = readFileSync(autostartFile, "utf8");
        assert(/^Exec=.*mailbox-auth-desktop --hidden\s*$/m.test(entry), `autostart entry:\n${entry}`);
        await s.waitFor(() => trayMenu(owner).items.find((i) => i.label === "Start at login")?.toggle === "1", "the tray item ticked", 10000);
        trayClick(owner, "Start at login");
        await s.waitFor(() => !existsSync(autostartFile), "the entry removed from the tray", 10000);
        await s.waitFor(async () => (await s.script("return document.querySelector('[data-testid=start-at-login]').checked")) === false, "the window's checkbox unticked", 10000);
      });

      await scenario("editor: uptime over 7 and 30 days below 100 % after the outage, and the transitions up, down, up with the failure's words", async () => {
        await s.click('[data-testid="nav-board"]');
        await s.click('[data-testid="open-bob-app"]');
        // Both read in one call, from one render: the card refreshes (a monitor pass, the clock), and
        // an ongoing state's share moves with the time each figure was computed at.
        const [u7, u30] = await s.waitFor(async () => {
          const both = await s.script("return ['uptime-7', 'uptime-30'].map((id) => document.querySelector(`[data-testid=${id}]`).innerText.trim())");
          return both[0] !== "—" && both;
        }, "the 7-day uptime");
        const pct = parseFloat(u7);
        assert(pct > 0 && pct < 100 && /^\d+(\.\d)? %$/.test(u7), `7-day uptime ${u7}`);
        assert(u30 === u7, `30 days (${u30}) = 7 days (${u7}): everything known is within both`);
        const seq = await s.script("return [...document.querySelectorAll('[data-testid=transitions] li')].map(li => li.dataset.to)");
        assert(JSON.stringify(seq) === JSON.stringify(["up", "down", "up"]), `transitions newest first: ${seq}`);
        const downWords = await s.script("return document.querySelector('[data-testid=transitions] li[data-to=down] .msg')?.textContent ?? ''");
        const failed = await s.script("return [...document.querySelectorAll('[data-testid=history] li[data-ok=false] .msg')].map(m => m.textContent)");
        assert(downWords && failed.includes(downWords), `the down transition says "${downWords}", the failed checks say ${JSON.stringify(failed)}`);
        await s.script("document.querySelector('.side')?.scrollTo(0, 0); document.activeElement?.blur();");
        await s.screenshot(path.join(shots, "editor-uptime.png"));
      });

      await scenario("board: sign-in countdown 'Sign-in expires in 5 days' amber for a 5-day sign-in, plain for 60 days; the tray turns amber", async () => {
        const iss = sandbox;
        const common = `generic,${iss.SANDBOX_CLIENT_ID},${iss.SANDBOX_SCOPES},${iss.SANDBOX_AUTH_URL},${iss.SANDBOX_TOKEN_URL},${iss.SANDBOX_AUTH_PARAMS},${iss.SANDBOX_CA_FILE}`;
        const csv = [
          "name,email,protocol,host,port,security,folder,provider,client_id,scopes,auth_url,token_url,auth_params,ca_file,signin_max_age_days",
          `testing-app,alice@sandbox.test,imap,${iss.SANDBOX_MAIL_HOST},${iss.SANDBOX_IMAPS_PORT},tls,INBOX,${common},5`,
          `long-lived,alice@sandbox.test,imap,${iss.SANDBOX_MAIL_HOST},${iss.SANDBOX_IMAPS_PORT},tls,INBOX,${common},60`,
        ].join("\n");
        await s.click('[data-testid="nav-bulk"]');
        await s.set("#csv-text", csv);
        await s.click('[data-testid="preview"]');
        await s.waitFor(async () => (await s.attr('[data-testid="preview-summary"]', "data-valid")) === "2", "2 valid rows");
        await s.click('[data-testid="import"]');
        await s.waitFor(() => s.text('[data-testid="import-result"]'), "the import result");
        // Paused during the sign-ins, as for bob-app above.
        await s.click('[data-testid="monitor-pause"]');
        await s.waitFor(async () => (await s.attr('[data-testid="monitor-panel"]', "data-paused")) === "true", "monitoring paused");
        await s.click('[data-testid="authenticate-all"]');
        // Both sign-ins done (one at a time): the 60-day one Verified, the 5-day one amber.
        await s.waitFor(async () => (await s.findAll("#sign-in")).length === 0 && (await s.attr('[data-testid="bulk-summary"]', "data-verified")) === "1",
          "the two sign-ins", 180000);
        await s.click('[data-testid="monitor-pause"]');
        await s.waitFor(async () => (await s.attr('[data-testid="monitor-panel"]', "data-paused")) === "false", "monitoring resumed");
        await s.click('[data-testid="nav-board"]');
        const five = await s.waitFor(() => s.text('[data-testid="countdown-testing-app"]'), "the 5-day countdown", 120000);
        assert(five === "Sign-in expires in 5 days", `countdown ${five}`);
        assert((await s.attr('[data-testid="countdown-testing-app"]', "data-tone")) === "warn", "amber within 14 days");
        await s.waitFor(async () => (await status(s, '[data-testid="badge-testing-app"]')) === "needs_attention", "the 5-day mailbox amber", 60000);
        const sixty = await s.waitFor(() => s.text('[data-testid="countdown-long-lived"]'), "the 60-day countdown", 60000);
        assert(sixty === "Sign-in expires in 60 days", `countdown ${sixty}`);
        assert((await s.attr('[data-testid="countdown-long-lived"]', "data-tone")) === "idle", "not amber 60 days ahead");
        await s.waitFor(async () => (await status(s, '[data-testid="badge-long-lived"]')) === "verified", "the 60-day mailbox Verified", 60000);
        await s.waitFor(() => trayColour(owner) === "warn", "the tray icon amber (the worst state)", 20000);
        await s.screenshot(path.join(shots, "board-monitoring.png"));
        await s.click('[data-testid="open-testing-app"]');
        const inEditor = await s.waitFor(() => s.text('[data-testid="countdown-editor"]'), "the countdown in the editor");
        assert(inEditor === "Sign-in expires in 5 days", `editor countdown ${inEditor}`);
        // Saving from the editor (which has no input for the CSV's signin_max_age_days) keeps it.
        await s.click('[data-testid="save"]');
        await s.waitFor(async () => (await s.script("return [...document.querySelectorAll('[data-testid=toast]')].map(t => t.innerText).join('|')")).includes("Saved"), "the saved toast", 10000);
        const afterSave = await s.waitFor(() => s.text('[data-testid="countdown-editor"]'), "the countdown after saving");
        assert(afterSave === "Sign-in expires in 5 days", `countdown after saving from the editor: ${afterSave}`);
        await s.click('[data-testid="back"]');
      });

      await scenario("tray Quit ends the process", async () => {
        trayClick(owner, "Quit");
        await s.waitFor(() => appPid(app.home) === null, "the process to end", 15000);
      });
    }, { MAILBOX_AUTH_MONITOR_INTERVAL: "3", HOME: fakeHome });
  } finally {
    pop3.close();
    stop(dunst);
  }
}

/** A damaged database at start: the window says which file and what to do, does not panic, and
 *  leaves the file as it was. */
async function damagedDatabaseAtStart(display) {
  const only = (process.env.TESTS_GUI_ONLY ?? "").split(",").filter(Boolean);
  if (only.length && !only.includes("start")) return log("skipping group", "start");
  await scenario("a damaged database at start: a clear error naming the file, no panic, the file kept", async () => {
    const home = mkdtempSync(path.join(work, "start-home."));
    const db = path.join(home, "mailbox-auth.sqlite3");
    const damaged = Buffer.from("this is not an SQLite database, but somebody's mailboxes\n".repeat(64));
    writeFileSync(db, damaged);
    const env = { ...process.env, DISPLAY: display, MAILBOX_AUTH_HOME: home, MAILBOX_AUTH_KEYRING_SERVICE: `mailbox-auth-gui-${process.pid}-start` };
    const app = start(bin, [], env, "start-damaged");
    try {
      let said = "";
      for (let i = 0; i < 300 && !said.includes("error:"); i++) {
        await sleep(100);
        const logFile = path.join(work, "start-damaged.log");
        said = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
        if (app.exitCode !== null) break;
      }
      assert(said.includes("error:") && said.includes(db), `the app names the damaged file: ${said}`);
      assert(!said.includes("panicked"), `no panic: ${said}`);
      // The error dialog is up (the app waits for it) or the app has ended with status 2.
      assert(app.exitCode === null || app.exitCode === 2, `exit status ${app.exitCode}`);
      assert(readFileSync(db).equals(damaged), "the damaged file is left as it was");
    } finally {
      stop(app);
    }
  });
}

/** MAILBOX_AUTH_REPORT_READY=1 (what `scripts/bench` times the cold start with): the window writes
 *  one "board ready" line once the first list is on screen, naming the rows it shows; without the
 *  variable it writes none. */
async function boardReadyLine(display) {
  const only = (process.env.TESTS_GUI_ONLY ?? "").split(",").filter(Boolean);
  if (only.length && !only.includes("start")) return log("skipping group", "start");
  await scenario("with MAILBOX_AUTH_REPORT_READY the window says once when its board is interactive, with the rows shown", async () => {
    const home = mkdtempSync(path.join(work, "ready-home."));
    const env = { ...process.env, DISPLAY: display, MAILBOX_AUTH_HOME: home, MAILBOX_AUTH_KEYRING_SERVICE: `mailbox-auth-gui-${process.pid}-ready` };
    const csv = path.join(home, "three.csv");
    writeFileSync(csv, "name,email,protocol,host,port,security,folder,provider,client_id,scopes,auth_url,token_url,ca_file\n" +
      ["r1", "r2", "r3"].map((n) => `${n},alice@sandbox.test,imap,${sandbox.SANDBOX_MAIL_HOST},${sandbox.SANDBOX_IMAPS_PORT},tls,INBOX,generic,` +
        `${sandbox.SANDBOX_CLIENT_ID},${sandbox.SANDBOX_SCOPES},${sandbox.SANDBOX_AUTH_URL},${sandbox.SANDBOX_TOKEN_URL},${sandbox.SANDBOX_CA_FILE}`).join("\n") + "\n");
    const cli = path.join(path.dirname(bin), "mailbox-auth");
    const imported = spawnSync(cli, ["import", csv], { env, encoding: "utf8" });
    assert(imported.status === 0, `mailbox-auth import: ${imported.stderr}`);
    const said = (name) => (existsSync(path.join(work, `${name}.log`)) ? readFileSync(path.join(work, `${name}.log`), "utf8") : "");
    const app = start(bin, [], { ...env, MAILBOX_AUTH_REPORT_READY: "1" }, "start-ready");
    let ms = null;
    try {
      for (let i = 0; i < 600 && ms === null; i++) {
        await sleep(100);
        const m = said("start-ready").match(/board ready: (\d+) rows, (\d+) ms after start/);
        if (m) {
          assert(m[1] === "3", `the board showed the 3 mailboxes when it said it was ready: ${m[0]}`);
          ms = Number(m[2]);
        }
        assert(app.exitCode === null, `the app ended: ${said("start-ready")}`);
      }
      assert(ms !== null, `a "board ready" line: ${said("start-ready")}`);
      await sleep(2000);
      const lines = said("start-ready").match(/board ready/g) ?? [];
      assert(lines.length === 1, `one "board ready" line, not ${lines.length}`);
    } finally {
      stop(app);
    }
    await sleep(500);
    // Without the variable: nothing, in three times as long as the line took to come.
    const quiet = start(bin, [], env, "start-quiet");
    try {
      await sleep(Math.max(5000, 3 * ms));
      assert(quiet.exitCode === null, `the app ended: ${said("start-quiet")}`);
      assert(!said("start-quiet").includes("board ready"), `no "board ready" line without MAILBOX_AUTH_REPORT_READY: ${said("start-quiet")}`);
    } finally {
      stop(quiet);
    }
  });
}

/** Many mailboxes at start: the board shows its first screenful and says it is ready, the
 *  background monitor's first pass waits for that (it reads what the board's list reads), the
 *  other rows follow while the board answers, and every row is reachable by its name. */
async function manyRowsAtStart(display) {
  const n = 400;
  const home = mkdtempSync(path.join(work, "many-home."));
  const only = (process.env.TESTS_GUI_ONLY ?? "").split(",").filter(Boolean);
  if (only.length && !only.includes("start")) return log("skipping group", "start (many rows)");
  const csv = path.join(home, "many.csv");
  const name = (i) => `many-${String(i).padStart(4, "0")}`;
  writeFileSync(csv, "name,email,protocol,host,port,security,folder,provider,client_id,scopes,auth_url,token_url,ca_file\n" +
    Array.from({ length: n }, (_, i) => `${name(i)},alice@sandbox.test,imap,${sandbox.SANDBOX_MAIL_HOST},${sandbox.SANDBOX_IMAPS_PORT},tls,INBOX,generic,` +
      `${sandbox.SANDBOX_CLIENT_ID},${sandbox.SANDBOX_SCOPES},${sandbox.SANDBOX_AUTH_URL},${sandbox.SANDBOX_TOKEN_URL},${sandbox.SANDBOX_CA_FILE}`).join("\n") + "\n");
  const cli = path.join(path.dirname(bin), "mailbox-auth");
  const keyring = `mailbox-auth-gui-${process.pid}-start`;
  const imported = spawnSync(cli, ["import", csv], { env: { ...process.env, MAILBOX_AUTH_HOME: home, MAILBOX_AUTH_KEYRING_SERVICE: keyring }, encoding: "utf8" });
  assert(imported.status === 0, `mailbox-auth import: ${imported.stderr}`);
  await withApp("start", display, async (s, app) => {
    await scenario(`with ${n} mailboxes the board is ready with its first rows, the monitor's first pass waits for it, and every row follows`, async () => {
      // The log's colours stripped.
      const said = () => (existsSync(app.log) ? readFileSync(app.log, "utf8").replace(/\x1b\[[0-9;]*m/g, "") : "");
      const ready = await s.waitFor(() => said().match(/board ready: (\d+) rows/), "the board ready line", 60000);
      const first = Number(ready[1]);
      assert(first > 0 && first < n, `the board said it was ready with its first screenful, not all ${n} rows: ${ready[0]}`);
      const pass = await s.waitFor(() => said().match(/first monitor pass.*board_shown=(\w+)/), "the monitor's first pass", 60000);
      assert(pass[1] === "true", `the monitor's first pass started once the board was shown: ${pass[0]}`);
      assert(said().indexOf("board ready") < said().indexOf("first monitor pass"), "the monitor's first pass after the board ready line");
      // Every row arrives, the table says when it is complete, and the last is found by its name.
      await s.waitFor(async () => (await s.findAll('#board tr[data-testid^="row-"]')).length === n, `all ${n} rows`, 60000);
      await s.waitFor(async () => (await s.attr('[data-testid="mailbox-table"]', "aria-busy")) === "false", "the table no longer busy");
      await s.find(`[data-testid="row-${name(n - 1)}"]`);
      // The board answers: a search narrows the rows to the one named.
      await s.type('[data-testid="search"]', name(n - 1));
      await s.waitFor(async () => (await s.findAll('#board tr[data-testid^="row-"]')).length === 1, "the search to leave one row");
    });
  }, { MAILBOX_AUTH_HOME: home, MAILBOX_AUTH_KEYRING_SERVICE: keyring, MAILBOX_AUTH_REPORT_READY: "1" });
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
