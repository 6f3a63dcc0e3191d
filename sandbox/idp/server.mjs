// The sandbox's OAuth2 / OpenID Connect authorization server: oidc-provider on 127.0.0.1 with a
// real login form (passwords are checked), a consent page with Allow and Deny, and token
// introspection for the mail server (Dovecot's oauth2 passdb).
//
//   node server.mjs CONFIG.json
//
// CONFIG.json (written by sandbox/up):
//   { "host": "127.0.0.1", "port": 0,
//     "introspectionClient": { "id": "dovecot", "secret": "…" },
//     "appClient": { "id": "<a GUID>", "secret": "…" },
//     "certAppClient": { "id": "<a GUID>" },
//     "accessTokenTtl": 600, "refreshTokenTtl": 2592000,
//     "usersFile": "…/users.json", "portFile": "…/idp.port", "pidFile": "…/idp.pid" }
//
// With "port": 0 the OS picks a free port; the port actually bound is written to portFile once
// the server answers. Everything is kept in memory: a restart forgets every grant and token.
// Logs go to stdout (sandbox/up sends them to a file); no token, code or password is ever logged.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';

// oidc-provider's own in-memory store keeps only the newest 1,000 entries: with a few hundred
// signed-in mailboxes (the benchmark signs in 1,000), grants and refresh tokens still in use
// would be dropped. The same adapter over a larger store; entries still expire with their tokens,
// kept for oidc-provider's default clock tolerance (15 s) past it as its own adapter keeps them, so
// an expired device code is still found and answered `expired_token`, not `invalid_grant`.
const CLOCK_TOLERANCE_SECS = 15;
const memoryStore = new LRU({ maxSize: 1_000_000 });
const memoryAdapter = (model) => new MemoryAdapter(model, memoryStore, CLOCK_TOLERANCE_SECS);

const here = path.dirname(fileURLToPath(import.meta.url));
const configPath = process.argv[2] || process.env.SANDBOX_IDP_CONFIG;
const config = configPath ? JSON.parse(fs.readFileSync(configPath, 'utf8')) : {};

const HOST = config.host || '127.0.0.1';
const PORT = Number(config.port ?? process.env.SANDBOX_IDP_PORT ?? 0);
const AT_TTL = Number(process.env.SANDBOX_ACCESS_TOKEN_TTL || config.accessTokenTtl || 600);
const RT_TTL = Number(process.env.SANDBOX_REFRESH_TOKEN_TTL || config.refreshTokenTtl || 30 * 24 * 3600);
const INTROSPECTOR = config.introspectionClient || { id: 'dovecot', secret: randomSecret() };
const APP = config.appClient || { id: 'mailbox-auth-app', secret: randomSecret() };
// The app-only client that authenticates with a certificate (private_key_jwt, RFC 7523), as an
// Entra app with an uploaded certificate does. Its certificates are made by the program under
// test, so a test uploads each one through POST /sandbox/app-cert (see appCertUpload).
const CERT_APP = config.certAppClient || { id: 'mailbox-auth-cert-app' };
export const PUBLIC_CLIENT_ID = 'mailbox-auth';
// A second public client that plays a strict IdP for the device flow: its device codes expire
// after STRICT_DEVICE_CODE_TTL seconds, and it answers the first poll of each device code with
// `slow_down` (RFC 8628 section 3.5: a server may ask for it at any time). Nothing else uses it.
export const STRICT_CLIENT_ID = 'mailbox-auth-strict';
const STRICT_DEVICE_CODE_TTL = 8;
// A third public client with a short refresh-token idle lifetime, for keep-alive tests: each
// refresh token it gets expires IDLE_REFRESH_TTL seconds after it was issued (a rotation issues
// a new one with the full lifetime, so a sign-in in use lives on and an unused one ages out, as
// at Microsoft after 90 days), and its access tokens live IDLE_ACCESS_TTL seconds, so a client
// must really refresh to stay signed in. Nothing else uses it.
export const IDLE_CLIENT_ID = 'mailbox-auth-idle';
const IDLE_REFRESH_TTL = Number(process.env.SANDBOX_IDLE_REFRESH_TTL || 20);
const IDLE_ACCESS_TTL = 4;
const isIdle = (client) => client?.clientId === IDLE_CLIENT_ID;
export const MAIL_SCOPE = 'mail';

