// node's openid-client (v6) as a client without a secret, as its README uses it:
// private_key_jwt (client.PrivateKeyJwt) at the token, introspection and revocation
// endpoints, a DPoP-bound token (client.getDPoPHandle; the server's nonces are taken up by
// the library itself), and a DPoP-protected request through keyturn's /auth/verify as a
// gateway forwards it (client.fetchProtectedResource).
// Usage: node secretless.mjs <issuer> <client_id> <PKCS#8 PEM file of the client's key> <kid>
// Prints one JSON object with what each step returned.
import * as client from 'openid-client';
import { importPKCS8 } from 'jose';
import { readFileSync } from 'node:fs';

const [issuer, clientId, keyFile, kid] = process.argv.slice(2);
const key = await importPKCS8(readFileSync(keyFile, 'utf8'), 'ES256');
const config = await client.discovery(new URL(issuer), clientId, undefined, client.PrivateKeyJwt({ key, kid }), {
  execute: [client.allowInsecureRequests],
});
const out = {};
const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
const grant = await client.clientCredentialsGrant(config, { scope: 'orders:read' }, { DPoP: dpop });
out.token_type = grant.token_type;
out.scope = grant.scope;
out.introspected = await client.tokenIntrospection(config, grant.access_token);
const resource = new URL('/auth/verify', issuer);
const forwarded = new Headers({ 'x-forwarded-method': 'GET', 'x-original-url': resource.href });
const verified = await client.fetchProtectedResource(config, grant.access_token, resource, 'GET', undefined, forwarded, {
  DPoP: dpop,
});
out.verify_status = verified.status;
out.verify_subject = verified.headers.get('x-auth-subject');
// The same token without its key's proof: a copied token is useless.
const copied = await fetch(resource, { headers: { authorization: `DPoP ${grant.access_token}`, ...Object.fromEntries(forwarded) } });
out.copied_status = copied.status;
await client.tokenRevocation(config, grant.access_token);
out.after_revocation = (await client.tokenIntrospection(config, grant.access_token)).active;
process.stdout.write(JSON.stringify(out) + '\n');
