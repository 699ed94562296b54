//! The data directory and the secret files keyturn creates on first start: the
//! key-encryption key and Rocket's cookie secret, each 0600, each written atomically.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::keys::sealed::{Kek, KEK_LEN};

/// Paths inside the data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
    pub database: PathBuf,
    pub secret_key: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        DataDir { root: root.to_owned(), database: root.join("keyturn.db"), secret_key: root.join("cookie-secret") }
    }

    /// Creates the directory (0700) if it is missing and proves it is writable by creating
    /// and removing a probe file. Refuses, naming the path, when it cannot.
    pub fn prepare(&self) -> Result<(), Error> {
        let err = |reason: String| Error::DataDir { path: self.root.clone(), reason };
        if self.root.exists() && !self.root.is_dir() {
            return Err(err("exists but is not a directory".into()));
        }
        if !self.root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|e| err(format!("cannot be created: {e}")))?;
        }
        let probe = self.root.join(format!(".keyturn-write-probe-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| err(format!("is not writable: {e}")))?;
        fs::remove_file(&probe).map_err(|e| err(format!("is not writable: {e}")))?;
        Ok(())
    }
}

/// Writes `bytes` to `path` with mode 0600: a temporary file in the same directory, synced,
/// then renamed over, so a crash leaves either no file or the whole file.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The self-signed certificate and key of `serve --tls-self-signed`, made on first use in the
/// data dir (for the configured address, `localhost` and 127.0.0.1) and kept across restarts.
pub fn self_signed_tls(config: &crate::config::Config) -> Result<(PathBuf, PathBuf), Error> {
    let dir = DataDir::new(&config.data_dir);
    dir.prepare()?;
    let (cert, key) = (dir.root.join("tls-self-signed.pem"), dir.root.join("tls-self-signed.key"));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), config.address.to_string()];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::DataDir { path: cert.clone(), reason: format!("cannot make a certificate: {e}") })?;
    let key_pem = Zeroizing::new(made.signing_key.serialize_pem());
    write_secret_file(&key, key_pem.as_bytes())
        .map_err(|e| Error::DataDir { path: key.clone(), reason: e.to_string() })?;
    fs::write(&cert, made.cert.pem()).map_err(|e| Error::DataDir { path: cert.clone(), reason: e.to_string() })?;
    tracing::info!(path = %cert.display(), "made a self-signed TLS certificate for trying HTTPS locally");
    Ok((cert, key))
}

/// Reads the key-encryption key: 32 raw bytes, or their base64 text (as
/// `openssl rand -base64 32` writes it).
pub fn read_kek(path: &Path) -> Result<Kek, Error> {
    let err = |reason: String| Error::Kek { path: path.to_owned(), reason };
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| err(format!("cannot be read: {e}")))?);
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "key-encryption key file is readable by group or others; chmod 600 it");
        }
    }
    let raw = if bytes.len() == KEK_LEN {
        bytes
    } else {
        // Not 32 raw bytes: base64 text of 32 bytes, or a file that is neither.
        let wrong = |what: String| {
            err(format!(
                "must hold exactly {KEK_LEN} random bytes, raw or as base64 text (`head -c {KEK_LEN} /dev/urandom > FILE`); it holds {what}"
            ))
        };
        let text = std::str::from_utf8(&bytes).map(str::trim).ok().filter(|t| !t.is_empty());
        let decoded = text.and_then(|t| STANDARD.decode(t).ok()).map(Zeroizing::new);
        match decoded {
            Some(d) if d.len() == KEK_LEN => d,
            Some(d) => return Err(wrong(format!("base64 text of {} bytes", d.len()))),
            None => return Err(wrong(format!("{} bytes", bytes.len()))),
        }
    };
    Kek::from_bytes(&raw).map_err(|e| err(e.to_string()))
}

/// Creates a new random key-encryption key file.
pub fn create_kek(path: &Path) -> Result<Kek, Error> {
    let err = |reason: String| Error::Kek { path: path.to_owned(), reason };
    let bytes = Kek::generate_bytes().map_err(|e| err(e.to_string()))?;
    write_secret_file(path, bytes.as_ref()).map_err(|e| err(format!("cannot be created: {e}")))?;
    tracing::info!(path = %path.display(), "created a new key-encryption key");
    Kek::from_bytes(bytes.as_ref()).map_err(|e| err(e.to_string()))
}

/// Reads the cookie secret from the data dir, creating it (64 random bytes, base64) if absent.
/// The cookie secret kept in `path`, if the file exists; an error naming the file and the fix
/// when it cannot be read or is not a valid secret. Reads only, so start-up can check it
/// before anything is written.
pub fn existing_cookie_secret(path: &Path) -> Result<Option<Zeroizing<String>>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let err = |reason: String| Error::DataDir { path: path.to_owned(), reason };
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| err(format!("cannot be read: {e}")))?);
    let secret = Zeroizing::new(text.trim().to_owned());
    crate::config::validate_secret_key(&secret).map_err(|why| {
        err(format!(
            "is not a valid cookie secret ({why}): delete it to have a new one generated at the next start (every dashboard session then ends), or restore the original"
        ))
    })?;
    Ok(Some(secret))
}

pub fn cookie_secret(path: &Path) -> Result<Zeroizing<String>, Error> {
    let err = |reason: String| Error::DataDir { path: path.to_owned(), reason };
    if let Some(existing) = existing_cookie_secret(path)? {
        return Ok(existing);
    }
    let mut bytes = Zeroizing::new([0u8; 64]);
    aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| err("the random number generator failed".into()))?;
    let text = Zeroizing::new(STANDARD.encode(bytes.as_ref()));
    write_secret_file(path, text.as_bytes()).map_err(|e| err(format!("cannot be created: {e}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_private_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek");
        create_kek(&path).expect("create");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).expect("read").len(), KEK_LEN);
        read_kek(&path).expect("reads back");
        let s1 = cookie_secret(&dir.path().join("c")).expect("create");
        let s2 = cookie_secret(&dir.path().join("c")).expect("read");
        assert_eq!(*s1, *s2);
    }

    #[test]
    fn base64_kek_accepted_and_bad_length_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek");
        fs::write(&path, format!("{}\n", STANDARD.encode([7u8; 32]))).expect("write");
        read_kek(&path).expect("base64 form");
        fs::write(&path, [1u8; 16]).expect("write");
        assert!(read_kek(&path).is_err());
    }

    #[test]
    fn data_dir_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("write");
        let e = DataDir::new(&file).prepare().expect_err("a file");
        assert!(e.to_string().contains("not a directory"), "{e}");
        let e = DataDir::new(&file.join("sub")).prepare().expect_err("under a file");
        assert!(e.to_string().contains("cannot be created"), "{e}");
    }
}
