//! Summaries the benchmarks print: the median of runs with the smallest and largest.

/// The median of some runs and the smallest and largest of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            *sorted.get(middle)?
        } else {
            (sorted.get(middle.checked_sub(1)?)? + sorted.get(middle)?) / 2.0
        };
        Some(Spread { median, min, max })
    }

    /// `median (min–max)` with `decimals`, or just the median when all runs agree.
    pub fn show(&self, decimals: usize) -> String {
        let (median, min, max) = (
            format!("{:.decimals$}", self.median),
            format!("{:.decimals$}", self.min),
            format!("{:.decimals$}", self.max),
        );
        if min == max {
            median
        } else {
            format!("{median} ({min}–{max})")
        }
    }
}
