// Verifies keyturn tokens with node's jose, the way a resource server would: a remote JWKS
// cached for the server's max-age, with jose's default 30 s cooldown on refetching for an
// unknown kid. So a token whose key was not yet in a fresh cache would fail: only
// publishing keys before they sign keeps every verification passing.
// Usage: node verify.mjs <jwks-url> <issuer> <audience> <max-age-ms>
// Reads "<id> <token>" lines on stdin, writes "<id> ok <kid>" or "<id> fail <reason>".
import { createRemoteJWKSet, jwtVerify } from 'jose';
import readline from 'node:readline';

const [url, issuer, audience, maxAge] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(url), { cacheMaxAge: Number(maxAge) });
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const [id, token] = line.trim().split(' ');
  try {
    const { protectedHeader } = await jwtVerify(token, jwks, { issuer, audience, typ: 'at+jwt' });
    process.stdout.write(`${id} ok ${protectedHeader.kid}\n`);
  } catch (e) {
    process.stdout.write(`${id} fail ${e.code ?? e.name}\n`);
  }
}