function randomSecret() {
  return crypto.randomBytes(24).toString('hex');
}

function log(...parts) {
  process.stdout.write(`${new Date().toISOString()} ${parts.join(' ')}\n`);
}

// ---------------------------------------------------------------------------------------------
// Users: a JSON list of { id, email, name, password }. Plain-text passwords: this is a sandbox.

const users = JSON.parse(fs.readFileSync(config.usersFile || path.join(here, 'users.json'), 'utf8'));
const usersById = new Map(users.map((u) => [u.id, u]));
const usersByEmail = new Map(users.map((u) => [u.email.toLowerCase(), u]));

function sha256(s) {
  return crypto.createHash('sha256').update(String(s)).digest();
}

// Returns the user when the email and password match, otherwise undefined. The password is
// always compared (against a dummy when the email is unknown) so both failures look alike.
function checkPassword(email, password) {
  const user = usersByEmail.get(String(email || '').trim().toLowerCase());
  const ok = crypto.timingSafeEqual(sha256(user ? user.password : '\0no-such-user'), sha256(password ?? ''));
  return user && ok ? user : undefined;
}

async function findAccount(_ctx, id) {
  const user = usersById.get(id);
  if (!user) return undefined;
  return {
    accountId: user.id,
    async claims() {
      return { sub: user.id, email: user.email, email_verified: true, name: user.name, preferred_username: user.email };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// HTML. Plain pages with stable ids, no external resource of any kind (no fonts, no scripts).

function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

const STYLE = `body{font-family:sans-serif;background:#f4f4f4;margin:2em}
main{max-width:24em;margin:auto;background:#fff;padding:1.5em 2em;border:1px solid #ddd;border-radius:4px}
label{display:block;margin-top:.8em}input{width:100%;box-sizing:border-box;padding:.5em;font-size:1em}
button{margin-top:1em;padding:.5em 1.2em;font-size:1em;cursor:pointer}
.error{color:#b00020;font-weight:bold}.muted{color:#666;font-size:.9em}ul{padding-left:1.2em}`;

function page(title, body, id) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><style>${STYLE}</style></head>
<body><main id="${esc(id)}"><h1>${esc(title)}</h1>
${body}
<p class="muted">Mailbox Auth sandbox identity provider</p></main></body></html>`;
}

function loginPage(uid, { email = '', error = '', clientName = '' } = {}) {
  return page('Sign in', `
<p>Sign in to continue to <strong id="client-name">${esc(clientName)}</strong>.</p>
${error ? `<p id="login-error" class="error" role="alert">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label for="email">Email</label>
  <input id="email" name="email" type="email" value="${esc(email)}" autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password">
  <button id="login-submit" type="submit">Sign in</button>
</form>
<p id="sandbox-users" class="muted">This is the local sandbox. Sign in as <code>alice@sandbox.test</code> with
<code>alice-password</code>, or <code>bob@sandbox.test</code> with <code>bob-password</code>.</p>
<form id="login-cancel-form" method="post" action="/interaction/${esc(uid)}/abort">
  <button id="login-cancel" type="submit">Cancel</button>
</form>`, 'login-page');
}

const SCOPE_TEXT = {
  openid: 'Sign you in',
  email: 'See your email address',
  offline_access: 'Stay signed in (keep access when you are not there)',
  [MAIL_SCOPE]: 'Read your mailbox over IMAP and POP3',
};

function consentPage(uid, { clientName, email, scopes }) {
  const items = scopes.map((s) => `<li data-scope="${esc(s)}">${esc(SCOPE_TEXT[s] || s)} <span class="muted">(${esc(s)})</span></li>`).join('');
  return page('Allow access?', `
<p><strong id="client-name">${esc(clientName)}</strong> wants to access the account
<strong id="account-email">${esc(email)}</strong>:</p>
<ul id="consent-scopes">${items}</ul>
<form id="consent-form" method="post" action="/interaction/${esc(uid)}/confirm">
  <button id="consent-allow" type="submit">Allow</button>
</form>
<form id="deny-form" method="post" action="/interaction/${esc(uid)}/abort">
  <button id="consent-deny" type="submit">Deny</button>
</form>`, 'consent-page');
}

function errorPage(error, description) {
  return page('Something went wrong', `
<p id="error-code" class="error">${esc(error)}</p>
<p id="error-description">${esc(description)}</p>`, 'error-page');
}

// oidc-provider's own pages (device flow, logout, errors), with the same plain look.
async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = errorPage(out.error, out.error_description);
}

async function userCodeInputSource(ctx, form, _out, err) {
  let msg = '<p>Enter the code shown on your device.</p>';
  if (err && (err.userCode || err.name === 'NoCodeError')) msg = '<p id="device-error" class="error">The code you entered is incorrect. Try again.</p>';
  else if (err && err.name === 'AbortedError') msg = '<p id="device-error" class="error">The sign-in request was interrupted.</p>';
  else if (err) msg = '<p id="device-error" class="error">There was an error processing your request.</p>';
  ctx.body = page('Device sign-in', `${msg}
<div id="device-code-form">${form}</div>
<button id="device-continue" type="submit" form="op.deviceInputForm">Continue</button>`, 'device-input-page');
}

async function userCodeConfirmSource(ctx, form, client, _deviceInfo, userCode) {
  ctx.body = page('Confirm device', `
<p><strong id="client-name">${esc(client.clientName || client.clientId)}</strong> asks to sign in.
Check that your device shows this code:</p>
<p><code id="device-user-code">${esc(userCode)}</code></p>
${form}
<button id="device-confirm" type="submit" form="op.deviceConfirmForm">Continue</button>
<button id="device-abort" type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`, 'device-confirm-page');
}

async function successSource(ctx) {
  ctx.body = page('Device sign-in complete', '<p id="device-success">You can close this page and return to your device.</p>', 'device-success-page');
}

async function logoutSource(ctx, form) {
  ctx.body = page('Sign out?', `${form}
<button id="logout-yes" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button id="logout-no" type="submit" form="op.logoutForm">No, stay signed in</button>`, 'logout-page');
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<p id="logout-success">You are signed out.</p>', 'logout-success-page');
}

// ---------------------------------------------------------------------------------------------
// The provider.

// A refresh is logged with its grant and short SHA-256 fingerprints (16 hex digits) of the
// refresh token presented and of the one issued: enough to follow a rotation chain and to see
// a token presented twice, never enough to recover or use a token.
function fingerprint(value) {
  return value ? crypto.createHash('sha256').update(String(value)).digest('hex').slice(0, 16) : '-';
}

function refreshDetail(ctx) {
  if (ctx.oidc?.params?.grant_type !== 'refresh_token') return '';
  const entities = ctx.oidc.entities || {};
  const grantId = entities.Grant?.jti || entities.RotatedRefreshToken?.grantId || entities.RefreshToken?.grantId || '-';
  return `grant=${grantId} presented=${fingerprint(ctx.oidc.params.refresh_token)} issued=${fingerprint(ctx.body?.refresh_token)}`;
}

function keys() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'sandbox-rs256', alg: 'RS256', use: 'sig' }] };
}

