// A local OAuth 2.0 / OpenID Connect server for pixsrc's login tests (oidc-provider 9.x).
//
//   node tests/oauth/oidc_server.mjs [PORT]        (PORT: argv, else $PIXSRC_OIDC_PORT, else 0 = ephemeral)
//
// Listens on 127.0.0.1 only. Once listening it prints ONE JSON line on stdout, e.g.
//   {"issuer":"http://127.0.0.1:40123","port":40123,"pid":1234}
// and nothing else on stdout afterwards (oidc-provider's own warnings go to stderr).
// It runs until killed (SIGTERM/SIGINT) or until its stdin closes when $PIXSRC_OIDC_EXIT_ON_STDIN_EOF=1.
//
// Environment (all optional):
//   PIXSRC_OIDC_ACCESS_TTL        access-token lifetime in seconds (default 300); e.g. 5 to observe expiry
//   PIXSRC_OIDC_REFRESH_TTL       refresh-token lifetime in seconds (default 86400)
//   PIXSRC_OIDC_CONFIDENTIAL_PORT port of pixsrc-confidential's one fixed redirect URI (default 53682)
//   PIXSRC_OIDC_CONFIDENTIAL_SECRET  its client_secret (default "pixsrc-test-secret")
//   PIXSRC_OIDC_EXTRA_SCOPES      space-separated scopes to accept on top of SCOPES below
//
// Clients (all: response_type=code, grant_types authorization_code + refresh_token; refresh
// tokens are issued on every code exchange, with or without offline_access):
//   pixsrc-native        public (token_endpoint_auth_method none), application_type native,
//                        redirect http://127.0.0.1/callback (any port matches, path must be /callback),
//                        PKCE required (S256 only), refresh tokens NOT rotated.
//   pixsrc-rotating      the same, but every refresh rotates the refresh token; replaying a
//                        rotated (consumed) refresh token fails with invalid_grant AND revokes the whole grant.
//   pixsrc-confidential  client_secret_basic with the secret above, application_type web,
//                        redirect exactly http://127.0.0.1:<CONFIDENTIAL_PORT>/callback,
//                        PKCE optional (verified when sent), refresh tokens rotated.
//                        HTTP Basic only: a client_secret in the form body gets 401 invalid_client
//                        (oidc-provider alone would accept it; this server refuses, like Pinterest).
//   pixsrc-introspector  client_secret_basic, secret "pixsrc-introspector-secret", no grants: only
//                        for calling the introspection endpoint on any client's tokens.
//
// Endpoints: discovery /.well-known/openid-configuration, /auth, /token, /token/revocation,
// /token/introspection, /me (userinfo: a protected resource that answers 401 to an expired token).
// Test-only (no auth, never in a real provider):
//   GET /__test/token?token=T  -> {"found":bool,"kind":"AccessToken"|"RefreshToken"|null,
//                                  "active":bool,"consumed":bool,"expired":bool,"client_id":...,"scope":...,"exp":...}
//   GET /__test/requests       -> JSON list of the requests seen at /auth, /token, /token/revocation,
//                                  /token/introspection, /me: {method, path, status, auth_scheme,
//                                  grant_type, client_id, error}. (auth_scheme is "Basic"/"Bearer"/null.)
import http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

const SCOPES = [
  'openid', 'offline_access', 'profile', 'email',
  // resource scopes pixsrc may ask for; any scope not listed here is silently DROPPED from the grant
  'files.read', 'files.write', 'drive.readonly', 'drive.file',
  'photos.read', 'media.read', 'boards:read', 'pins:read', 'user_accounts:read',
];

const env = process.env;
const seconds = (name, dflt) => {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${raw}`);
  return n;
};

const requestedPort = Number(process.argv[2] ?? env.PIXSRC_OIDC_PORT ?? 0);
const accessTtl = seconds('PIXSRC_OIDC_ACCESS_TTL', 300);
const refreshTtl = seconds('PIXSRC_OIDC_REFRESH_TTL', 86400);
const confidentialPort = seconds('PIXSRC_OIDC_CONFIDENTIAL_PORT', 53682);
const confidentialSecret = env.PIXSRC_OIDC_CONFIDENTIAL_SECRET || 'pixsrc-test-secret';
const extraScopes = (env.PIXSRC_OIDC_EXTRA_SCOPES || '').split(/\s+/).filter(Boolean);
const scopes = [...new Set([...SCOPES, ...extraScopes])];

const ROTATING = new Set(['pixsrc-rotating', 'pixsrc-confidential']);
const common = {
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  scope: scopes.join(' '),
};

const clients = [
  {
    ...common,
    client_id: 'pixsrc-native',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    redirect_uris: ['http://127.0.0.1/callback'],
  },
  {
    ...common,
    client_id: 'pixsrc-rotating',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    redirect_uris: ['http://127.0.0.1/callback'],
  },
  {
    ...common,
    client_id: 'pixsrc-confidential',
    client_secret: confidentialSecret,
    application_type: 'web',
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: [`http://127.0.0.1:${confidentialPort}/callback`],
  },
  {
    client_id: 'pixsrc-introspector',
    client_secret: 'pixsrc-introspector-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
];

