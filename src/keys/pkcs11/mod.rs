//! Signing keys inside a PKCS#11 token (a hardware security module, or SoftHSM2 in the
//! tests), through the `cryptoki` crate.
//!
//! A key pair is generated inside the token as token objects: the private half sensitive and
//! never extractable, both halves labelled with the key's kid (`CKA_LABEL`, also `CKA_ID`)
//! and found by it. keyturn reads the public half back to publish it and builds every JWS
//! itself; only the signature comes from the token: ECDSA as raw `r‖s` over a digest keyturn
//! computes (`CKM_ECDSA`), Ed25519 (`CKM_EDDSA`), RSA PKCS#1 v1.5 and PSS over SHA-256
//! (`CKM_SHA256_RSA_PKCS`, `CKM_SHA256_RSA_PKCS_PSS`). What the token cannot do is named when
//! it is opened ([`Token::supports`]).
//!
//! Sessions are pooled: each signature takes one (opening another while all are busy) and
//! gives it back. The login is the application's for the whole token, made once when the
//! token is opened; the PIN is read from its file then and kept nowhere else.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use zeroize::Zeroizing;

use super::generate::PublicParts;
use super::{Algorithm, KeyId, RsaBits};

/// Why the token could not be opened or used. Never carries the PIN.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the PKCS#11 module {path} cannot be loaded: {reason}")]
    Module { path: String, reason: String },
    #[error("no PKCS#11 token labelled '{label}' is present (tokens seen: {seen})")]
    Absent { label: String, seen: String },
    #[error("the PIN in {path} cannot be read: {reason}")]
    PinFile { path: String, reason: String },
    #[error("the token '{label}' refused the PIN from {path} (a wrong PIN, or the token is locked)")]
    WrongPin { label: String, path: String },
    #[error("the token '{label}' cannot do {alg}: it lacks {mechanism}")]
    Unsupported { label: String, alg: Algorithm, mechanism: &'static str },
    #[error("the token has no key {0}")]
    Missing(KeyId),
    #[error("the token failed: {0}")]
    Failed(String),
}

impl From<CkError> for TokenError {
    fn from(e: CkError) -> Self {
        TokenError::Failed(e.to_string())
    }
}

/// A module loaded into the process: its context, and what keeps calls out of it while it
/// is initialised anew.
struct Module {
    context: Pkcs11,
    /// Every call into the module holds it shared; initialising the module anew
    /// (`C_Finalize`, `C_Initialize`) holds it alone (no call may be under way then).
    gate: RwLock<()>,
    /// How many times the module was initialised anew. Sessions and object handles belong to
    /// one initialisation: a token that made them under an older one forgets them.
    generation: AtomicU64,
}

impl Module {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `C_Finalize` then `C_Initialize`: what makes a module that lost its device see it
    /// again (SoftHSM2 reads its token directory when initialised, and a token whose files
    /// went away answers `CKR_GENERAL_ERROR` until then). The caller holds the gate alone.
    fn initialise_anew(&self) -> Result<(), TokenError> {
        match self.context.clone().finalize() {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            Err(e) => return Err(e.into()),
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        initialise(&self.context).map_err(|e| TokenError::Failed(e.to_string()))
    }
}

fn initialise(context: &Pkcs11) -> Result<(), CkError> {
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The module at `path`, loaded and initialised once per process and kept: a PKCS#11 module
/// is initialised for the whole process, and unloading it (when its last handle went) would
/// end every session any other token of it had open.
fn loaded(path: &Path) -> Result<Arc<Module>, TokenError> {
    static LOADED: Mutex<Vec<(std::path::PathBuf, Arc<Module>)>> = Mutex::new(Vec::new());
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, module)) = loaded.iter().find(|(p, _)| p == path) {
        return Ok(module.clone());
    }
    let shown = path.display().to_string();
    let context = Pkcs11::new(path).map_err(|e| TokenError::Module { path: shown.clone(), reason: e.to_string() })?;
    initialise(&context).map_err(|e| TokenError::Module { path: shown, reason: e.to_string() })?;
    let module = Arc::new(Module { context, gate: RwLock::new(()), generation: AtomicU64::new(0) });
    loaded.push((path.to_owned(), module.clone()));
    Ok(module)
}

/// The slot of the token labelled `label`.
fn find_slot(context: &Pkcs11, label: &str) -> Result<Slot, TokenError> {
    let mut seen = Vec::new();
    for slot in context.get_slots_with_token()? {
        let name = context.get_token_info(slot)?.label().trim().to_owned();
        if name == label {
            return Ok(slot);
        }
        seen.push(format!("'{name}'"));
    }
    let seen = if seen.is_empty() { "none".to_owned() } else { seen.join(", ") };
    Err(TokenError::Absent { label: label.to_owned(), seen })
}

