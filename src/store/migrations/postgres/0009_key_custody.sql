-- Where each key's private half lives: 'software' (sealed under the key-encryption key in
-- sealed_private, the only custody before this migration).
ALTER TABLE signing_keys ADD COLUMN custody TEXT NOT NULL DEFAULT 'software';
