//! What `crm_private.begin_request` takes from a verified JWT's claims.
//!
//! The edge has already checked the signature, expiry and audience; these rules decide
//! only whose request it is. Nothing in the claims grants access by itself: membership
//! and tenant status are checked live in the database.

use serde_json::Value;

/// The user a request is for: the `sub` claim, which must be a UUID.
pub fn subject(claims: &Value) -> Option<String> {
    let sub = claims.get("sub")?.as_str()?;
    is_uuid(sub).then(|| sub.to_ascii_lowercase())
}

/// The session a token belongs to: the `session_id` claim, which must be a UUID.
pub fn session(claims: &Value) -> Option<String> {
    let id = claims.get("session_id")?.as_str()?;
    is_uuid(id).then(|| id.to_ascii_lowercase())
}

/// The 16 bytes of a uuid's text (any case, with or without hyphens), or None.
pub fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        out[i] = (digit(pair[0]) << 4) | digit(pair[1]);
    }
    Some(out)
}

/// Canonical 8-4-4-4-12 hexadecimal form (what PostgreSQL's uuid input also accepts).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn subject_is_a_uuid_sub_claim() {
        let id = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";
        assert_eq!(subject(&json!({"sub": id})), Some(id.to_ascii_lowercase()));
    }

    #[test]
    fn session_is_a_uuid_session_id_claim() {
        let id = "9D1F2A4E-0000-4000-8000-000000000001";
        assert_eq!(
            session(&json!({"session_id": id})),
            Some(id.to_ascii_lowercase())
        );
        assert_eq!(session(&json!({})), None);
        assert_eq!(session(&json!({"session_id": "x"})), None);
        assert_eq!(session(&json!({"session_id": 1})), None);
    }

    #[test]
    fn anything_else_is_no_subject() {
        for claims in [
            json!({}),
            json!({"sub": null}),
            json!({"sub": 42}),
            json!({"sub": ""}),
            json!({"sub": "not-a-uuid"}),
            json!({"sub": "3f2504e0-4f89-11d3-9a0c-0305e82c330"}),
            json!({"sub": "3f2504e0-4f89-11d3-9a0c-0305e82c3301' or 1=1"}),
            json!({"sub": "3f2504e0x4f89-11d3-9a0c-0305e82c3301"}),
            json!("3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
        ] {
            assert_eq!(subject(&claims), None, "{claims}");
        }
    }
}