/// A session on `slot` with the user logged in with the PIN from `pin_file`.
fn login(context: &Pkcs11, slot: Slot, label: &str, pin_file: &Path) -> Result<Session, TokenError> {
    let pin_path = pin_file.display().to_string();
    let pin = std::fs::read_to_string(pin_file)
        .map(Zeroizing::new)
        .map_err(|e| TokenError::PinFile { path: pin_path.clone(), reason: e.to_string() })?;
    let pin = AuthPin::new(pin.lines().next().unwrap_or_default().trim().into());
    let session = context.open_rw_session(slot)?;
    match session.login(UserType::User, Some(&pin)) {
        // The login belongs to the process: a token this process already opened is logged
        // in, and its PIN is not checked a second time.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLocked | RvError::PinInvalid, _)) => {
            Err(TokenError::WrongPin { label: label.to_owned(), path: pin_path })
        }
        Err(e) => Err(e.into()),
    }
}

/// Where the token was found, under which initialisation of its module.
#[derive(Clone, Copy)]
struct Attached {
    slot: Slot,
    generation: u64,
}

/// An open, logged-in token.
pub struct Token {
    module: Arc<Module>,
    label: String,
    attached: Mutex<Attached>,
    /// Idle sessions, logged in (the login belongs to the token, not the session).
    idle: Mutex<Vec<Session>>,
    /// Where the PIN is read from, again when the token must be logged in anew.
    pin_file: std::path::PathBuf,
    /// The private key object of each kid signed with, so a signature needs no search (a
    /// search costs SoftHSM2 more than the signature). Forgotten when the key is destroyed,
    /// or when the token no longer knows the handle (someone deleted the object).
    handles: Mutex<std::collections::HashMap<KeyId, ObjectHandle>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("label", &self.label).finish_non_exhaustive()
    }
}

impl Token {
    /// Loads `module`, finds the token labelled `label` and logs in with the PIN in
    /// `pin_file` (its first line). Each failure says which of the three it was.
    pub fn open(module: &Path, label: &str, pin_file: &Path) -> Result<Token, TokenError> {
        let module = loaded(module)?;
        let _in = module.gate.read().unwrap_or_else(PoisonError::into_inner);
        let generation = module.generation();
        let slot = find_slot(&module.context, label)?;
        let session = login(&module.context, slot, label, pin_file)?;
        drop(_in);
        Ok(Token {
            module,
            label: label.to_owned(),
            attached: Mutex::new(Attached { slot, generation }),
            pin_file: pin_file.to_owned(),
            idle: Mutex::new(vec![session]),
            handles: Mutex::default(),
        })
    }

    fn context(&self) -> &Pkcs11 {
        &self.module.context
    }

    /// Forgets every idle session and cached handle. Under the initialisation they were made
    /// in they are closed; under a later one they are only forgotten (their numbers may now
    /// name another's sessions and objects, which closing would end).
    fn forget_sessions(&self) {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        let current =
            self.attached.lock().unwrap_or_else(PoisonError::into_inner).generation == self.module.generation();
        for session in idle {
            if current {
                drop(session);
            } else {
                std::mem::forget(session);
            }
        }
    }

    /// Finds the token again and logs in anew, the PIN read again from its file.
    fn attach(&self) -> Result<(), TokenError> {
        let generation = self.module.generation();
        let slot = find_slot(self.context(), &self.label)?;
        let session = login(self.context(), slot, &self.label, &self.pin_file)?;
        *self.attached.lock().unwrap_or_else(PoisonError::into_inner) = Attached { slot, generation };
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(session);
        Ok(())
    }

    /// After the token failed (its device gone and back) under the module's initialisation
    /// `seen`: forgets every session and handle and logs in again; when the token cannot be
    /// found or logged in to, initialises the module anew first, unless another caller has
    /// already done so since `seen`. Callers that fail together recover once.
    fn recover(&self, seen: u64) -> Result<(), TokenError> {
        let _alone = self.module.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.forget_sessions();
        if self.module.generation() == seen {
            match self.attach() {
                Err(TokenError::Failed(_) | TokenError::Absent { .. }) => self.module.initialise_anew()?,
                done => return done,
            }
        }
        self.attach()
    }

