-- OAuth clients, refresh-token families, and revocations.

CREATE TABLE clients (
    client_id    TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    -- SHA-256 of the secret: 256 random bits, so a slow password hash adds nothing.
    secret_hash  BLOB NOT NULL,
    scopes       TEXT NOT NULL,   -- JSON array of allowed scopes
    audiences    TEXT NOT NULL,   -- JSON array of allowed audiences
    max_ttl      INTEGER NOT NULL, -- seconds
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    disabled_at  INTEGER
);

-- Refresh tokens are opaque; only their SHA-256 is stored. Each use spends one and issues
-- the next in the same family; presenting a spent one revokes the family.
CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY,
    family      TEXT NOT NULL,
    sub         TEXT NOT NULL,
    client_id   TEXT,
    aud         TEXT NOT NULL,   -- JSON array
    scope       TEXT,
    claims      TEXT,            -- JSON object of custom claims carried to each access token
    alg         TEXT,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Which refresh family an access token came from, so revoking a family reaches its tokens.
ALTER TABLE issued_tokens ADD COLUMN family TEXT;
CREATE INDEX issued_tokens_family ON issued_tokens (family) WHERE family IS NOT NULL;
CREATE INDEX issued_tokens_client ON issued_tokens (client_id);

-- Revocations: the id is the feed's cursor. `cutoff` applies to sub and client_id entries
-- (tokens issued at or before it); `covers_until` is the latest exp of any token the entry
-- can cover, after which (plus leeway) it is pruned.
CREATE TABLE revocations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('jti', 'sub', 'client_id', 'kid')),
    value         TEXT NOT NULL,
    cutoff        INTEGER NOT NULL,
    covers_until  INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE INDEX revocations_covers_until ON revocations (covers_until);
