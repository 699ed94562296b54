//! The token module against SoftHSM2, a token per test, all in one temp dir per test process.

use std::path::PathBuf;
use std::sync::OnceLock;

use aws_lc_rs::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

use super::*;

/// SoftHSM2's module, as Debian installs it.
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-keyturn";
/// One token per test, all made before the module is first loaded (a PKCS#11 module is
/// initialised once per process, and reads its token directory then).
const TOKENS: [&str; 4] = ["born", "refusals", "destroyed", "pool"];

/// The token directory of this test process, its tokens initialised with `softhsm2-util`,
/// and the PIN file.
fn fixture() -> &'static (tempfile::TempDir, PathBuf) {
    static FIXTURE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        let text = format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display());
        std::fs::write(&conf, text).expect("conf");
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for label in TOKENS {
            let out = std::process::Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "9999-so"])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util (Debian's softhsm2; scripts/test installs it)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let pin = dir.path().join("pin");
        std::fs::write(&pin, format!("{PIN}\n")).expect("pin file");
        (dir, pin)
    })
}

fn open(label: &str) -> Token {
    Token::open(Path::new(MODULE), label, &fixture().1).expect("the token opens")
}

/// Verifies a JWS signature with aws-lc against the published public half.
fn verifies(alg: Algorithm, parts: &PublicParts, message: &[u8], signature: &[u8]) -> bool {
    let d = |s: &String| URL_SAFE_NO_PAD.decode(s).expect("base64url");
    match (alg, parts) {
        (Algorithm::ES256 | Algorithm::ES384, PublicParts::Ec { x, y, .. }) => {
            let point = [vec![4], d(x), d(y)].concat();
            let verify =
                if alg == Algorithm::ES256 { &sig::ECDSA_P256_SHA256_FIXED } else { &sig::ECDSA_P384_SHA384_FIXED };
            UnparsedPublicKey::new(verify, point).verify(message, signature).is_ok()
        }
        (Algorithm::EdDSA, PublicParts::Okp { x, .. }) => {
            UnparsedPublicKey::new(&sig::ED25519, d(x)).verify(message, signature).is_ok()
        }
        (Algorithm::RS256 | Algorithm::PS256, PublicParts::Rsa { n, e }) => {
            let params =
                if alg == Algorithm::RS256 { &sig::RSA_PKCS1_2048_8192_SHA256 } else { &sig::RSA_PSS_2048_8192_SHA256 };
            RsaPublicKeyComponents { n: d(n), e: d(e) }.verify(params, message, signature).is_ok()
        }
        _ => false,
    }
}

#[test]
fn keys_are_born_in_the_token_never_leave_it_and_sign_as_verifiers_expect() {
    let token = open("born");
    for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256] {
        let (kid, parts) = token.generate(alg, RsaBits::B2048).expect("generated in the token");
        assert_eq!(kid, parts.thumbprint(), "the kid is the RFC 7638 thumbprint of the public half");
        token.check(&kid).expect("found by its kid, can sign, cannot be extracted");
        let message = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
        let signature = token.sign(&kid, alg, message).expect("signed");
        assert!(verifies(alg, &parts, message, &signature), "{alg}: the signature verifies");
        assert!(!verifies(alg, &parts, b"another message", &signature), "{alg}: and only for its message");
        // The private half as the token holds it: sensitive, never extractable, labelled.
        token
            .with_session(|s| {
                let key = token.private_key(s, &kid)?;
                let attrs = s.get_attributes(
                    key,
                    &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Token, AttributeType::Label],
                )?;
                for want in [
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Token(true),
                    Attribute::Label(kid.as_str().as_bytes().to_vec()),
                ] {
                    assert!(attrs.contains(&want), "{alg}: {want:?} in {attrs:?}");
                }
                let value = s.get_attributes(key, &[AttributeType::Value]);
                assert!(!matches!(value.as_deref(), Ok([Attribute::Value(_)])), "{alg}: its value cannot be read");
                Ok(())
            })
            .expect("attributes");
    }
}

/// One DER element at the start of `der`: (the whole element, its content, what follows).
fn element(der: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let (len, head) = match der[1] {
        l if l < 0x80 => (usize::from(l), 2),
        0x81 => (usize::from(der[2]), 3),
        0x82 => ((usize::from(der[2]) << 8) | usize::from(der[3]), 4),
        other => panic!("length form {other:#x}"),
    };
    (&der[..head + len], &der[head..head + len], &der[head + len..])
}

