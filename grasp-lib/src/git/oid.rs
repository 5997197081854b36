//! Object ids as git's wire protocol writes them.

/// The all-zero object id git uses for "no object" (create/delete in a push).
pub const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// True for the all-zero id in either hash length.
pub fn is_zero_oid(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}
