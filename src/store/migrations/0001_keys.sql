-- Signing keys, the audit log, and small named values.

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired', 'expired', 'revoked')),
    -- The published JWK (public members, x5c, x5t#S256), serialized once at creation.
    public_jwk     TEXT NOT NULL,
    -- AES-256-GCM ciphertext of the private key under the key-encryption key, kid as
    -- associated data. NULL once the key has expired or been revoked.
    sealed_private BLOB,
    created_at     INTEGER NOT NULL,
    published_at   INTEGER NOT NULL,
    activated_at   INTEGER,
    retired_at     INTEGER,
    expired_at     INTEGER,
    revoked_at     INTEGER,
    revoke_reason  TEXT,
    not_after      INTEGER NOT NULL,
    CHECK ((state IN ('expired', 'revoked')) = (sealed_private IS NULL))
);

-- Invariant 3: at most one active key per algorithm, enforced by the database itself.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (alg) WHERE state = 'active';
CREATE INDEX signing_keys_alg_state ON signing_keys (alg, state);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    source  TEXT,
    detail  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
