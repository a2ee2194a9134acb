//! Password rules (PRD F2.1), as GoTrue applies them: a configurable minimum length, and
//! bcrypt's 72-byte limit (bcrypt ignores what follows, so a longer password would be a
//! false promise). Hashes are bcrypt `$2a$`, which GoTrue reads, so an account moved to a
//! Supabase project keeps its password.

/// bcrypt reads at most this many bytes of a password.
pub const MAX_BYTES: usize = 72;
/// GoTrue's own cost.
pub const COST: u32 = 10;

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Shorter than the minimum (GoTrue's `weak_password` with reason `length`).
    TooShort { min: usize },
    /// Longer than bcrypt reads.
    TooLong,
}

/// Checks a new password against the minimum length (in characters).
pub fn check(password: &str, min_chars: usize) -> Result<(), Problem> {
    if password.len() > MAX_BYTES {
        return Err(Problem::TooLong);
    }
    if password.chars().count() < min_chars.max(1) {
        return Err(Problem::TooShort {
            min: min_chars.max(1),
        });
    }
    Ok(())
}

/// A bcrypt hash in GoTrue's `$2a$` form, with a random salt.
pub fn hash(password: &str, cost: u32) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    bcrypt::hash_with_salt(password, cost, salt)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| e.to_string())
}

/// Whether `password` matches a bcrypt hash (`$2a$`, `$2b$` or `$2y$`). Anything that is
/// not a bcrypt hash matches nothing.
pub fn matches(password: &str, hash: &str) -> bool {
    password.len() <= MAX_BYTES && bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn hashes_are_gotrue_bcrypt_and_verify() {
        let h = hash("correct horse", 4).unwrap();
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert_eq!(h.len(), 60);
        assert!(matches("correct horse", &h));
        assert!(!matches("correct horsE", &h));
        assert_ne!(h, hash("correct horse", 4).unwrap(), "salted");
    }

    #[test]
    fn every_bcrypt_prefix_verifies_and_nothing_else() {
        let h = hash("password123", 4).unwrap();
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let variant = format!("{prefix}{}", &h[4..]);
            assert!(matches("password123", &variant), "{variant}");
        }
        assert!(!matches("password123", "not a hash"));
        assert!(!matches("password123", ""));
    }

    #[test]
    fn length_rules() {
        assert_eq!(check("1234567", 8), Err(Problem::TooShort { min: 8 }));
        assert_eq!(check("12345678", 8), Ok(()));
        // Characters, not bytes: eight two-byte characters are long enough.
        assert_eq!(check("éééééééé", 8), Ok(()));
        assert_eq!(check(&"a".repeat(72), 8), Ok(()));
        assert_eq!(check(&"a".repeat(73), 8), Err(Problem::TooLong));
        assert_eq!(check(&"é".repeat(37), 8), Err(Problem::TooLong));
        assert_eq!(check("", 0), Err(Problem::TooShort { min: 1 }));
    }

    #[test]
    fn long_passwords_never_match() {
        let h = hash(&"a".repeat(72), 4).unwrap();
        assert!(matches(&"a".repeat(72), &h));
        // bcrypt would accept this (it reads 72 bytes); the rule refuses it.
        assert!(!matches(&"a".repeat(80), &h));
    }
}