function placeholderKey() {
  const { publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...publicKey.export({ format: 'jwk' }), kid: 'placeholder', alg: 'RS256', use: 'sig' };
}

// Certificates uploaded for CERT_APP, by SHA-1 thumbprint (upper-case hex, as Entra shows it).
const uploadedThumbprints = new Set();

// POST /sandbox/app-cert with a certificate (DER or PEM) as the body: adds its public key to
// CERT_APP's keys, as Entra's "Upload certificate" does; answers { thumbprint, x5t }. Loopback
// callers only (the server listens on 127.0.0.1 anyway). Only a public key goes in: a
// certificate cannot grant anything without the private key the program keeps in its keyring.
async function appCertUpload(provider, req, res) {
  const json = (status, body) => {
    res.statusCode = status;
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(body));
  };
  const remote = req.socket.remoteAddress || '';
  if (!(remote.startsWith('127.') || remote === '::1' || remote.startsWith('::ffff:127.'))) {
    return json(403, { error: 'loopback only' });
  }
  if (req.method !== 'POST') return json(405, { error: 'POST a certificate' });
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 64 * 1024) return json(413, { error: 'certificate too large' });
    chunks.push(c);
  }
  let cert;
  try {
    cert = new crypto.X509Certificate(Buffer.concat(chunks));
  } catch (err) {
    return json(400, { error: `not a certificate: ${err.message}` });
  }
  const sha1 = crypto.createHash('sha1').update(cert.raw).digest();
  const thumbprint = sha1.toString('hex').toUpperCase();
  const x5t = sha1.toString('base64url');
  const client = await provider.Client.find(CERT_APP.id);
  client.asymmetricKeyStore.add({
    ...cert.publicKey.export({ format: 'jwk' }),
    kid: x5t, alg: 'RS256', use: 'sig', x5c: [cert.raw.toString('base64')],
  });
  uploadedThumbprints.add(thumbprint);
  log('app-cert.uploaded', CERT_APP.id, thumbprint);
  return json(200, { thumbprint, x5t });
}

