// The scripted browser behind sandbox/browser-login: opens an authorization (or device
// verification) URL in Debian's headless Chromium, signs in on the sandbox IdP's real login page,
// answers the consent page, and follows the redirect to the app's loopback listener.
//
//   node browser-login.mjs URL
//
// Environment:
//   SANDBOX_LOGIN_USER, SANDBOX_LOGIN_PASSWORD   the account to sign in with
//   SANDBOX_CONSENT      allow (default) or deny
//   SANDBOX_DEVICE_CODE  device flow: the user code to type in, when the URL does not carry it
//                        (SANDBOX_USER_CODE is accepted too)
//   SANDBOX_BROWSER_LOG  append one line per run: what happened and the final URL's host+path
//   SANDBOX_CHROMIUM     the browser binary (default /usr/bin/chromium)
//   SANDBOX_BROWSER_DEADLINE  seconds before giving up (default 55)
// Never prints or logs a code, a token or the password.

import fs from 'node:fs';

import { chromium } from 'playwright-core';

const url = process.argv[2];
const user = process.env.SANDBOX_LOGIN_USER || '';
const password = process.env.SANDBOX_LOGIN_PASSWORD || '';
const consent = (process.env.SANDBOX_CONSENT || 'allow').toLowerCase() === 'deny' ? 'deny' : 'allow';
const userCode = process.env.SANDBOX_DEVICE_CODE || process.env.SANDBOX_USER_CODE || '';
const deadlineSecs = Number(process.env.SANDBOX_BROWSER_DEADLINE || 55);
const deadline = Date.now() + deadlineSecs * 1000;
const started = Date.now();
const steps = [];

function where(u) {
  try {
    const x = new URL(u);
    return `${x.host}${x.pathname}`;
  } catch {
    return '-';
  }
}

// Error texts can quote a URL: keep its host and path only, never its query (codes, state).
function clean(text) {
  return String(text || '').split('\n')[0].replace(/(https?:\/\/[^\s?#]*)[?#]\S*/g, '$1').replace(/\s+/g, '_').slice(0, 100);
}

let reported = false;
function report(result, finalUrl) {
  if (reported) return;
  reported = true;
  const line = `${new Date().toISOString()} pid=${process.pid} user=${user || '-'} consent=${consent} result=${result}`
    + ` steps=${steps.join(',') || '-'} final=${where(finalUrl)} secs=${((Date.now() - started) / 1000).toFixed(1)}\n`;
  process.stdout.write(line);
  if (process.env.SANDBOX_BROWSER_LOG) {
    try {
      fs.appendFileSync(process.env.SANDBOX_BROWSER_LOG, line);
    } catch (e) {
      process.stderr.write(`cannot write SANDBOX_BROWSER_LOG: ${e.message}\n`);
    }
  }
}

if (!url) {
  process.stderr.write('usage: browser-login.mjs URL\n');
  process.exit(2);
}

// chromium.launch() gives every run a fresh, throw-away profile (user-data dir) of its own.
let browser;
async function finish(code) {
  try {
    await browser?.close();
  } catch { /* already gone */ }
  process.exit(code);
}

// Whatever happens, end in time.
setTimeout(() => {
  report('deadline', undefined);
  finish(3);
}, Math.max(1000, deadline - Date.now() + 2000)).unref();

const idp = new URL(url);
const onIdp = (u) => {
  try {
    return new URL(u).host === idp.host;
  } catch {
    return false;
  }
};
const left = () => Math.max(1000, deadline - Date.now());

async function visible(page, selector) {
  return (await page.locator(selector).count()) > 0;
}

// Clicks and waits until the page that follows has loaded (or the navigation failed).
async function clickAndWait(page, selector) {
  const nav = page.waitForNavigation({ waitUntil: 'load', timeout: left() }).catch((e) => e);
  await page.click(selector, { timeout: left() });
  const r = await nav;
  if (r instanceof Error) throw r;
}

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.SANDBOX_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: left(),
    // Keep Chromium off the caller's D-Bus session (tests run one with a private keyring).
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DBUS_'))),
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', '--no-default-browser-check', '--disable-default-apps',
      '--disable-extensions', '--metrics-recording-only', '--password-store=basic',
      // Straight to loopback, never through a proxy from the environment.
      '--no-proxy-server',
    ],
  });
  const context = await browser.newContext();
  // The pages stay on loopback: any request elsewhere is refused before it leaves.
  const loopback = (u) => /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/.test(u.hostname);
  await context.route((u) => !loopback(u), (route) => route.abort('blockedbyclient'));
  const page = await context.newPage();
  page.setDefaultTimeout(left());

  try {
    await page.goto(url, { waitUntil: 'load', timeout: left() });
  } catch (e) {
    report(`open_failed(${clean(e.message)})`, url);
    return finish(1);
  }

  for (let i = 0; i < 12 && Date.now() < deadline; i += 1) {
    const current = page.url();
    if (!onIdp(current)) {
      // Redirected to the app (the loopback listener): that page has loaded, we are done.
      report(new URL(current).searchParams.has('error') ? 'redirected_with_error' : 'redirected', current);
      return finish(0);
    }
    try {
      if (await visible(page, '#login-error')) {
        steps.push('login_rejected');
        report('login_failed', current);
        return finish(0);
      }
      if (await visible(page, '#login-form')) {
        steps.push('login');
        await page.fill('#email', user);
        await page.fill('#password', password);
        await clickAndWait(page, '#login-submit');
        continue;
      }
      if (await visible(page, '#consent-form')) {
        steps.push(`consent_${consent}`);
        await clickAndWait(page, consent === 'deny' ? '#consent-deny' : '#consent-allow');
        continue;
      }
      if (await visible(page, '#device-input-page')) {
        const input = page.locator('#device-code-form input[name="user_code"]');
        if (userCode && (await input.count()) > 0) await input.fill(userCode);
        if (await visible(page, '#device-error')) {
          report('device_code_rejected', current);
          return finish(0);
        }
        steps.push('device_code');
        await clickAndWait(page, '#device-continue');
        continue;
      }
      if (await visible(page, '#device-confirm-page')) {
        steps.push('device_confirm');
        await clickAndWait(page, consent === 'deny' ? '#device-abort' : '#device-confirm');
        continue;
      }
      if (await visible(page, '#device-success-page')) {
        report('device_done', current);
        return finish(0);
      }
      if (await visible(page, '#error-page')) {
        const code = (await page.locator('#error-code').textContent().catch(() => '')) || 'unknown';
        report(`idp_error(${code.trim().replace(/\s+/g, '_')})`, current);
        return finish(0);
      }
      report('unknown_page', current);
      return finish(1);
    } catch (e) {
      // A click whose navigation failed: typically the app's listener is gone (refused).
      report(`navigation_failed(${e.message.match(/net::[A-Z_]+/)?.[0] || clean(e.message)})`, page.url());
      return finish(1);
    }
  }
  report('gave_up', page.url());
  return finish(1);
}

main().catch((e) => {
  report(`error(${clean(e.message || e)})`, undefined);
  finish(1);
});