#[test]
fn a_token_key_certifies_itself_for_the_jwks() {
    let token = open("born");
    let now = crate::clock::from_unix(1_800_000_000);
    for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256] {
        let (kid, parts) = token.generate(alg, RsaBits::B2048).expect("generated");
        let signer = CertSigner::new(&token, &kid, alg, &parts).expect("signer");
        let later = now + std::time::Duration::from_secs(86_400);
        let jwk = super::super::generate::published(alg, &kid, &parts, &signer, "https://kt.example", now, later)
            .expect("certified");
        assert_eq!(jwk.kid, kid.as_str());
        let cert = base64::engine::general_purpose::STANDARD.decode(&jwk.x5c[0]).expect("DER");
        assert!(cert.windows(signer.public_der.len()).any(|w| w == signer.public_der), "{alg}: carries its key");
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
        let (_, body, _) = element(&cert);
        let (tbs, _, rest) = element(body);
        let (_, _, rest) = element(rest);
        let (_, bits, _) = element(rest);
        let signature = &bits[1..];
        let point = signer.public_der.clone();
        let ok = match alg {
            Algorithm::ES256 => UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_ASN1, point).verify(tbs, signature),
            Algorithm::ES384 => UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_ASN1, point).verify(tbs, signature),
            Algorithm::EdDSA => UnparsedPublicKey::new(&sig::ED25519, point).verify(tbs, signature),
            Algorithm::RS256 | Algorithm::PS256 => {
                UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, point).verify(tbs, signature)
            }
        };
        assert!(ok.is_ok(), "{alg}: the token's signature on its certificate verifies");
    }
}

#[test]
fn each_refusal_names_its_problem_and_never_the_pin() {
    let (dir, pin) = fixture();
    let missing = Token::open(Path::new("/nonexistent/libpkcs11.so"), "refusals", pin).map(drop);
    assert!(matches!(&missing, Err(TokenError::Module { path, .. }) if path.contains("/nonexistent/")), "{missing:?}");
    let absent = Token::open(Path::new(MODULE), "no-such-token", pin).map(drop);
    let Err(TokenError::Absent { seen, .. }) = &absent else { panic!("{absent:?}") };
    assert!(seen.contains("'refusals'"), "the tokens it saw are named: {seen}");
    let wrong = dir.path().join("wrong-pin");
    std::fs::write(&wrong, "1234").expect("pin");
    let refused = Token::open(Path::new(MODULE), "refusals", &wrong).map(drop);
    assert!(matches!(&refused, Err(TokenError::WrongPin { .. })), "{refused:?}");
    let unreadable = Token::open(Path::new(MODULE), "refusals", &dir.path().join("no-pin-file")).map(drop);
    assert!(matches!(&unreadable, Err(TokenError::PinFile { .. })), "{unreadable:?}");
    for e in [refused, unreadable, absent] {
        let text = e.expect_err("refused").to_string();
        assert!(!text.contains(PIN) && !text.contains("1234"), "no PIN in: {text}");
    }
    open("refusals");
}

#[test]
fn a_destroyed_key_is_gone_and_says_so() {
    let token = open("destroyed");
    let (kid, _) = token.generate(Algorithm::ES256, RsaBits::B2048).expect("generated");
    assert_eq!(token.destroy(&kid).expect("destroyed"), 2, "both halves");
    assert!(matches!(token.check(&kid), Err(TokenError::Missing(k)) if k == kid));
    assert!(matches!(token.sign(&kid, Algorithm::ES256, b"m"), Err(TokenError::Missing(_))));
    assert_eq!(token.destroy(&kid).expect("destroying it again changes nothing"), 0);
}

#[test]
fn concurrent_signers_share_the_session_pool() {
    let token = Arc::new(open("pool"));
    let (kid, parts) = token.generate(Algorithm::ES256, RsaBits::B2048).expect("generated");
    let signers: Vec<_> = (0..8)
        .map(|i| {
            let (token, kid, parts) = (token.clone(), kid.clone(), parts.clone());
            std::thread::spawn(move || {
                for j in 0..25 {
                    let message = format!("token {i}.{j}");
                    let signature = token.sign(&kid, Algorithm::ES256, message.as_bytes()).expect("signed");
                    assert!(verifies(Algorithm::ES256, &parts, message.as_bytes(), &signature));
                }
            })
        })
        .collect();
    for s in signers {
        s.join().expect("signer");
    }
    let idle = token.idle.lock().unwrap_or_else(PoisonError::into_inner).len();
    assert!((1..=8).contains(&idle), "sessions opened as needed and kept: {idle}");
}
