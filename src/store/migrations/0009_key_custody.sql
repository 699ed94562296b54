-- Where each key's private half lives: 'software' (sealed under the key-encryption key in
-- sealed_private, the only custody before this migration) or 'pkcs11' (inside a PKCS#11
-- token; its sealed_private is empty while it lives, NULL once it has ended, as the table's
-- CHECK wants of every key).
ALTER TABLE signing_keys ADD COLUMN custody TEXT NOT NULL DEFAULT 'software';
