//! Randomness from the operating system's CSPRNG, for secrets, keys, codes and token ids.

/// `n` random bytes.
pub fn bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// `n` random bytes as lower-case hex.
pub fn hex(n: usize) -> String {
    bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// A uniformly random decimal code of `digits` digits (rejection sampling, no modulo bias).
pub fn digits(digits: u32) -> String {
    let bound = 10u32.pow(digits);
    let zone = u32::MAX - u32::MAX % bound;
    loop {
        let b = bytes(4);
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if v < zone {
            return format!("{:0width$}", v % bound, width = digits as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_have_the_right_shape_and_vary() {
        let a = super::digits(6);
        assert_eq!(a.len(), 6);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        let many: std::collections::HashSet<_> = (0..50).map(|_| super::digits(6)).collect();
        assert!(many.len() > 40);
        assert_eq!(super::hex(16).len(), 32);
    }
}
