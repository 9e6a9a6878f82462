//! Who may call the HTTP API: the bearer token of a request, compared with an
//! app's API key (or the admin token) in constant time.

use subtle::ConstantTimeEq;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(req: &actix_web::HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a given key is the expected one, without a timing leak of where they
/// differ (only whether their lengths do).
pub fn key_matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_exactly() {
        assert!(key_matches("secret-key", "secret-key"));
        assert!(!key_matches("secret-ke", "secret-key"));
        assert!(!key_matches("secret-keyy", "secret-key"));
        assert!(!key_matches("secret-kez", "secret-key"));
        assert!(!key_matches("", "secret-key"));
    }
}
