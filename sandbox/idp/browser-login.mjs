// Drives Debian's headless Chromium through the sandbox IdP's real sign-in pages, as a person
// would: fills the login form, allows (or denies) consent, follows the redirect back to the app.
// Used as $BROWSER in tests (through ./browser-login) and by the sandbox tour.
//
// Environment: SANDBOX_LOGIN_USER, SANDBOX_LOGIN_PASSWORD, SANDBOX_CONSENT (allow | deny),
// SANDBOX_DEVICE_CODE (for the device flow: the user code to type in), SANDBOX_BROWSER_LOG
// (append one line per run: what happened, the final host and path only — never a code).

import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const user = process.env.SANDBOX_LOGIN_USER || 'alice@sandbox.test';
const password = process.env.SANDBOX_LOGIN_PASSWORD || 'alice-password';
const consent = process.env.SANDBOX_CONSENT || 'allow';
const deviceCode = process.env.SANDBOX_DEVICE_CODE || '';
const logFile = process.env.SANDBOX_BROWSER_LOG;

function log(what, pageUrl) {
  let where = '';
  try {
    const u = new URL(pageUrl);
    where = `${u.host}${u.pathname}`;
  } catch { /* no page */ }
  const line = `${new Date().toISOString()} ${user} ${what} ${where}\n`;
  if (logFile) appendFileSync(logFile, line);
  process.stderr.write(line);
}

const giveUp = setTimeout(() => { log('gave-up-after-60s', ''); process.exit(3); }, 60_000);
const profile = mkdtempSync(join(tmpdir(), 'sandbox-browser-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.SANDBOX_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
let outcome = 'unknown';
const page = browser.pages()[0] || await browser.newPage();
try {
  await page.goto(url, { waitUntil: 'load' });
  for (let i = 0; i < 10; i++) {
    const here = new URL(page.url());
    if (!here.pathname.startsWith('/interaction/') && !here.pathname.startsWith('/device')) {
      outcome = 'returned-to-app';
      break;
    }
    if (await page.locator('#user-code').count()) {
      await page.fill('#user-code', deviceCode);
      await Promise.all([page.waitForLoadState('load'), page.click('#continue')]);
    } else if (await page.locator('#confirm').count()) {
      await Promise.all([page.waitForLoadState('load'), page.click('#confirm')]);
    } else if (await page.locator('#device-done').count()) {
      outcome = 'device-signed-in';
      break;
    } else if (await page.locator('#sign-in').count()) {
      if (await page.locator('#error').count()) {
        outcome = 'login-refused';
        break;
      }
      await page.fill('#email', user);
      await page.fill('#password', password);
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#sign-in')]);
    } else if (await page.locator('#allow').count()) {
      const button = consent === 'deny' ? '#deny' : '#allow';
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }).catch(() => {}), page.click(button)]);
    } else if (await page.locator('#error').count()) {
      outcome = `idp-error:${(await page.locator('#error').innerText()).slice(0, 200)}`;
      break;
    } else {
      outcome = 'unexpected-page';
      break;
    }
  }
} catch (e) {
  outcome = `failed:${String(e.message || e).split('\n')[0].slice(0, 200)}`;
}
log(outcome, page.url());
await browser.close();
rmSync(profile, { recursive: true, force: true });
clearTimeout(giveUp);
