//! [`OsTokens`]: callback tokens and id seeds from the operating system's CSPRNG — the one
//! place maas draws real entropy.

use maas_core::id::TokenSource;

/// Callback tokens from the operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsTokens;

impl OsTokens {
    /// 64 random bits, to seed an `IdGenerator`'s id bits.
    pub fn seed() -> u64 {
        let mut b = [0u8; 8];
        fill(&mut b);
        u64::from_le_bytes(b)
    }
}

impl TokenSource for OsTokens {
    fn token(&self) -> String {
        let mut b = [0u8; 16];
        fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

/// Fills `buf` from the OS. There is no safe fallback for a secret: if the kernel cannot
/// give entropy, the process stops rather than hand out a guessable token.
fn fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random source failed ({e}): refusing to make a guessable callback token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_hex_and_do_not_repeat() {
        let tokens: std::collections::HashSet<String> = (0..1000).map(|_| OsTokens.token()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(tokens.iter().all(|t| t.len() == 32 && t.bytes().all(|c| c.is_ascii_hexdigit())));
        assert_ne!(OsTokens::seed(), OsTokens::seed());
    }
}
