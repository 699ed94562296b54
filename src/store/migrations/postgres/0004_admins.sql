-- Dashboard administrators, their sessions, and one-time setup links.

CREATE TABLE admins (
    name                 TEXT PRIMARY KEY,
    password_hash        TEXT NOT NULL,   -- argon2id PHC string
    created_at           BIGINT NOT NULL,
    created_by           TEXT NOT NULL,
    password_changed_at  BIGINT NOT NULL
);

-- Server-side sessions, referenced by a private cookie; only the id's SHA-256 is stored.
CREATE TABLE admin_sessions (
    id_hash     BYTEA PRIMARY KEY,
    admin       TEXT NOT NULL REFERENCES admins (name) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    source      TEXT
);
CREATE INDEX admin_sessions_admin ON admin_sessions (admin);

-- One-time links that create an administrator; single use, short-lived, stored hashed.
CREATE TABLE setup_links (
    token_hash  BYTEA PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    created_by  TEXT NOT NULL
);

CREATE TRIGGER admins_changed AFTER INSERT OR UPDATE OR DELETE ON admins
    FOR EACH STATEMENT EXECUTE FUNCTION keyturn_changed();