// The certificate a client assertion names by its x5t header, as a thumbprint; '' if none.
function assertionThumbprint(assertion) {
  try {
    const header = JSON.parse(Buffer.from(String(assertion).split('.')[0], 'base64url').toString('utf8'));
    return Buffer.from(String(header.x5t || ''), 'base64url').toString('hex').toUpperCase();
  } catch {
    return '';
  }
}

async function extraTokenClaims(_ctx, token) {
  // The mail server reads the resource owner from the introspection response's `username`
  // (RFC 7662; Dovecot's username_attribute); introspection returns these claims with the token.
  // A user's token names the user. In a client credentials grant the client is its own resource
  // owner (RFC 6749 section 4.4), so an app-only token names the app: it never equals a mailbox,
  // and the mail server asks its app-only permissions instead (sandbox/app-access).
  if (token.kind === 'AccessToken' && token.accountId) {
    const user = usersById.get(token.accountId);
    if (user) return { email: user.email, username: user.email };
  }
  if (token.kind === 'ClientCredentials') return { username: token.clientId };
  return undefined;
}

async function introspectionAllowedPolicy(ctx, client, token) {
  // The mail server may only learn about access tokens: a refresh token presented as a bearer
  // token must come back inactive, so it cannot be used to log in.
  if (client.clientId === INTROSPECTOR.id) return token.kind === 'AccessToken' || token.kind === 'ClientCredentials';
  // Otherwise oidc-provider's default: public clients only learn about their own tokens.
  if (client.clientAuthMethod === 'none' && token.clientId !== client.clientId) return false;
  return true;
}

