//! Small helpers the benchmarks' SVG plots share.

/// A round tick step (1, 2 or 5 × 10^k) giving at most `ticks` ticks up to `max`.
pub fn tick_step(max: f64, ticks: f64) -> f64 {
    let raw = max / ticks;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_round_and_cover_the_maximum_in_six_ticks() {
        for (max, step) in [
            (1.0, 0.2),
            (5.5, 1.0),
            (6.2, 2.0),
            (30.0, 5.0),
            (70.0, 20.0),
        ] {
            assert!(
                (tick_step(max, 6.0) - step).abs() < 1e-9,
                "{max}: {}",
                tick_step(max, 6.0)
            );
        }
    }
}
