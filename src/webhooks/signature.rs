//! `X-Switchboard-Signature: sha256=<hex>`: the HMAC-SHA256 of the exact body,
//! keyed with the app's API key, so a receiver knows the batch came from us.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "x-switchboard-signature";

/// The header's value for `body`.
pub fn sign(api_key: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn matches_the_rfc_vector() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
