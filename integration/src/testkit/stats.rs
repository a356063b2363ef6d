//! Figures for the benchmarks and the tests that measure: percentiles of
//! samples and settings from the environment.

/// The `p`-quantile (0..=1, nearest rank) of `sorted` (ascending); NaN when
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Samples, sorted, with their summary figures (NaN when there are none).
#[derive(Debug, Clone, PartialEq)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// `v`, sorted.
    pub fn new(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        Self(v)
    }

    /// The `p`-quantile.
    pub fn percentile(&self, p: f64) -> f64 {
        percentile(&self.0, p)
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.percentile(0.5)
    }

    /// The smallest sample.
    pub fn min(&self) -> f64 {
        self.0.first().copied().unwrap_or(f64::NAN)
    }

    /// The largest sample.
    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Environment variable `name` as a number, `default` when unset or not a
/// number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_nan_when_empty() {
        let s = Samples::new(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.median(), 3.0);
        assert_eq!((s.min(), s.max(), s.len()), (1.0, 5.0, 5));
        assert_eq!(s.percentile(0.99), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert!(Samples::new(vec![]).max().is_nan());
    }
}
