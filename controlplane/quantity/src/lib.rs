//! Kubernetes resource quantities, parsed exactly (integer arithmetic, no
//! floats) and rounded up as kube's `Value()` and `MilliValue()` round.
//! One parser for the API server (which refuses a quantity that does not
//! parse), the node gateway (the limits a node enforces), the scheduler
//! and the controllers, so a quantity means the same everywhere.
//!
//! ```
//! assert_eq!(skiff_quantity::value("64Mi"), Some(64 << 20));
//! assert_eq!(skiff_quantity::milli_value("250m"), Some(250));
//! assert_eq!(skiff_quantity::value("500m"), Some(1)); // rounded up
//! assert_eq!(skiff_quantity::value("lots"), None);
//! ```

/// The quantity in whole units, rounded up ("1Gi" → 1073741824, "500m" →
/// 1); `None` if it does not parse or does not fit an `i64`.
pub fn value(s: &str) -> Option<i64> {
    scaled(s, 0)
}

/// The quantity in thousandths, rounded up ("100m" → 100, "2" → 2000).
pub fn milli_value(s: &str) -> Option<i64> {
    scaled(s, 3)
}

/// Kube's quantity grammar: `<signed number><suffix>`, the suffix binary
/// (Ki..Ei), decimal (n u m "" k M G T P E) or an exponent (`e3`, `E-2`).
/// Returns the value times `10^decimals`, rounded up.
fn scaled(s: &str, decimals: i32) -> Option<i64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (neg, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // value = mantissa × 10^exp10 × 2^exp2
    let mantissa: i128 = format!("{int_part}{frac_part}").parse().ok()?;
    let mut exp10: i32 = decimals - i32::try_from(frac_part.len()).ok()?;
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        e if e.starts_with(['e', 'E']) => exp10 = exp10.checked_add(e[1..].parse().ok()?)?,
        _ => return None,
    }
    let mut v = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    if exp10 >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp10.unsigned_abs())?)?;
    } else {
        // Rounded up (away from zero for the magnitude, as kube does).
        match 10i128.checked_pow(exp10.unsigned_abs()) {
            Some(d) => v = (v + d - 1) / d,
            // Smaller than any unit: a positive quantity is 1, zero is 0.
            None => v = i128::from(v > 0),
        }
    }
    let v = i64::try_from(v).ok()?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubes_forms() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("2"), Some(2000));
        assert_eq!(milli_value("0.5"), Some(500));
        assert_eq!(milli_value(".5"), Some(500));
        assert_eq!(milli_value("1.5k"), Some(1_500_000));
        assert_eq!(milli_value("500000u"), Some(500));
        assert_eq!(milli_value("250000000n"), Some(250));
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1Pi"), Some(1 << 50));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("1E3"), Some(1000));
        assert_eq!(value("25e-1"), Some(3), "rounded up");
        assert_eq!(value("500m"), Some(1), "rounds up like kube");
        assert_eq!(value("+110"), Some(110));
        assert_eq!(value("-1"), Some(-1));
        assert_eq!(value(" 7 "), Some(7));
    }

    #[test]
    fn what_is_not_a_quantity() {
        for bad in [
            "", "Gi", "lots", "12X", "1.5.5", "1 Gi", "--1", "1e", "1ee3", "0x10", "1i",
        ] {
            assert_eq!(value(bad), None, "{bad:?}");
        }
        // Too large for an i64, or an exponent that does not fit.
        assert_eq!(value("9Ei"), None);
        assert_eq!(value("1e400"), None);
        assert_eq!(value("1e-400"), Some(1));
        assert_eq!(value("1e99999999999"), None);
    }
}
