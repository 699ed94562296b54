// node's openid-client (v6) against keyturn, as its README uses it: discovery, the
// client_credentials grant, introspection, revocation, and refresh.
// Usage: node oauth-client.mjs <issuer> <client_id> <client_secret> <scope> <refresh_token>
// Prints one JSON object with what each step returned.
import * as client from 'openid-client';

const [issuer, clientId, clientSecret, scope, refreshToken] = process.argv.slice(2);
const server = new URL(issuer);
const insecure = { execute: [client.allowInsecureRequests] };
const out = {};
// Discovery at the OpenID path (the default) and at RFC 8414's.
const config = await client.discovery(server, clientId, clientSecret, client.ClientSecretBasic(), insecure);
out.oidc_discovery = config.serverMetadata().token_endpoint;
const oauth2 = await client.discovery(server, clientId, clientSecret, client.ClientSecretPost(), { ...insecure, algorithm: 'oauth2' });
out.oauth2_discovery = oauth2.serverMetadata().introspection_endpoint;
const grant = await client.clientCredentialsGrant(config, { scope });
out.access_token = grant.access_token;
out.scope = grant.scope;
out.introspected = await client.tokenIntrospection(oauth2, grant.access_token);
await client.tokenRevocation(config, grant.access_token);
out.after_revocation = await client.tokenIntrospection(config, grant.access_token);
// A refresh token minted through keyturn's Admin API belongs to no client: redeemed without
// client authentication (client.None()).
const public_ = await client.discovery(server, 'refresher', undefined, client.None(), insecure);
const refreshed = await client.refreshTokenGrant(public_, refreshToken);
out.refreshed = { access_token: refreshed.access_token, refresh_token: refreshed.refresh_token };
process.stdout.write(JSON.stringify(out) + '\n');
