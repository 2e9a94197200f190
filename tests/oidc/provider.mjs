// A real OpenID provider for the console's OIDC sign-in tests: panva's oidc-provider with
// one static confidential client and a tiny sign-in page (no password: the test account
// is named in a form field). Every login is an email; its tenant claim is the first label
// of the domain (analyst@acme.test → "acme"); a login starting with "unverified" gets
// email_verified false. Consent is implied for the one (first-party) client.
//
//   PORT=0 CLIENT_ID=… CLIENT_SECRET=… REDIRECT_URI=… node provider.mjs
//
// Prints one line `ready <issuer>` on stdout once it listens (PORT=0: a free port).

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: set ${name}`);
    process.exit(2);
  }
  return value;
};

const clientId = env('CLIENT_ID');
const clientSecret = env('CLIENT_SECRET');
const redirectUris = env('REDIRECT_URI').split(',');
const port = Number(process.env.PORT || 0);
const host = '127.0.0.1';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const EMAIL = /^[^@\s]+@([^@.\s]+)\.[^@\s]+$/;

function account(login) {
  const match = EMAIL.exec(login);
  if (!match) return undefined;
  return {
    accountId: `acct-${Buffer.from(login).toString('hex')}`,
    claims: {
      email: login,
      email_verified: !login.startsWith('unverified'),
      tenant: match[1],
      name: login.split('@')[0],
    },
  };
}

function accountById(id) {
  if (!id.startsWith('acct-')) return undefined;
  return account(Buffer.from(id.slice(5), 'hex').toString());
}

async function listen(server) {
  await new Promise((resolve) => server.listen(port, host, resolve));
  return server.address().port;
}

const server = createServer();
const issuer = `http://${host}:${await listen(server)}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  claims: {
    openid: ['sub', 'tenant'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  cookies: { keys: [clientSecret] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const found = accountById(sub);
    if (!found) return undefined;
    return {
      accountId: found.accountId,
      async claims() {
        return { sub: found.accountId, ...found.claims };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    // The one registered client is first-party: consent is implied.
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
    await grant.save();
    return grant;
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function signInPage(uid, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Test provider sign-in</title></head>
<body><h1>Test provider</h1>${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Email <input name="login" autofocus></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function formBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET' && !action) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(signInPage(uid));
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const login = (await formBody(req)).get('login') || '';
    const found = account(login);
    if (!found) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(signInPage(uid, 'not an email address'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: found.accountId } },
      { mergeWithLastSubmission: false });
    return;
  }
  res.writeHead(404).end();
}

const handle = provider.callback();
const INTERACTION = /^\/interaction\/([\w-]+)(?:\/(login))?$/;

server.on('request', async (req, res) => {
  const match = INTERACTION.exec(new URL(req.url, issuer).pathname);
  if (!match) {
    handle(req, res);
    return;
  }
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (err) {
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${err.message}`);
  }
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`ready ${issuer}`);
