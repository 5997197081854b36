//! Summaries of repeated measurements: median, spread and percentiles.

use std::time::Duration;

/// Repeated measurements of one quantity (seconds, bytes, events/s...).
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds a duration, in seconds.
    pub fn push_duration(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v
    }

    /// The `p`-th percentile (0..=100), nearest rank.
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }

    /// The median.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// Smallest and largest value.
    pub fn range(&self) -> (f64, f64) {
        let v = self.sorted();
        (v.first().copied().unwrap_or(f64::NAN), v.last().copied().unwrap_or(f64::NAN))
    }

    /// `median (min–max, n=N)` with a unit formatter.
    pub fn describe(&self, fmt: impl Fn(f64) -> String) -> String {
        let (lo, hi) = self.range();
        format!("{} ({}–{}, n={})", fmt(self.median()), fmt(lo), fmt(hi), self.0.len())
    }
}

/// Seconds as `1.234 s` or `12.3 ms`.
pub fn secs(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.3} s")
    } else {
        format!("{:.2} ms", v * 1000.0)
    }
}

/// Bytes as MiB.
pub fn mib(v: f64) -> String {
    format!("{:.1} MiB", v / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_median() {
        let s = Samples((1..=100).map(f64::from).collect());
        assert_eq!(s.median(), 50.5);
        assert_eq!(s.percentile(95.0), 95.0);
        assert_eq!(s.percentile(50.0), 50.0);
        assert_eq!(s.range(), (1.0, 100.0));
        assert_eq!(Samples(vec![3.0, 1.0, 2.0]).median(), 2.0);
    }
}
