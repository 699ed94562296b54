// node-oidc-provider as the bench's peer, configured from its documentation for the same job
// keyturn does: client_credentials with ES256-signed JWT access tokens (resource indicators,
// accessTokenFormat 'jwt'), introspection (of its opaque tokens, for the resource
// urn:opaque), state in memory (it writes nothing to disk), one ES256 signing key; and
// the refresh_token grant with rotation (its default for a web app's session), the refresh
// tokens minted ahead by GET /bench/refresh-tokens?n=N as its authorization-code grant would
// have (a grant with offline_access and the API's scope): the bench measures only the grant.
// Usage: node oidc-provider.mjs <port> <client_id> <client_secret>
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'bench' };

// State in memory, as with the quick-start adapter, but without its 1,000-entry LRU bound
// (the refresh bench holds tens of thousands of grants and refresh tokens at once): the
// adapter interface from the provider's documentation, over plain Maps.
const stores = new Map();
class MemoryAdapter {
  constructor(name) {
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }

  async upsert(id, payload) { this.store.set(id, payload); }

  async find(id) { return this.store.get(id); }

  async findByUid(uid) { for (const p of this.store.values()) if (p.uid === uid) return p; return undefined; }

  async findByUserCode(code) { for (const p of this.store.values()) if (p.userCode === code) return p; return undefined; }

  async consume(id) { const p = this.store.get(id); if (p) p.consumed = Math.floor(Date.now() / 1000); }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) {
    for (const store of stores.values()) for (const [id, p] of store) if (p.grantId === grantId) store.delete(id);
  }
}

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
    redirect_uris: ['https://app.example/callback'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    scope: 'offline_access read',
  }],
  jwks: { keys: [jwk] },
  scopes: ['offline_access', 'read'],
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:api',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => (resource === 'urn:opaque'
        ? { scope: 'read', accessTokenFormat: 'opaque' }
        : { scope: 'read', audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
    },
  },
});
// Refresh tokens for the bench, minted ahead outside the measured grant.
provider.use(async (ctx, next) => {
  if (ctx.path !== '/bench/refresh-tokens') return next();
  const client = await provider.Client.find(clientId);
  const out = [];
  for (let i = 0; i < Number(ctx.query.n ?? 1); i += 1) {
    const grant = new provider.Grant({ accountId: 'bench-user', clientId });
    grant.addOIDCScope('offline_access');
    grant.addResourceScope('urn:api', 'read');
    const grantId = await grant.save();
    const now = Math.floor(Date.now() / 1000);
    const token = new provider.RefreshToken({
      accountId: 'bench-user', client, grantId, scope: 'offline_access read', gty: 'authorization_code', resource: 'urn:api', iiat: now, authTime: now,
    });
    out.push(await token.save());
  }
  ctx.body = out;
});
provider.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
