// A resource server as express-oauth2-jwt-bearer's README sets one up: `auth()` with the
// issuer's base URL (discovery, then the JWKS through jose's createRemoteJWKSet with its
// defaults: 10 min cache, 30 s cooldown before refetching for an unknown kid) and the API's
// audience. Usage: node express-rs.mjs <issuer-base-url> <audience>
// Prints "listening <port>"; GET /orders answers 200 {"sub": …} or the library's error.
import express from 'express';
import { auth } from 'express-oauth2-jwt-bearer';

const [issuerBaseURL, audience] = process.argv.slice(2);
const app = express();
app.use(auth({ issuerBaseURL, audience }));
app.get('/orders', (req, res) => res.json({ sub: req.auth.payload.sub, alg: req.auth.header.alg }));
app.use((err, req, res, next) => res.status(err.status ?? 500).json({ error: err.code ?? 'error', message: err.message }));
const server = app.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
