//! The `Authorization` header: `Basic base64(user:password)` or `ApiKey base64(id:key)`.
//! Parsing never panics and accepts nothing malformed.

use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Credentials a request carries.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    ApiKey { id: String, secret: String },
}

impl std::fmt::Debug for Credentials {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user})"),
            Credentials::ApiKey { id, .. } => write!(f, "ApiKey({id})"),
        }
    }
}

/// Parses an `Authorization` header value; `None` for anything malformed or of another
/// scheme.
pub fn parse(value: &[u8]) -> Option<Credentials> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if rest.is_empty() || rest.len() > 4096 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (left, right) = decoded.split_once(':')?;
    if left.is_empty() || right.is_empty() || left.chars().any(char::is_control) {
        return None;
    }
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Credentials::Basic {
            user: left.to_string(),
            password: right.to_string(),
        })
    } else if scheme.eq_ignore_ascii_case("apikey") {
        Some(Credentials::ApiKey {
            id: left.to_string(),
            secret: right.to_string(),
        })
    } else {
        None
    }
}

/// `Basic …` for a user and password (clients, tests).
pub fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A new API key: (id, secret, encoded) where `encoded` is what goes after `ApiKey `.
pub fn new_api_key() -> (String, String, String) {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut random = |n: usize| -> String {
        (0..n)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    let id = random(20);
    let secret = random(22);
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    (id, secret, encoded)
}

/// The stored form of an API key's secret.
pub fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time check of a secret against its stored hash.
pub fn secret_matches(secret: &str, hash: &str) -> bool {
    secret_hash(secret).as_bytes().ct_eq(hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn well_formed_headers() {
        let h = basic_header("admin", "pa:ss word");
        assert_eq!(
            parse(h.as_bytes()),
            Some(Credentials::Basic {
                user: "admin".into(),
                password: "pa:ss word".into()
            })
        );
        let (id, secret, encoded) = new_api_key();
        assert_eq!(
            parse(format!("ApiKey {encoded}").as_bytes()),
            Some(Credentials::ApiKey {
                id,
                secret: secret.clone()
            })
        );
        assert!(secret_matches(&secret, &secret_hash(&secret)));
        assert!(!secret_matches("x", &secret_hash(&secret)));
        assert_eq!(
            parse(b"basic YTpi"),
            Some(Credentials::Basic {
                user: "a".into(),
                password: "b".into()
            })
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            &b""[..],
            b"Basic",
            b"Basic ",
            b"Basic !!!",
            b"Basic YWRtaW4=", // "admin": no colon
            b"Basic OnBhc3M=", // ":pass": no user
            b"Basic YWRtaW46", // "admin:": no password
            b"Bearer YTpi",    // another scheme
            b"\xff\xfe",       // not UTF-8
            b"Basic /w==",     // decodes to invalid UTF-8
            b"ApiKey aWQ=",    // no colon
            b"Basic AWFhOmI=", // control character in the user name
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_text_after_a_scheme_never_panics(
            scheme in "(Basic|ApiKey|basic|APIKEY|Digest)",
            rest in ".{0,200}",
        ) {
            if let Some(c) = parse(format!("{scheme} {rest}").as_bytes()) {
                // Whatever is accepted decoded from valid base64 to "left:right".
                let (l, r) = match &c {
                    Credentials::Basic { user, password } => (user, password),
                    Credentials::ApiKey { id, secret } => (id, secret),
                };
                prop_assert!(!l.is_empty() && !r.is_empty());
            }
        }

        #[test]
        fn encoded_pairs_round_trip(user in "[^:\\p{Cc}]{1,40}", password in "\\PC{1,60}") {
            let parsed = parse(basic_header(&user, &password).as_bytes());
            prop_assert_eq!(parsed, Some(Credentials::Basic { user, password }));
        }
    }
}
