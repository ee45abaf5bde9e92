//! Passwords: argon2id hashes (PHC strings), a minimal strength rule, and generated
//! passwords for the bootstrap admin.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

/// Hashes `password` with argon2id and a random salt (the crate's default cost: 19 MiB,
/// two passes).
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing of a bounded input")
        .to_string()
}

/// Whether `password` matches `hash` (constant-time comparison inside argon2). A hash that
/// does not parse matches nothing.
pub fn verify(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified against for unknown users so that a wrong user
/// name costs as much time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&generate()))
}

/// Why a password is refused; `None` when it is acceptable.
pub fn weakness(user: &str, password: &str) -> Option<&'static str> {
    if password.chars().count() < 8 {
        Some("the password must be at least 8 characters long")
    } else if password.chars().count() > 256 {
        Some("the password must be at most 256 characters long")
    } else if password.eq_ignore_ascii_case(user) {
        Some("the password must not be the user name")
    } else {
        None
    }
}

/// A strong random password: 24 characters of letters, digits and symbols.
pub fn generate() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%+-.=@_";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash("correct horse");
        let b = hash("correct horse");
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify("correct horse", &a));
        assert!(!verify("correct hors", &a));
        assert!(!verify("correct horse", "not a hash"));
        assert!(!verify("", decoy_hash()));
    }

    #[test]
    fn weak_passwords_are_named() {
        assert!(weakness("bob", "short").is_some());
        assert!(weakness("bobbobbob", "BOBBOBBOB").is_some());
        assert!(weakness("bob", "long enough").is_none());
        let g = generate();
        assert_eq!(g.len(), 24);
        assert!(weakness("admin", &g).is_none());
    }
}