    /// `op`, and once more after [`Self::recover`] when the token failed or lost the key:
    /// a token that went away and came back serves again by itself.
    fn recovering<T>(&self, op: impl Fn() -> Result<T, TokenError>) -> Result<T, TokenError> {
        let seen = self.module.generation();
        match op() {
            Err(TokenError::Failed(_) | TokenError::Missing(_)) => {
                self.recover(seen)?;
                op()
            }
            done => done,
        }
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the token can make and use keys of `alg`; the error names what it lacks.
    pub fn supports(&self, alg: Algorithm) -> Result<(), TokenError> {
        let _in = self.module.gate.read().unwrap_or_else(PoisonError::into_inner);
        let slot = self.attached.lock().unwrap_or_else(PoisonError::into_inner).slot;
        let have = self.context().get_mechanism_list(slot)?;
        let need: &[(MechanismType, &'static str)] = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                &[(MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"), (MechanismType::ECDSA, "CKM_ECDSA")]
            }
            Algorithm::EdDSA => &[
                (MechanismType::ECC_EDWARDS_KEY_PAIR_GEN, "CKM_EC_EDWARDS_KEY_PAIR_GEN"),
                (MechanismType::EDDSA, "CKM_EDDSA"),
            ],
            Algorithm::RS256 => &[
                (MechanismType::RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN"),
                (MechanismType::SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS"),
            ],
            Algorithm::PS256 => &[
                (MechanismType::RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN"),
                (MechanismType::SHA256_RSA_PKCS_PSS, "CKM_SHA256_RSA_PKCS_PSS"),
            ],
        };
        match need.iter().find(|(m, _)| !have.contains(m)) {
            Some((_, mechanism)) => Err(TokenError::Unsupported { label: self.label.clone(), alg, mechanism }),
            None => Ok(()),
        }
    }

    /// Runs `f` on an idle session (a new one when every session is busy), then keeps it.
    /// Fails when the module was initialised anew since the token's sessions were made.
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T, TokenError>) -> Result<T, TokenError> {
        let _in = self.module.gate.read().unwrap_or_else(PoisonError::into_inner);
        let attached = *self.attached.lock().unwrap_or_else(PoisonError::into_inner);
        if attached.generation != self.module.generation() {
            return Err(TokenError::Failed("the module was initialised anew".into()));
        }
        let taken = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let session = match taken {
            Some(s) => s,
            None => self.context().open_rw_session(attached.slot)?,
        };
        let out = f(&session);
        // A session the token failed under is closed (dropped), not kept.
        if !matches!(&out, Err(TokenError::Failed(_))) {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(session);
        }
        out
    }

    /// Generates a key pair for `alg` inside the token and labels both halves with its kid
    /// (the RFC 7638 thumbprint of the public half, known only once it exists). Returns the
    /// public half.
    pub fn generate(&self, alg: Algorithm, rsa_bits: RsaBits) -> Result<(KeyId, PublicParts), TokenError> {
        let (mechanism, mut public) = match alg {
            Algorithm::ES256 => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P256_OID.to_vec())]),
            Algorithm::ES384 => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P384_OID.to_vec())]),
            Algorithm::EdDSA => (Mechanism::EccEdwardsKeyPairGen, vec![Attribute::EcParams(ED25519_NAME.to_vec())]),
            Algorithm::RS256 | Algorithm::PS256 => {
                let bits: u64 = match rsa_bits {
                    RsaBits::B2048 => 2048,
                    RsaBits::B3072 => 3072,
                    RsaBits::B4096 => 4096,
                };
                (
                    Mechanism::RsaPkcsKeyPairGen,
                    vec![Attribute::ModulusBits(Ulong::new(bits)), Attribute::PublicExponent(vec![1, 0, 1])],
                )
            }
        };
        public.extend([Attribute::Token(true), Attribute::Verify(true), Attribute::Private(false)]);
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ];
        self.recovering(|| {
            self.supports(alg)?;
            self.with_session(|s| {
                let (pub_handle, priv_handle) = s.generate_key_pair(&mechanism, &public, &private)?;
                let parts = match public_parts(s, pub_handle, alg) {
                    Ok(parts) => parts,
                    Err(e) => {
                        let _ = s.destroy_object(pub_handle);
                        let _ = s.destroy_object(priv_handle);
                        return Err(e);
                    }
                };
                let kid = parts.thumbprint();
                let name = kid.as_str().as_bytes().to_vec();
                for handle in [pub_handle, priv_handle] {
                    s.update_attributes(handle, &[Attribute::Label(name.clone()), Attribute::Id(name.clone())])?;
                }
                Ok((kid, parts))
            })
        })
    }

    /// The private key object labelled `kid`.
    fn private_key(&self, s: &Session, kid: &KeyId) -> Result<ObjectHandle, TokenError> {
        let found = s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(kid.as_str().as_bytes().to_vec()),
        ])?;
        found.into_iter().next().ok_or_else(|| TokenError::Missing(kid.clone()))
    }

    /// Whether the token holds the private key labelled `kid`, usable for signing and never
    /// extractable.
    pub fn check(&self, kid: &KeyId) -> Result<(), TokenError> {
        self.recovering(|| self.check_once(kid))
    }

    fn check_once(&self, kid: &KeyId) -> Result<(), TokenError> {
        self.with_session(|s| {
            let handle = self.private_key(s, kid)?;
            let attrs = s.get_attributes(handle, &[AttributeType::Sign, AttributeType::Extractable])?;
            let usable = attrs.iter().any(|a| matches!(a, Attribute::Sign(true)))
                && attrs.iter().any(|a| matches!(a, Attribute::Extractable(false)));
            if usable {
                Ok(())
            } else {
                Err(TokenError::Failed(format!("key {kid} in the token cannot sign or can be extracted")))
            }
        })
    }

    /// The JWS signature of `message` by the key labelled `kid`, for `alg`.
    pub fn sign(&self, kid: &KeyId, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.recovering(|| self.sign_once(kid, alg, message))
    }

    fn sign_once(&self, kid: &KeyId, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.with_session(|s| {
            let cached = self.handles.lock().unwrap_or_else(PoisonError::into_inner).get(kid).copied();
            if let Some(key) = cached {
                match self.sign_with(s, key, alg, message) {
                    Err(TokenError::Failed(_)) => {
                        // The handle may be gone (the object deleted): search again, once.
                        self.handles.lock().unwrap_or_else(PoisonError::into_inner).remove(kid);
                    }
                    done => return done,
                }
            }
            let key = self.private_key(s, kid)?;
            self.handles.lock().unwrap_or_else(PoisonError::into_inner).insert(kid.clone(), key);
            self.sign_with(s, key, alg, message)
        })
    }

    /// `C_Sign` with `key` on `s`, as `alg` wants the signature.
    fn sign_with(&self, s: &Session, key: ObjectHandle, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let signature = match alg {
            Algorithm::ES256 => s.sign(&Mechanism::Ecdsa, key, digest(&aws_lc_rs::digest::SHA256, message).as_ref())?,
            Algorithm::ES384 => s.sign(&Mechanism::Ecdsa, key, digest(&aws_lc_rs::digest::SHA384, message).as_ref())?,
            Algorithm::EdDSA => {
                s.sign(&Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), key, message)?
            }
            Algorithm::RS256 => s.sign(&Mechanism::Sha256RsaPkcs, key, message)?,
            Algorithm::PS256 => {
                let params = PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: Ulong::new(32),
                };
                s.sign(&Mechanism::Sha256RsaPkcsPss(params), key, message)?
            }
        };
        Ok(signature)
    }

    /// The labels (kids) of every private key the token holds, keyturn's and any other's.
    pub fn held(&self) -> Result<Vec<String>, TokenError> {
        self.recovering(|| {
            self.with_session(|s| {
                let mut labels = Vec::new();
                for handle in s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])? {
                    for attr in s.get_attributes(handle, &[AttributeType::Label])? {
                        if let Attribute::Label(label) = attr {
                            labels.push(String::from_utf8_lossy(&label).into_owned());
                        }
                    }
                }
                Ok(labels)
            })
        })
    }

    /// Destroys both halves of the key labelled `kid`; returns how many objects went. A key
    /// already gone is not an error.
    pub fn destroy(&self, kid: &KeyId) -> Result<usize, TokenError> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner).remove(kid);
        self.recovering(|| {
            self.with_session(|s| {
                let found = s.find_objects(&[Attribute::Label(kid.as_str().as_bytes().to_vec())])?;
                for handle in &found {
                    s.destroy_object(*handle)?;
                }
                Ok(found.len())
            })
        })
    }
}

