-- Live keys are read on every tick; history grows without bound, so index the state.
CREATE INDEX signing_keys_state ON signing_keys (state);

-- Issued-token records, API keys, stored policy settings, rotation requests, the rotator lease.

-- Every token keyturn signs, never the token itself: enough to know how long its key must
-- stay published, and (later) to revoke by subject or client.
CREATE TABLE issued_tokens (
    jti        TEXT PRIMARY KEY,
    sub        TEXT NOT NULL,
    kid        TEXT NOT NULL REFERENCES signing_keys (kid),
    aud        TEXT NOT NULL,  -- JSON array of audiences
    client_id  TEXT,
    scope      TEXT,
    iat        INTEGER NOT NULL,
    exp        INTEGER NOT NULL,
    issued_by  TEXT NOT NULL
);
CREATE INDEX issued_tokens_kid_exp ON issued_tokens (kid, exp);
CREATE INDEX issued_tokens_sub ON issued_tokens (sub);
CREATE INDEX issued_tokens_iat ON issued_tokens (iat);

-- API keys: the secret part is stored only as its SHA-256 (it is 256 random bits, so a slow
-- password hash adds nothing).
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'issuer', 'verifier')),
    secret_hash  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    revoked_at   INTEGER
);

-- Policy values edited through the API (a configured value pins and overrides them).
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Graceful rotation requests, one per algorithm; spent once a key activates after it.
CREATE TABLE rotation_requests (
    alg           TEXT PRIMARY KEY,
    requested_at  INTEGER NOT NULL,
    requested_by  TEXT NOT NULL
);

-- The rotator lease: only its holder applies scheduled lifecycle transitions.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
