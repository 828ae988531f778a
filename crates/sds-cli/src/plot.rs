//! `sds sim --plot FILE`: the run over virtual time as an SVG chart — the share of (member,
//! message) pairs delivered, on the left axis, and the pairs still open, on the right — with a
//! title naming the scenario, axis labels with units, ticks and a legend.
//!
//! Both axes are fitted to the data: the delivered share spans from a little below its lowest
//! point to 100 %, the open pairs from 0 to a little above their peak, so that neither curve
//! lies flat against an axis.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use sds_sim::Report;

/// Width and height of the chart, in pixels.
pub(crate) const SIZE: (u32, u32) = (960, 540);

/// Colour of the delivered share.
pub(crate) const DELIVERED: RGBColor = RGBColor(0x1b, 0x7f, 0x4c);
/// Colour of the open pairs.
pub(crate) const OPEN: RGBColor = RGBColor(0xc4, 0x1e, 0x3a);
/// Colour of the line where sending stops.
pub(crate) const SENDING_ENDS: RGBColor = RGBColor(0x70, 0x70, 0x70);

/// The curves of a run, in seconds of virtual time.
struct Curves {
    /// Delivered pairs as a percentage of the pairs sent so far (senders included).
    delivered: Vec<(f64, f64)>,
    /// Pairs among the messages sent so far not (yet) delivered.
    open: Vec<(f64, f64)>,
}

impl Curves {
    fn new(r: &Report) -> Curves {
        let members = r.parameters.participants as f64;
        let samples = r.timeline.samples.iter();
        Curves {
            delivered: samples
                .clone()
                .filter(|s| s.sent_so_far > 0)
                .map(|s| {
                    let pairs = s.sent_so_far as f64 * members;
                    let share = 100.0 * s.delivered_pairs as f64 / pairs;
                    (s.at_ms as f64 / 1000.0, share.min(100.0))
                })
                .collect(),
            open: samples
                .map(|s| (s.at_ms as f64 / 1000.0, s.open_gaps as f64))
                .collect(),
        }
    }
}

/// The left axis: from a little below the lowest delivered share to a little above 100 %, so
/// that a curve at 100 % stays off the frame. Ticks above 100 are left unlabelled.
fn delivered_range(delivered: &[(f64, f64)]) -> (f64, f64) {
    let lowest = delivered.iter().map(|p| p.1).fold(100.0, f64::min);
    let pad = ((100.0 - lowest) * 0.08).max(0.05);
    ((lowest - pad).max(0.0), 100.0 + pad)
}

/// The right axis: from a little below 0, so that a curve at 0 stays off the frame, to a
/// little above the most open pairs.
fn open_range(open: &[(f64, f64)]) -> (f64, f64) {
    let most = open.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0);
    (-most * 0.03, most * 1.06)
}

/// The title: the scenario in a few words.
fn title(r: &Report) -> String {
    let p = &r.parameters;
    format!(
        "sds sim: {} participants, one message every {} s each, {} % loss, repair {}, seed {}",
        p.participants,
        crate::sim_text::num(p.send_interval_s),
        crate::sim_text::plain(p.loss * 100.0),
        if p.repair { "on" } else { "off" },
        p.seed
    )
}

/// Where [`draw`] put things, in pixels (read by the tests).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Layout {
    /// Columns of the plotting area.
    pub(crate) x: std::ops::Range<i32>,
    /// Rows of the plotting area.
    pub(crate) y: std::ops::Range<i32>,
    /// Rows of the legend, under the chart.
    pub(crate) legend: std::ops::Range<i32>,
}

/// Height of the legend's strip under the chart, in pixels.
const LEGEND_HEIGHT: u32 = 34;