/// A key in the token as rcgen signs a certificate with it: its public half in the form
/// X.509 carries, and signatures from the token in the form X.509 wants (ECDSA as DER).
pub struct CertSigner<'a> {
    token: &'a Token,
    kid: KeyId,
    alg: Algorithm,
    public_der: Vec<u8>,
}

impl<'a> CertSigner<'a> {
    /// The signer of the certificate of `kid` (of `alg`, public half `parts`).
    pub fn new(token: &'a Token, kid: &KeyId, alg: Algorithm, parts: &PublicParts) -> Result<Self, TokenError> {
        let d = |v: &String| {
            URL_SAFE_NO_PAD.decode(v).map_err(|e| TokenError::Failed(format!("a public key that does not decode: {e}")))
        };
        let public_der = match parts {
            PublicParts::Ec { x, y, .. } => [vec![4], d(x)?, d(y)?].concat(),
            PublicParts::Okp { x, .. } => d(x)?,
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            PublicParts::Rsa { n, e } => der_sequence(&[der_integer(&d(n)?), der_integer(&d(e)?)]),
        };
        Ok(CertSigner { token, kid: kid.clone(), alg, public_der })
    }
}

impl rcgen::PublicKeyData for CertSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.alg {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            // As for software keys: the certificate of an RSA key is signed with PKCS#1 v1.5.
            Algorithm::RS256 | Algorithm::PS256 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl rcgen::SigningKey for CertSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let fail = |_| rcgen::Error::RemoteKeyError;
        match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let raw = self.token.sign(&self.kid, self.alg, msg).map_err(fail)?;
                let (r, s) = raw.split_at(raw.len() / 2);
                Ok(der_sequence(&[der_integer(r), der_integer(s)]))
            }
            Algorithm::EdDSA => self.token.sign(&self.kid, self.alg, msg).map_err(fail),
            Algorithm::RS256 | Algorithm::PS256 => self.token.sign(&self.kid, Algorithm::RS256, msg).map_err(fail),
        }
    }
}