// Listen first (port 0 = ephemeral), then build the provider with the real issuer.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(requestedPort, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients,
  scopes,
  pkce: {
    required: (_ctx, client) => client.clientAuthMethod === 'none',
  },
  features: {
    devInteractions: { enabled: true }, // login + consent pages accepting any login/password
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: (ctx) => ROTATING.has(ctx.oidc.client.clientId),
  ttl: {
    AccessToken: accessTtl,
    RefreshToken: refreshTtl,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: refreshTtl,
    IdToken: 3600,
  },
  // default 15 s: /me (and token find) would accept an access token up to 15 s past its exp,
  // while introspection says inactive right at exp. One clock here, so no tolerance.
  clockTolerance: 0,
  cookies: { keys: ['pixsrc-test-cookie-key-not-secret'] },
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.test`, name: sub }),
  }),
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oidc error</title></head><body><h1>oidc error</h1><pre id="error">${
      JSON.stringify(out).replace(/[<>&]/g, (c) => `&#${c.charCodeAt(0)};`)}</pre></body></html>`;
  },
});

// ---- test-only: request log -------------------------------------------------------------
const LOGGED = new Set(['/auth', '/token', '/token/revocation', '/token/introspection', '/me']);
const requestLog = [];
provider.use(async (ctx, next) => {
  const path = ctx.path;
  if (!LOGGED.has(path)) return next();
  try {
    await next();
  } finally {
    const authz = ctx.get('authorization');
    requestLog.push({
      method: ctx.method,
      path,
      status: ctx.status,
      auth_scheme: authz ? authz.split(' ')[0] : null,
      grant_type: ctx.oidc?.params?.grant_type ?? null,
      client_id: ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id ?? null,
      error: (ctx.body && typeof ctx.body === 'object' && ctx.body.error) || null,
    });
  }
});

// ---- test-only endpoints ----------------------------------------------------------------
async function tokenState(token) {
  for (const kind of ['AccessToken', 'RefreshToken']) {
    // find() returns undefined for unknown / revoked tokens; ignoreExpiration lets us tell "expired" apart
    const found = await provider[kind].find(token, { ignoreExpiration: true });
    if (found) {
      const expired = found.isExpired;
      const consumed = Boolean(found.consumed);
      return {
        found: true,
        kind,
        active: !expired && !consumed,
        consumed,
        expired,
        client_id: found.clientId,
        scope: found.scope ?? null,
        exp: found.exp ?? null,
        grant_id: found.grantId ?? null,
      };
    }
  }
  return { found: false, kind: null, active: false, consumed: false, expired: false, client_id: null, scope: null, exp: null, grant_id: null };
}

// oidc-provider accepts client_secret_post from a client registered for client_secret_basic
// (it treats the two as one). Real providers of that kind (Pinterest) insist on HTTP Basic, so
// for these clients a client_secret in the form body is refused here with 401 invalid_client.
const BASIC_ONLY = new Set(['pixsrc-confidential', 'pixsrc-introspector']);
const FORM_ENDPOINTS = new Set(['/token', '/token/revocation', '/token/introspection']);

async function readAll(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  const url = new URL(req.url, issuer);
  if (req.method === 'POST' && FORM_ENDPOINTS.has(url.pathname)
      && (req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) {
    let raw;
    try {
      raw = await readAll(req);
    } catch {
      res.destroy(); // client went away mid-body
      return;
    }
    const form = new URLSearchParams(raw);
    if (form.has('client_secret') && BASIC_ONLY.has(form.get('client_id'))) {
      requestLog.push({
        method: 'POST', path: url.pathname, status: 401,
        auth_scheme: req.headers.authorization ? req.headers.authorization.split(' ')[0] : null,
        grant_type: form.get('grant_type'), client_id: form.get('client_id'), error: 'invalid_client',
      });
      sendJson(res, 401, {
        error: 'invalid_client',
        error_description: 'this client must authenticate with HTTP Basic (client_secret_basic)',
      }, { 'www-authenticate': 'Basic realm="pixsrc-test"' });
      return;
    }
    req.body = raw; // already read: oidc-provider then parses req.body (it warns once on stderr)
  }
  if (url.pathname.startsWith('/__test/')) {
    let status = 200;
    let body;
    try {
      if (url.pathname === '/__test/token' && url.searchParams.get('token')) {
        body = await tokenState(url.searchParams.get('token'));
      } else if (url.pathname === '/__test/requests') {
        body = requestLog;
      } else {
        status = 404;
        body = { error: 'not_found' };
      }
    } catch (err) {
      status = 500;
      body = { error: String(err) };
    }
    sendJson(res, status, body);
    return;
  }
  callback(req, res);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
if (env.PIXSRC_OIDC_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

process.stdout.write(`${JSON.stringify({ issuer, port, pid: process.pid })}\n`);
