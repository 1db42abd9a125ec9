//! Parsers of numeric command-line flags, shared by `vit-train` and
//! `vit-infer` (as clap `value_parser`s: clap names the flag in the error).
//! Every float flag goes through [`finite_f64`] or [`finite_f32`]: NaN
//! compares false both ways, so a NaN threshold passes every `>` check and
//! switches its gate off (`--max-accuracy-drop NaN` once accepted any int8
//! model), and infinity does the same to any upper bound.

/// A finite `f64` (not NaN, not infinite).
pub fn finite_f64(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(format!("{s:?} is not a number ({e})")),
    }
}

/// A finite `f32` (not NaN, not infinite, not too large for `f32`).
pub fn finite_f32(s: &str) -> Result<f32, String> {
    let v = finite_f64(s)?;
    match v as f32 {
        x if x.is_finite() => Ok(x),
        _ => Err(format!("{v} is too large (at most {:e})", f32::MAX)),
    }
}

/// A finite `f64` of at least 0.
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    match finite_f64(s)? {
        v if v >= 0.0 => Ok(v),
        v => Err(format!("{v} is negative; give a number of at least 0")),
    }
}

/// A fraction in [0, 1).
pub fn fraction_f64(s: &str) -> Result<f64, String> {
    match finite_f64(s)? {
        v if (0.0..1.0).contains(&v) => Ok(v),
        v => Err(format!("{v} is not in [0, 1)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_values_are_refused_with_the_value() {
        for bad in ["NaN", "nan", "inf", "-inf", "infinity", "1e400"] {
            assert!(finite_f64(bad).unwrap_err().contains("finite"), "{bad}");
            assert!(finite_f32(bad).is_err(), "{bad}");
        }
        assert!(finite_f32("1e39").unwrap_err().contains("too large"));
        assert!(finite_f64("abc").unwrap_err().contains("not a number"));
        assert_eq!(finite_f64("-2.5"), Ok(-2.5));
        assert_eq!(finite_f32("0.5"), Ok(0.5));
        assert_eq!(non_negative_f64("0"), Ok(0.0));
        assert!(non_negative_f64("-1").is_err());
        assert_eq!(fraction_f64("0.2"), Ok(0.2));
        assert!(fraction_f64("1").is_err() && fraction_f64("NaN").is_err());
    }
}