async function revocationAllowedPolicy(_ctx, client, token) {
  // A client may revoke only its own tokens (for a public client, other tokens are ignored).
  if (token.clientId === client.clientId) return true;
  if (client.clientAuthMethod === 'none') return false;
  throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: PUBLIC_CLIENT_ID,
        client_name: 'Mailbox Auth',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        // Native client: any port on the loopback address is accepted (RFC 8252 section 7.3).
        redirect_uris: ['http://127.0.0.1/'],
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
      },
      {
        client_id: STRICT_CLIENT_ID,
        client_name: 'Mailbox Auth (strict IdP)',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: ['http://127.0.0.1/'],
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
      },
      {
        client_id: IDLE_CLIENT_ID,
        client_name: 'Mailbox Auth (short idle lifetime)',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: ['http://127.0.0.1/'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
      {
        client_id: INTROSPECTOR.id,
        client_secret: INTROSPECTOR.secret,
        client_name: 'Sandbox mail server (token introspection)',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      },
      {
        client_id: CERT_APP.id,
        client_name: 'Mailbox Auth (app-only, certificate)',
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'RS256',
        // A key nobody holds, until a test uploads its certificate: oidc-provider wants a
        // key set for a private_key_jwt client.
        jwks: { keys: [placeholderKey()] },
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
      {
        client_id: APP.id,
        client_secret: APP.secret,
        client_name: 'Mailbox Auth (app-only)',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    findAccount,
    adapter: memoryAdapter,
    scopes: ['openid', 'email', 'offline_access', MAIL_SCOPE],
    claims: { openid: ['sub', 'preferred_username'], email: ['email', 'email_verified'], profile: ['name'] },
    // Like Microsoft's and Google's, the id_token names the account that signed in
    // (preferred_username / email), even in the code flow.
    conformIdTokenClaims: false,
    jwks: keys(),
    cookies: { keys: [randomSecret(), randomSecret()] },
    pkce: { required: () => true },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true, allowedPolicy: introspectionAllowedPolicy },
      revocation: { enabled: true, allowedPolicy: revocationAllowedPolicy },
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true, userCodeInputSource, userCodeConfirmSource, successSource },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    },
    extraTokenClaims,
    // A refresh token is single-use: each refresh returns a new one, and presenting a used one
    // again fails with invalid_grant and revokes the whole grant (oidc-provider's reuse detection).
    rotateRefreshToken: true,
    renderError,
    ttl: {
      AccessToken: (_ctx, _token, client) => (isIdle(client) ? IDLE_ACCESS_TTL : AT_TTL),
      ClientCredentials: AT_TTL,
      AuthorizationCode: 120,
      DeviceCode: (_ctx, _token, client) => (client?.clientId === STRICT_CLIENT_ID ? STRICT_DEVICE_CODE_TTL : 600),
      IdToken: 3600,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: RT_TTL,
      RefreshToken: (_ctx, _token, client) => (isIdle(client) ? IDLE_REFRESH_TTL : RT_TTL),
    },
  });

  // Device-flow polls: each one is logged (client and outcome, never the code), and the strict
  // client's first poll of a device code gets `slow_down` instead of `authorization_pending`.
  const slowedDown = new Set();
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'token' || ctx.oidc.params?.grant_type !== 'urn:ietf:params:oauth:grant-type:device_code') return;
    const clientId = ctx.oidc.client?.clientId || '-';
    const code = String(ctx.oidc.params.device_code || '');
    if (clientId === STRICT_CLIENT_ID && ctx.body?.error === 'authorization_pending' && !slowedDown.has(code)) {
      slowedDown.add(code);
      ctx.body = { error: 'slow_down', error_description: 'you are polling too quickly and should back off at a reasonable rate' };
    }
    log('device.poll', clientId, ctx.body?.error || 'tokens');
  });
  // A client assertion for CERT_APP naming a certificate that was never uploaded is refused in
  // Entra's words (AADSTS700027, "The key was not found."), so the program's diagnosis of that
  // answer is tested against a real refusal.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'token' || ctx.body?.error !== 'invalid_client') return;
    const { client_assertion: assertion, client_id: clientId } = ctx.oidc.params || {};
    if (!assertion || (clientId && clientId !== CERT_APP.id)) return;
    const thumbprint = assertionThumbprint(assertion);
    if (uploadedThumbprints.has(thumbprint)) return;
    ctx.body = {
      error: 'invalid_client',
      error_description: `AADSTS700027: Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '${thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${CERT_APP.id}'.]`,
    };
  });
  provider.on('grant.success', (ctx) => log('grant.success', ctx.oidc.params?.grant_type || '-', ctx.oidc.client?.clientId || '-', refreshDetail(ctx)));
  provider.on('grant.error', (ctx, err) => log('grant.error', ctx.oidc.params?.grant_type || '-', err.error || err.name, JSON.stringify(err.error_detail || err.error_description || err.message), refreshDetail(ctx)));
  provider.on('grant.revoked', (_ctx, grantId) => log('grant.revoked', grantId));
  provider.on('authorization.error', (_ctx, err) => log('authorization.error', err.error || err.name, JSON.stringify(err.error_detail || err.error_description || err.message)));
  provider.on('introspection.error', (_ctx, err) => log('introspection.error', err.error || err.name, JSON.stringify(err.error_description || err.message)));
  provider.on('server_error', (_ctx, err) => log('server_error', err.stack || err));
  return provider;
}

