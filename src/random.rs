//! Random bytes for identities that must differ between processes: one home for how the
//! crate draws them from the OS.

/// `N` random bytes from the OS generator, for identities that must differ between
/// processes (node ids, history epochs, nonces). The OS generator does not fail on the
/// platforms tokio runs on; should it, clock-derived bytes still tell processes apart in
/// practice.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::TryRng;
    let mut bytes = [0; N];
    if rand::rngs::SysRng.try_fill_bytes(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = (nanos ^ u128::from(std::process::id())).to_le_bytes();
        for (at, byte) in bytes.iter_mut().enumerate() {
            *byte = seed[at % seed.len()] ^ (at as u8);
        }
    }
    bytes
}