/// Draws the chart of `r` on `area`: the chart, and under it a legend in a strip of its own, so
/// that it hides no part of a curve.
pub(crate) fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    r: &Report,
) -> Result<Layout, String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("cannot draw the plot: {e}");
    let curves = Curves::new(r);
    let span_s = (r.timeline.span_ms as f64 / 1000.0).max(1.0);
    let (low, high) = delivered_range(&curves.delivered);
    let (open_low, open_high) = open_range(&curves.open);
    area.fill(&WHITE).map_err(e)?;
    let (height, width) = (area.dim_in_pixel().1, area.dim_in_pixel().0);
    let (upper, lower) = area.split_vertically(height.saturating_sub(LEGEND_HEIGHT));
    let mut chart = ChartBuilder::on(&upper)
        .caption(title(r), ("sans-serif", 23))
        .margin(14)
        .margin_right(20)
        .x_label_area_size(50)
        .y_label_area_size(74)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0.0..span_s, low..high)
        .map_err(e)?
        .set_secondary_coord(0.0..span_s, open_low..open_high);
    // Ticks beyond the data's range (above 100 %, below 0 pairs) stay unlabelled.
    let share = |v: &f64| {
        if *v > 100.0 + 1e-9 {
            String::new()
        } else {
            trim(*v)
        }
    };
    let count = |v: &f64| if *v < 0.0 { String::new() } else { trim(*v) };
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .x_labels(12)
        .y_labels(8)
        .x_desc("virtual time (s)")
        .y_desc("delivered (% of the pairs sent so far)")
        .x_label_formatter(&|v| trim(*v))
        .y_label_formatter(&share)
        .axis_desc_style(("sans-serif", 17))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    chart
        .configure_secondary_axes()
        .y_labels(8)
        .y_desc("open pairs (sent, not yet delivered)")
        .y_label_formatter(&count)
        .axis_desc_style(("sans-serif", 17))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    let duration = r.parameters.duration_s;
    let mut legend = vec![
        (
            "delivered, % of (member, message) pairs sent so far (left axis)".to_string(),
            DELIVERED.stroke_width(2),
        ),
        ("open pairs (right axis)".to_string(), OPEN.stroke_width(2)),
    ];
    if duration > 0.0 && duration < span_s {
        chart
            .draw_series(LineSeries::new(
                [(duration, low), (duration, high)],
                SENDING_ENDS.stroke_width(1),
            ))
            .map_err(e)?;
        legend.push((
            format!("sending ends ({} s)", trim(duration)),
            SENDING_ENDS.stroke_width(1),
        ));
    }
    chart
        .draw_series(LineSeries::new(
            curves.delivered.iter().copied(),
            DELIVERED.stroke_width(2),
        ))
        .map_err(e)?;
    chart
        .draw_secondary_series(LineSeries::new(
            curves.open.iter().copied(),
            OPEN.stroke_width(2),
        ))
        .map_err(e)?;
    let (x, y) = chart.plotting_area().get_pixel_range();

    // The legend: a swatch and its label per curve, side by side, centred under the chart.
    let font = ("sans-serif", 16)
        .into_font()
        .into_text_style(&lower)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let (swatch, gap, space) = (26i32, 8i32, 30i32);
    let mut widths = Vec::new();
    for (label, _) in &legend {
        let (w, _) = lower.estimate_text_size(label, &font).map_err(e)?;
        widths.push(w as i32);
    }
    let total: i32 =
        widths.iter().map(|w| swatch + gap + w).sum::<i32>() + space * (legend.len() as i32 - 1);
    let mut at = ((width as i32 - total) / 2).max(4);
    let middle = (LEGEND_HEIGHT / 2) as i32 - 2;
    for ((label, style), w) in legend.iter().zip(&widths) {
        lower
            .draw(&PathElement::new(
                [(at, middle), (at + swatch, middle)],
                *style,
            ))
            .map_err(e)?;
        lower
            .draw(&Text::new(
                label.as_str(),
                (at + swatch + gap, middle),
                font.clone(),
            ))
            .map_err(e)?;
        at += swatch + gap + w + space;
    }
    area.present().map_err(e)?;
    let top = height.saturating_sub(LEGEND_HEIGHT) as i32;
    Ok(Layout {
        x,
        y,
        legend: top..height as i32,
    })
}

