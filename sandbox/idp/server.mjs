// The sandbox's OAuth2 / OpenID Connect authorization server: npm oidc-provider on 127.0.0.1,
// with a real password check on its login page, a consent page with Allow and Deny, refresh
// token rotation, PKCE, introspection (for Dovecot), revocation and the device flow.
//
// Environment: IDP_PORT (required), IDP_CLIENTS_FILE (JSON written by sandbox/up with the client
// secrets), IDP_ACCESS_TOKEN_TTL (seconds, default 600).

import { readFileSync } from 'node:fs';
import { generateKeyPair, exportJWK } from 'jose';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
if (!port) throw new Error('IDP_PORT is required');
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(readFileSync(process.env.IDP_CLIENTS_FILE, 'utf8'));
const accessTokenTtl = Number(process.env.IDP_ACCESS_TOKEN_TTL || 600);

// Users of the sandbox. carol can sign in, but has no mailbox on the mail server.
const USERS = {
  'alice@sandbox.test': { password: 'alice-password', name: 'Alice Sandbox' },
  'bob@sandbox.test': { password: 'bob-password', name: 'Bob Sandbox' },
  'carol@sandbox.test': { password: 'carol-password', name: 'Carol Sandbox' },
};

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'sandbox', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [jwk] },
  cookies: { keys: [clients.map((c) => c.client_id).join('.') + String(port)] },
  findAccount: async (_ctx, sub) => {
    if (!USERS[sub]) return undefined;
    return {
      accountId: sub,
      claims: async () => ({
        sub,
        email: sub,
        email_verified: true,
        preferred_username: sub,
        name: USERS[sub].name,
      }),
    };
  },
  claims: { email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], openid: ['sub'] },
  scopes: ['openid', 'email', 'profile', 'offline_access'],
  // Mail servers identify the user by the `email` attribute of the introspection response.
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind === 'AccessToken' && token.accountId) return { email: token.accountId };
    return undefined;
  },
  pkce: { required: () => true },
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: accessTokenTtl,
    AuthorizationCode: 120,
    DeviceCode: 600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 3600,
    RefreshToken: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
    ClientCredentials: accessTokenTtl,
  },
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    deviceFlow: {
      enabled: true,
      // The provider's own forms, with stable ids and buttons added for scripted browsers.
      userCodeInputSource: (ctx, form, out, err) => {
        ctx.body = page('Connect a device', `
          ${err ? '<p class="error" id="error">That code is not valid. Check it and try again.</p>' : ''}
          <p>Enter the code shown by Mailbox Auth.</p>
          ${form
            .replace(/<input\s+type="text"\s+name="user_code"/, '<label for="user-code">Code</label><input id="user-code" type="text" name="user_code"')
            .replace('</form>', '<button id="continue" type="submit">Continue</button></form>')}`);
      },
      userCodeConfirmSource: (ctx, form, client, _deviceInfo, userCode) => {
        ctx.body = page('Confirm the code', `
          <p><b>${esc(client.clientName || client.clientId)}</b> asks to sign in with code <b id="confirm-code">${esc(userCode)}</b>.</p>
          ${form.replace('</form>', '<button id="confirm" type="submit">Continue</button><button id="abort" type="submit" name="abort" value="yes">Cancel</button></form>')}`);
      },
      successSource: (ctx) => {
        ctx.body = page('Signed in', '<p id="device-done">You can close this window and return to Mailbox Auth.</p>');
      },
    },
    rpInitiatedLogout: { enabled: false },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error">${esc(out.error)}: ${esc(out.error_description || '')}</p>`);
  },
});

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

// Pages with no external resource (no web font, no CDN), so a browser stays on loopback.
function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)} — Sandbox sign-in</title>
<style>body{font-family:system-ui,sans-serif;max-width:28em;margin:3em auto;padding:0 1em}
label{display:block;margin-top:1em}input{width:100%;padding:.4em;font:inherit}
button{margin-top:1em;margin-right:.5em;padding:.4em 1.2em;font:inherit}.error{color:#b00020}</style>
</head><body><h1>${esc(title)}</h1>${body}</body></html>`;
}

async function form(ctx) {
  let raw = '';
  for await (const chunk of ctx.req) {
    raw += chunk;
    if (raw.length > 16384) throw new errors.InvalidRequest('form too large');
  }
  return Object.fromEntries(new URLSearchParams(raw));
}

function loginPage(ctx, uid, error, email = '') {
  ctx.type = 'html';
  ctx.body = page('Sign in', `
    ${error ? `<p class="error" id="error">${esc(error)}</p>` : ''}
    <form method="post" action="/interaction/${uid}/login" autocomplete="off">
      <label for="email">Email</label><input id="email" name="email" type="email" value="${esc(email)}" autofocus>
      <label for="password">Password</label><input id="password" name="password" type="password">
      <button id="sign-in" type="submit">Sign in</button>
    </form>
    <p><a id="cancel" href="/interaction/${uid}/abort">Cancel</a></p>`);
}

// The interaction routes (login with a real password check, consent), in front of the provider.
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
  if (!m) return next();
  const [, uid, action] = m;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) throw new errors.InvalidRequest('interaction mismatch');
  const { prompt, params } = details;

  if (!action && ctx.method === 'GET') {
    if (prompt.name === 'login') return loginPage(ctx, uid, null, params.login_hint || '');
    const client = await provider.Client.find(params.client_id);
    ctx.type = 'html';
    ctx.body = page('Allow access?', `
      <p><b>${esc(client?.clientName || params.client_id)}</b> asks to read your mail and stay signed in.</p>
      <p>Scopes: <code id="scopes">${esc(params.scope)}</code></p>
      <form method="post" action="/interaction/${uid}/confirm"><button id="allow" type="submit">Allow</button></form>
      <form method="get" action="/interaction/${uid}/abort"><button id="deny" type="submit">Deny</button></form>`);
    return undefined;
  }
  if (action === 'login' && ctx.method === 'POST') {
    const { email = '', password = '' } = await form(ctx);
    const user = USERS[email.trim().toLowerCase()];
    if (!user || user.password !== password) {
      return loginPage(ctx, uid, 'Invalid email or password.', email);
    }
    return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: email.trim().toLowerCase() } }, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm' && ctx.method === 'POST') {
    await form(ctx);
    const { accountId } = details.session;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action === 'abort') {
    return provider.interactionFinished(ctx.req, ctx.res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  return next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`sandbox IdP listening on ${issuer}`);
});
