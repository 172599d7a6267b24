//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1G`, `129e6`) as whole numbers of
//! bytes or nano-CPUs: pure parsing, shared by the scheduler and the agent.

/// Parses a quantity into its value scaled by `scale` (1 for bytes, 1e9 for nano-CPUs),
/// rounding up as Kubernetes does. `None` when it is not a valid quantity.
pub fn parse_scaled(quantity: &str, scale: f64) -> Option<i64> {
    let q = quantity.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, multiplier) = suffixes
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .or_else(|| q.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((q, 1.0));
    if number.is_empty() || number.starts_with(['+', '-']) && number.len() == 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let scaled = (value * multiplier * scale).ceil();
    (scaled <= i64::MAX as f64).then_some(scaled as i64)
}

/// A memory quantity in bytes.
pub fn memory_bytes(quantity: &str) -> Option<i64> {
    parse_scaled(quantity, 1.0)
}

/// A CPU quantity in billionths of a CPU (Docker's `NanoCpus`).
pub fn nano_cpus(quantity: &str) -> Option<i64> {
    parse_scaled(quantity, 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_bytes("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("128974848"), Some(128_974_848));
        assert_eq!(memory_bytes("129e6"), Some(129_000_000));
        assert_eq!(memory_bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(memory_bytes("lots"), None);
        assert_eq!(memory_bytes(""), None);
        assert_eq!(memory_bytes("-1"), None);
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(nano_cpus("500m"), Some(500_000_000));
        assert_eq!(nano_cpus("1"), Some(1_000_000_000));
        assert_eq!(nano_cpus("0.25"), Some(250_000_000));
        assert_eq!(nano_cpus("2"), Some(2_000_000_000));
    }
}