// ---------------------------------------------------------------------------------------------
// The interaction routes (login and consent), in front of the provider.

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(c);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(html);
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw Object.assign(new Error('interaction mismatch'), { status: 400 });
  const { prompt, params, session } = details;
  const client = await provider.Client.find(params.client_id);
  const clientName = client?.clientName || params.client_id;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return send(res, 200, loginPage(uid, { email: params.login_hint || '', clientName }));
    if (prompt.name === 'consent') {
      const user = usersById.get(session?.accountId);
      const scopes = String(params.scope || '').split(' ').filter(Boolean);
      return send(res, 200, consentPage(uid, { clientName, email: user?.email || session?.accountId, scopes }));
    }
    return send(res, 400, errorPage('invalid_request', `unexpected prompt ${prompt.name}`));
  }
  if (req.method !== 'POST') return send(res, 405, errorPage('invalid_request', 'method not allowed'));

  if (action === 'login') {
    if (prompt.name !== 'login') return send(res, 400, errorPage('invalid_request', 'no sign-in is pending'));
    const form = await readForm(req);
    const user = checkPassword(form.get('email'), form.get('password'));
    if (!user) {
      log('login.failed', JSON.stringify(String(form.get('email') || '')));
      return send(res, 200, loginPage(uid, { email: form.get('email') || '', error: 'Invalid email or password', clientName }));
    }
    log('login.ok', user.email);
    return provider.interactionFinished(req, res, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
  }

  if (action === 'confirm') {
    if (prompt.name !== 'consent') return send(res, 400, errorPage('invalid_request', 'no consent is pending'));
    const { details: missing } = prompt;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    log('consent.allowed', session.accountId, params.client_id);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (action === 'abort') {
    log('consent.denied', session?.accountId || '-', params.client_id);
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'The user denied the request',
    }, { mergeWithLastSubmission: false });
  }

  return send(res, 404, errorPage('not_found', 'no such page'));
}

// ---------------------------------------------------------------------------------------------

const server = http.createServer();
server.on('request', (req, res) => {
  const started = Date.now();
  const pathname = (req.url || '/').split('?')[0];
  // Method, path and status only: queries and bodies can hold codes and tokens.
  res.on('finish', () => log(req.method, pathname, res.statusCode, `${Date.now() - started}ms`));
  if (pathname === '/sandbox/app-cert') {
    appCertUpload(server.provider, req, res).catch((err) => {
      log('app-cert.error', JSON.stringify(err.message));
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end();
      }
    });
    return;
  }
  const m = pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?\/?$/);
  if (m) {
    interaction(server.provider, req, res, m[1], m[2]).catch((err) => {
      log('interaction.error', err.name, JSON.stringify(err.message));
      if (!res.headersSent) {
        const status = err.statusCode || err.status || 500;
        send(res, status, errorPage(err.error || 'server_error', err.error_description || err.message));
      }
    });
    return;
  }
  server.callback(req, res);
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;
  server.provider = buildProvider(issuer);
  server.callback = server.provider.callback();
  log(`listening issuer=${issuer} access_token_ttl=${AT_TTL}s refresh_token_ttl=${RT_TTL}s pid=${process.pid}`);
  if (config.pidFile) fs.writeFileSync(config.pidFile, `${process.pid}\n`);
  if (config.portFile) {
    fs.writeFileSync(`${config.portFile}.tmp`, `${port}\n`);
    fs.renameSync(`${config.portFile}.tmp`, config.portFile);
  }
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    log(`stopping (${sig})`);
    server.close();
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 200).unref();
  });
}