/// A tick value without float noise: `600`, `99.5`, `0.25`.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The chart of `r` as an SVG document.
pub(crate) fn svg(r: &Report) -> Result<String, String> {
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&area, r)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The chart drawn into a bitmap, the same drawing code as the SVG, and its pixels checked:
    //! something drawn, nothing cut at the edges, both curves inside the plotting area and spread
    //! over its height, the legend's swatches and text, tick labels under the x axis. The
    //! bitmap is also written as a PNG (`SDS_PLOT_PNG=FILE`) to look at.

    use super::*;
    use plotters_backend::text_anchor::{HPos, VPos};
    use plotters_backend::{
        BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
    };

    /// A bitmap backend that draws each text as the filled box it takes up: the layout is the
    /// SVG's (the same estimated text sizes), and no font is needed.
    struct Boxes<'a>(BitMapBackend<'a>);

    impl DrawingBackend for Boxes<'_> {
        type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

        fn get_size(&self) -> (u32, u32) {
            self.0.get_size()
        }
        fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.ensure_prepared()
        }
        fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.present()
        }
        fn draw_pixel(
            &mut self,
            point: BackendCoord,
            color: BackendColor,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_pixel(point, color)
        }
        fn draw_line<S: BackendStyle>(
            &mut self,
            from: BackendCoord,
            to: BackendCoord,
            style: &S,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_line(from, to, style)
        }
        fn draw_rect<S: BackendStyle>(
            &mut self,
            upper_left: BackendCoord,
            bottom_right: BackendCoord,
            style: &S,
            fill: bool,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_rect(upper_left, bottom_right, style, fill)
        }
        fn draw_text<T: BackendTextStyle>(
            &mut self,
            text: &str,
            style: &T,
            pos: BackendCoord,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            let ((x0, y0), (x1, y1)) = style
                .layout_box(text)
                .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
            let (w, h) = (x1 - x0, y1 - y0);
            let dx = match style.anchor().h_pos {
                HPos::Left => 0,
                HPos::Right => -w,
                HPos::Center => -w / 2,
            };
            let dy = match style.anchor().v_pos {
                VPos::Top => 0,
                VPos::Center => -h / 2,
                VPos::Bottom => -h,
            };
            let t = style.transform();
            let (ax, ay) = t.transform(dx, dy);
            let (bx, by) = t.transform(dx + w, dy + h);
            let color = style.color();
            self.0.draw_rect(
                (pos.0 + ax.min(bx), pos.1 + ay.min(by)),
                (pos.0 + ax.max(bx), pos.1 + ay.max(by)),
                &color,
                true,
            )
        }
    }

    /// A small run with losses, so that both curves move.
    fn report() -> Report {
        let scenario = sds_sim::Scenario {
            participants: 8,
            duration: 120.0,
            tail: 120.0,
            seed: 2,
            ..sds_sim::Scenario::default()
        };
        sds_sim::run(&scenario).expect("the run")
    }

    type Pixels = Vec<[u8; 3]>;
    /// (x, y) in pixels.
    type Point = (i32, i32);

    fn render(r: &Report) -> (Pixels, Layout) {
        let (w, h) = SIZE;
        let mut buf = vec![0u8; (w * h * 3) as usize];
        let layout = {
            let area = Boxes(BitMapBackend::with_buffer(&mut buf, SIZE)).into_drawing_area();
            draw(&area, r).expect("drawn")
        };
        let pixels = buf.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        (pixels, layout)
    }

    fn rgb(c: RGBColor) -> [u8; 3] {
        [c.0, c.1, c.2]
    }

    /// The pixels of colour `c`, as (x, y).
    fn where_is(pixels: &Pixels, c: [u8; 3]) -> Vec<(i32, i32)> {
        let w = SIZE.0 as usize;
        (0..pixels.len())
            .filter(|i| pixels[*i] == c)
            .map(|i| ((i % w) as i32, (i / w) as i32))
            .collect()
    }

    /// Text, drawn here as black boxes.
    fn ink(p: [u8; 3]) -> bool {
        p.iter().all(|c| *c < 80)
    }

    #[test]
    fn the_chart_has_its_curves_legend_and_ticks_inside_the_picture() {
        let r = report();
        assert!(
            r.missed_on_first_broadcast > 0,
            "the run should lose copies"
        );
        let (pixels, layout) = render(&r);
        if let Some(path) = std::env::var_os("SDS_PLOT_PNG") {
            std::fs::write(&path, png(SIZE, &pixels)).expect("PNG written");
        }
        let (xs, ys) = (layout.x.clone(), layout.y.clone());
        let (w, h) = (SIZE.0 as i32, SIZE.1 as i32);
        let white = [255, 255, 255];
        let at = |x: i32, y: i32| pixels[(y * w + x) as usize];

        // Drawn, and nothing cut at the picture's edges (a clipped title touches one).
        let drawn = pixels.iter().filter(|p| **p != white).count();
        assert!(drawn > pixels.len() / 50, "{drawn} pixels drawn");
        for x in 0..w {
            assert_eq!(at(x, 0), white, "top edge at x {x}");
            assert_eq!(at(x, h - 1), white, "bottom edge at x {x}");
        }
        for y in 0..h {
            assert_eq!(at(0, y), white, "left edge at y {y}");
            assert_eq!(at(w - 1, y), white, "right edge at y {y}");
        }
        // The plotting area leaves room for the title above, labels around, the legend below.
        assert!(ys.start > 30 && xs.start > 40 && xs.end < w - 40);
        assert!(ys.end + 40 < layout.legend.start && layout.legend.end <= h);

        // Both curves are drawn in the plotting area, and each spans a good part of its
        // height: neither lies flat against an axis. Under the chart, the legend has a swatch
        // of each colour with its label (text, here black boxes) just right of it.
        for colour in [DELIVERED, OPEN] {
            let (swatch, curve): (Vec<Point>, Vec<Point>) = where_is(&pixels, rgb(colour))
                .into_iter()
                .partition(|(_, y)| layout.legend.contains(y));
            assert!(
                curve.len() > 200,
                "{colour:?}: {} curve pixels",
                curve.len()
            );
            assert!(
                curve.iter().all(|(x, y)| xs.contains(x) && ys.contains(y)),
                "{colour:?} drawn outside the plotting area"
            );
            let high = curve.iter().map(|p| p.1).min().unwrap_or(0);
            let low = curve.iter().map(|p| p.1).max().unwrap_or(0);
            assert!(
                (low - high) * 3 > ys.end - ys.start,
                "{colour:?} spans rows {high}..{low} of {ys:?}"
            );
            // Off the frame: a curve at 100 % or at 0 pairs is not drawn on an axis line.
            assert!(
                high > ys.start + 2 && low < ys.end - 3,
                "{colour:?} on the frame"
            );
            let (sx, sy) = swatch
                .iter()
                .copied()
                .max()
                .unwrap_or_else(|| panic!("{colour:?} has no legend swatch"));
            let label = (sx + 1..(sx + 120).min(w))
                .filter(|x| ink(at(*x, sy)))
                .count();
            assert!(
                label > 80,
                "{colour:?}: {label} pixels of label beside its swatch"
            );
        }

        // Tick labels under the x axis: separate runs of text in the band below it.
        let band = (ys.end + 4)..(ys.end + 24);
        let inked: Vec<bool> = (0..w)
            .map(|x| band.clone().any(|y| ink(at(x, y))))
            .collect();
        let runs = inked.windows(2).filter(|p| p[1] && !p[0]).count();
        assert!(runs >= 5, "{runs} tick labels under the x axis");
        // On both sides, tick labels beside the y axes.
        for columns in [(xs.start - 40)..(xs.start - 4), (xs.end + 4)..(xs.end + 40)] {
            let rows = (ys.start..ys.end)
                .filter(|y| columns.clone().any(|x| ink(at(x, *y))))
                .count();
            assert!(
                rows > 40,
                "{rows} rows of tick labels in columns {columns:?}"
            );
        }
        // And the title above the plotting area.
        let title_rows = (0..ys.start)
            .filter(|y| (0..w).any(|x| ink(at(x, *y))))
            .count();
        assert!(title_rows > 8, "title: {title_rows} rows of text");
    }

    #[test]
    fn the_axes_fit_the_data() {
        assert_eq!(delivered_range(&[(0.0, 100.0)]), (99.95, 100.05));
        let (low, high) = delivered_range(&[(0.0, 80.0), (1.0, 100.0)]);
        assert!(low < 80.0 && low > 75.0 && high > 100.0 && high < 102.0);
        assert_eq!(delivered_range(&[(0.0, 2.0)]).0, 0.0);
        assert_eq!(open_range(&[(0.0, 0.0), (1.0, 100.0)]), (-3.0, 106.0));
        assert_eq!(trim(600.0), "600");
        assert_eq!(trim(99.5), "99.5");
        assert_eq!(trim(-0.0001), "0");
    }

    #[test]
    fn the_svg_has_a_title_axis_labels_and_a_legend() {
        let r = report();
        let svg = svg(&r).expect("the SVG");
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "sds sim: 8 participants, one message every 10.0 s each, 20 % loss, repair on, seed 2",
            "virtual time (s)",
            "delivered (% of the pairs sent so far)",
            "open pairs (sent, not yet delivered)",
            "delivered, % of (member, message) pairs sent so far (left axis)",
            "open pairs (right axis)",
            "sending ends (120 s)",
        ] {
            assert!(
                svg.contains(&format!("\n{text}\n</text>")),
                "{text:?} in the SVG"
            );
        }
    }

    /// The bitmap as a PNG (8-bit RGB, stored deflate blocks): for looking at it, not checked.
    fn png((w, h): (u32, u32), pixels: &Pixels) -> Vec<u8> {
        fn crc(data: &[u8]) -> u32 {
            let mut c = !0u32;
            for b in data {
                c ^= *b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc(&body).to_be_bytes());
        }
        let mut raw = Vec::new();
        for row in pixels.chunks(w as usize) {
            raw.push(0);
            raw.extend(row.iter().flatten());
        }
        let mut z = vec![0x78, 0x01];
        let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
        for (i, block) in blocks.iter().enumerate() {
            z.push(u8::from(i + 1 == blocks.len()));
            let len = block.len() as u16;
            z.extend_from_slice(&len.to_le_bytes());
            z.extend_from_slice(&(!len).to_le_bytes());
            z.extend_from_slice(block);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for x in &raw {
            a = (a + *x as u32) % 65_521;
            b = (b + a) % 65_521;
        }
        z.extend_from_slice(&((b << 16) | a).to_be_bytes());
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut header = Vec::new();
        header.extend_from_slice(&w.to_be_bytes());
        header.extend_from_slice(&h.to_be_bytes());
        header.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &header);
        chunk(&mut out, b"IDAT", &z);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}
