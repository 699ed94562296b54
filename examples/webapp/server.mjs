// A web app that signs its users in with keyturn, the way the JWT guides teach it:
//
//   - the app checks the password against its own user table (keyturn never sees it);
//   - it asks keyturn for an access token and a refresh token with its issuer API key
//     (`"refresh": true` starts a session) and keeps both in __Host- cookies: HttpOnly (no
//     script reads them), Secure, SameSite;
//   - its API verifies the access token on every request against keyturn's JWKS and follows
//     keyturn's revocation feed, so a logout anywhere is refused here within seconds;
//   - when the access token has expired, the server refreshes it silently with the refresh
//     cookie (a new access token and a new refresh token, same session);
//   - logout ends the session with the app's own key (RFC 7009); "log out everywhere" ends
//     every session of the user; each device's session can be ended on its own.
//
// Run it beside a running keyturn (see the README, "Sign your users in"):
//   KEYTURN_URL=http://127.0.0.1:8080 KEYTURN_ISSUER_KEY=kt_… KEYTURN_VERIFIER_KEY=kt_… node server.mjs
// It serves http://127.0.0.1:3000 (PORT). Browsers accept Secure cookies from localhost;
// anywhere else, serve it over HTTPS.

import crypto from 'node:crypto';
import fs from 'node:fs';
import express from 'express';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const KEYTURN = (process.env.KEYTURN_URL ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
const ISSUER_KEY = process.env.KEYTURN_ISSUER_KEY;
const VERIFIER_KEY = process.env.KEYTURN_VERIFIER_KEY;
const PORT = Number(process.env.PORT ?? 3000);
const AUDIENCE = process.env.AUDIENCE ?? 'webapp-api';
const ACCESS_TTL = process.env.ACCESS_TTL ?? '5m';
const USERS = new URL('./users.json', import.meta.url);

// --- the app's own users: scrypt hashes, compared in constant time -------------------------

const scrypt = (password, salt) => crypto.scryptSync(password, salt, 32, { N: 16384, r: 8, p: 1 });
const readUsers = () => JSON.parse(fs.readFileSync(USERS, 'utf8'));
const DUMMY = { salt: crypto.randomBytes(16).toString('base64'), hash: crypto.randomBytes(32).toString('base64') };

function passwordMatches(name, password) {
  const user = readUsers().users.find((u) => u.name === name);
  const { salt, hash } = user ?? DUMMY; // unknown names cost as much as known ones
  const ok = crypto.timingSafeEqual(scrypt(password, Buffer.from(salt, 'base64')), Buffer.from(hash, 'base64'));
  return ok && user !== undefined;
}

if (process.argv[2] === 'add-user') {
  const name = process.argv[3];
  const password = fs.readFileSync(0, 'utf8').trim();
  if (!name || password.length < 12) throw new Error('usage: node server.mjs add-user NAME < password (12+ characters)');
  const salt = crypto.randomBytes(16);
  const table = readUsers();
  table.users = table.users.filter((u) => u.name !== name);
  table.users.push({ name, salt: salt.toString('base64'), hash: scrypt(password, salt).toString('base64') });
  fs.writeFileSync(USERS, JSON.stringify(table, null, 2) + '\n');
  console.log(`user ${name} saved`);
  process.exit(0);
}
if (!ISSUER_KEY || !VERIFIER_KEY) {
  console.error('set KEYTURN_ISSUER_KEY (role issuer) and KEYTURN_VERIFIER_KEY (role verifier): keyturn apikey create --role …');
  process.exit(2);
}

// --- keyturn: discovery, tokens, sessions ---------------------------------------------------

const metadata = await (await fetch(`${KEYTURN}/.well-known/oauth-authorization-server`)).json();
const JWKS = createRemoteJWKSet(new URL(metadata.jwks_uri), { cacheMaxAge: 300_000 });

async function keyturn(path, { key = ISSUER_KEY, json, form } = {}) {
  const headers = { authorization: `Bearer ${key}` };
  let body;
  if (json) [headers['content-type'], body] = ['application/json', JSON.stringify(json)];
  if (form) [headers['content-type'], body] = ['application/x-www-form-urlencoded', new URLSearchParams(form).toString()];
  const res = await fetch(`${KEYTURN}${path}`, { method: body ? 'POST' : 'GET', headers, body });
  const answer = await res.json().catch(() => ({}));
  return { ok: res.ok, status: res.status, answer };
}

// The revocation feed: every jti, sid, sub, client or key revoked anywhere, polled every
// 5 seconds. A session this app ends is refused here at once.
const revoked = { jti: new Set(), sid: new Set(), kid: new Set(), sub: new Map(), client_id: new Map() };
let since = 0;
async function pollRevocations() {
  const { ok, answer } = await keyturn(`/api/v1/revocations?since=${since}`, { key: VERIFIER_KEY });
  if (!ok) throw new Error(`revocation feed: ${answer.error_description ?? 'unavailable'}`);
  for (const r of answer.revocations) {
    if (r.type === 'sub' || r.type === 'client_id') {
      const cutoff = Date.parse(r.issued_before) / 1000;
      revoked[r.type].set(r.value, Math.max(cutoff, revoked[r.type].get(r.value) ?? cutoff));
    } else revoked[r.type]?.add(r.value);
  }
  since = answer.next;
}
const isRevoked = (p, kid) => revoked.jti.has(p.jti) || revoked.sid.has(p.sid) || revoked.kid.has(kid)
  || p.iat <= (revoked.sub.get(p.sub) ?? -Infinity) || p.iat <= (revoked.client_id.get(p.client_id) ?? -Infinity);
await pollRevocations();
setInterval(() => pollRevocations().catch((e) => console.error(e.message)), 5_000).unref();

// --- cookies ----------------------------------------------------------------------------------

function cookies(req) {
  const out = {};
  for (const pair of (req.headers.cookie ?? '').split(';')) {
    const at = pair.indexOf('=');
    if (at > 0) out[pair.slice(0, at).trim()] = decodeURIComponent(pair.slice(at + 1).trim());
  }
  return out;
}
const setCookie = (res, name, value, maxAge, sameSite = 'Lax') =>
  res.append('Set-Cookie', `${name}=${value}; Path=/; Max-Age=${maxAge}; HttpOnly; Secure; SameSite=${sameSite}`);
function keepTokens(res, minted) {
  setCookie(res, '__Host-access', minted.access_token, minted.expires_in);
  setCookie(res, '__Host-refresh', minted.refresh_token, 14 * 86400);
}
function forgetTokens(res) {
  setCookie(res, '__Host-access', '', 0);
  setCookie(res, '__Host-refresh', '', 0);
}

// --- who is signed in: verify, or refresh silently -------------------------------------------

async function verified(token) {
  const { payload, protectedHeader } = await jwtVerify(token, JWKS, { issuer: metadata.issuer, audience: AUDIENCE, typ: 'at+jwt' });
  if (isRevoked(payload, protectedHeader.kid)) throw new Error('revoked');
  return payload;
}

// The signed-in user's claims (req.user), refreshing an expired access token with the
// refresh cookie on the way; undefined when nobody is signed in.
async function signedIn(req, res) {
  const jar = cookies(req);
  if (jar['__Host-access']) {
    try {
      return await verified(jar['__Host-access']);
    } catch {
      // expired or revoked: try the refresh token
    }
  }
  if (!jar['__Host-refresh']) return undefined;
  const { ok, answer } = await keyturn('/oauth/token', { form: { grant_type: 'refresh_token', refresh_token: jar['__Host-refresh'] } });
  if (!ok) {
    forgetTokens(res);
    return undefined;
  }
  keepTokens(res, answer);
  req.refreshed = true;
  return verified(answer.access_token).catch(() => undefined);
}

// --- CSRF: a token per browser in a Strict cookie, repeated in every form, and the origin ----

function csrfToken(req, res) {
  const existing = cookies(req)['__Host-csrf'];
  if (existing) return existing;
  const token = crypto.randomBytes(24).toString('base64url');
  setCookie(res, '__Host-csrf', token, 86400, 'Strict');
  return token;
}
function csrfOk(req) {
  const cookie = cookies(req)['__Host-csrf'] ?? '';
  const sent = String(req.body?.csrf ?? '');
  const same = cookie.length > 0 && cookie.length === sent.length && crypto.timingSafeEqual(Buffer.from(cookie), Buffer.from(sent));
  return same && req.headers['sec-fetch-site'] !== 'cross-site';
}

// --- pages --------------------------------------------------------------------------------------

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;
const form = (action, csrf, label, extra = '') =>
  `<form method="post" action="${action}"><input type="hidden" name="csrf" value="${esc(csrf)}">${extra}<button type="submit">${esc(label)}</button></form>`;

const app = express();
app.disable('x-powered-by');
app.use(express.urlencoded({ extended: false, limit: '4kb' }));
app.use((req, res, next) => {
  res.set({ 'Cache-Control': 'no-store', 'Content-Security-Policy': "default-src 'none'; form-action 'self'; frame-ancestors 'none'", 'Referrer-Policy': 'no-referrer' });
  next();
});

app.get('/', async (req, res) => {
  const user = await signedIn(req, res);
  const csrf = csrfToken(req, res);
  if (!user) return res.send(page('Example app', '<p>Signed out.</p><p><a href="/login">Sign in</a></p>'));
  const { answer } = await keyturn(`/api/v1/sessions?sub=${encodeURIComponent(user.sub)}&active=true`);
  const rows = (answer.sessions ?? []).map((s) => `<li>${esc(s.label ?? 'a device')}, since ${esc(s.started_at)}${s.session_id === user.sid ? ' (this one)' : ''}
    ${form(`/sessions/${encodeURIComponent(s.session_id)}/end`, csrf, 'End')}</li>`).join('');
  res.send(page('Example app', `<p id="who">Signed in as ${esc(user.sub)}</p>
    <p><a href="/api/me">Call the API</a></p>
    ${form('/logout', csrf, 'Log out')}${form('/logout-everywhere', csrf, 'Log out everywhere')}
    <h2>Your sessions</h2><ul>${rows}</ul>`));
});

app.get('/login', (req, res) => {
  const csrf = csrfToken(req, res);
  res.send(page('Sign in', `<form method="post" action="/login"><input type="hidden" name="csrf" value="${esc(csrf)}">
    <label>Name <input id="name" name="name" autocomplete="username"></label>
    <label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
    <button type="submit">Sign in</button></form>`));
});

app.post('/login', async (req, res) => {
  if (!csrfOk(req)) return res.status(403).send(page('Refused', '<p>This form expired or came from another site.</p>'));
  const name = String(req.body.name ?? '');
  if (!passwordMatches(name, String(req.body.password ?? ''))) {
    return res.status(401).send(page('Sign in', '<p>Wrong name or password. <a href="/login">Try again</a></p>'));
  }
  const label = String(req.headers['user-agent'] ?? 'a browser').slice(0, 200);
  const { ok, answer } = await keyturn('/api/v1/tokens', { json: { sub: name, aud: AUDIENCE, ttl: ACCESS_TTL, refresh: true, session_label: label } });
  if (!ok) return res.status(503).send(page('Unavailable', `<p>${esc(answer.error_description ?? 'keyturn did not answer')}</p>`));
  keepTokens(res, answer);
  res.redirect(303, '/');
});

app.post('/logout', async (req, res) => {
  if (!csrfOk(req)) return res.status(403).send(page('Refused', '<p>This form expired or came from another site.</p>'));
  const jar = cookies(req);
  // RFC 7009 with the app's own key: either token ends the whole session, on every verifier.
  const token = jar['__Host-refresh'] ?? jar['__Host-access'];
  if (token) await keyturn('/oauth/revoke', { form: { token } });
  const user = jar['__Host-access'] ? await verified(jar['__Host-access']).catch(() => undefined) : undefined;
  if (user?.sid) revoked.sid.add(user.sid);
  forgetTokens(res);
  res.redirect(303, '/');
});

app.post('/logout-everywhere', async (req, res) => {
  if (!csrfOk(req)) return res.status(403).send(page('Refused', '<p>This form expired or came from another site.</p>'));
  const user = await signedIn(req, res);
  if (user) await keyturn('/api/v1/sessions/end', { json: { sub: user.sub, reason: 'logged out everywhere' } });
  await pollRevocations().catch(() => {});
  forgetTokens(res);
  res.redirect(303, '/');
});

app.post('/sessions/:id/end', async (req, res) => {
  if (!csrfOk(req)) return res.status(403).send(page('Refused', '<p>This form expired or came from another site.</p>'));
  const user = await signedIn(req, res);
  if (!user) return res.redirect(303, '/login');
  // keyturn ends only sessions this app's key minted; the app ends only its user's own.
  const { answer } = await keyturn(`/api/v1/sessions?sub=${encodeURIComponent(user.sub)}&active=true`);
  if ((answer.sessions ?? []).some((s) => s.session_id === req.params.id)) {
    await keyturn(`/api/v1/sessions/${encodeURIComponent(req.params.id)}/end`, { json: { reason: 'ended from another device' } });
    revoked.sid.add(req.params.id);
  }
  res.redirect(303, '/');
});

// The API: every call verified against the JWKS and the feed (and refreshed if need be).
app.get('/api/me', async (req, res) => {
  const user = await signedIn(req, res);
  if (!user) return res.status(401).json({ error: 'invalid_token' });
  res.json({ sub: user.sub, sid: user.sid, jti: user.jti, exp: user.exp, refreshed: req.refreshed === true });
});

const server = app.listen(PORT, '127.0.0.1', () => console.log(`example app on http://127.0.0.1:${server.address().port}`));
