//! Two simulations run in turn for a comparison (`--adversary`, `--retrieval`), under one
//! progress bar.

use indicatif::{ProgressBar, ProgressStyle};
use sds_sim::{Report, Scenario};

/// Runs `first` and then `second`, each named on the progress bar by its label. The bar covers
/// both runs' virtual time and is drawn only when `show` (a terminal, neither `--quiet` nor
/// `--json`); it is cleared whatever the outcome.
pub(crate) fn run_pair(
    (first, first_label): (&Scenario, &'static str),
    (second, second_label): (&Scenario, &'static str),
    show: bool,
) -> Result<(Report, Report), String> {
    let first_span = first.span_ms() / 1_000;
    let bar = show.then(|| {
        let bar = ProgressBar::new(first_span + second.span_ms() / 1_000);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {msg} virtual {pos}/{len} s [{bar:40}] {elapsed}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let run = |s: &Scenario, offset: u64, what: &'static str| {
        if let Some(bar) = &bar {
            bar.set_message(what);
        }
        sds_sim::run_with_progress(s, |at| {
            if let Some(bar) = &bar {
                bar.set_position(offset + at);
            }
        })
        .map_err(|e| e.to_string())
    };
    let runs =
        run(first, 0, first_label).and_then(|a| Ok((a, run(second, first_span, second_label)?)));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    runs
}
