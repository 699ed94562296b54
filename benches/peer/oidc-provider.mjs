// node-oidc-provider as the bench's peer, configured from its documentation for the same job
// keyturn does: client_credentials with ES256-signed JWT access tokens (resource indicators,
// accessTokenFormat 'jwt'), introspection (of its opaque tokens, for the resource
// urn:opaque), its in-memory adapter (it writes nothing to disk), one ES256 signing key.
// Usage: node oidc-provider.mjs <port> <client_id> <client_secret>
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'bench' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    scope: 'read',
  }],
  jwks: { keys: [jwk] },
  scopes: ['read'],
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
provider.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