/// A DER INTEGER holding the unsigned big-endian `value`.
fn der_integer(value: &[u8]) -> Vec<u8> {
    let value = strip_zeros(value);
    let mut content = Vec::with_capacity(value.len() + 1);
    if value.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(value);
    der_tagged(0x02, &content)
}

/// A DER SEQUENCE of already encoded `items`.
fn der_sequence(items: &[Vec<u8>]) -> Vec<u8> {
    der_tagged(0x30, &items.concat())
}

fn der_tagged(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

fn digest(alg: &'static aws_lc_rs::digest::Algorithm, message: &[u8]) -> aws_lc_rs::digest::Digest {
    aws_lc_rs::digest::digest(alg, message)
}

/// DER of the OID of P-256 (`CKA_EC_PARAMS`).
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID of P-384.
const P384_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the curve name `edwards25519` as PKCS#11 3.0 names Ed25519 (a PrintableString).
const ED25519_NAME: [u8; 14] = [0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9'];

/// The public half of a key the token made, as the JWK publishes it.
fn public_parts(s: &Session, handle: ObjectHandle, alg: Algorithm) -> Result<PublicParts, TokenError> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let bad = |what: &str| TokenError::Failed(format!("the token returned {what}"));
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => {
            let attrs = s.get_attributes(handle, &[AttributeType::Modulus, AttributeType::PublicExponent])?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (n, e) = n.zip(e).ok_or_else(|| bad("an RSA public key without modulus or exponent"))?;
            Ok(PublicParts::Rsa { n: b64(strip_zeros(&n)), e: b64(strip_zeros(&e)) })
        }
        _ => {
            let attrs = s.get_attributes(handle, &[AttributeType::EcPoint])?;
            let point = attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(v) => Some(v),
                    _ => None,
                })
                .ok_or_else(|| bad("a public key without CKA_EC_POINT"))?;
            // CKA_EC_POINT is the point in a DER OCTET STRING (some modules give it bare).
            let point = octet_string(&point).unwrap_or(&point);
            match alg {
                Algorithm::EdDSA if point.len() == 32 => Ok(PublicParts::Okp { crv: "Ed25519", x: b64(point) }),
                Algorithm::ES256 | Algorithm::ES384 => {
                    let (crv, size) = if alg == Algorithm::ES256 { ("P-256", 32) } else { ("P-384", 48) };
                    if point.len() != 1 + 2 * size || point[0] != 4 {
                        return Err(bad("an EC point that is not an uncompressed point of the curve"));
                    }
                    Ok(PublicParts::Ec { crv, x: b64(&point[1..=size]), y: b64(&point[1 + size..]) })
                }
                _ => Err(bad("an Ed25519 point of the wrong length")),
            }
        }
    }
}

/// The contents of a DER OCTET STRING, if `der` is one.
fn octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = match len {
        l if l < 0x80 => (usize::from(l), rest),
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

/// An unsigned big-endian integer without leading zero bytes (as JWK wants it).
fn strip_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != 0).unwrap_or(v.len().saturating_sub(1));
    &v[start..]
}

#[cfg(test)]
mod tests;
