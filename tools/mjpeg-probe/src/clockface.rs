/*!
The glass-to-glass clock that `/latency` (src/latency.html) draws: its
layout, finding it in a picture and reading it. Pure code, no I/O; the page
carries a JavaScript copy of the same layout and the same steps, so that
the page and `mjpeg-probe glass` read a frame alike.

The code is a grid of 30 x 20 modules on a white card with a quiet zone of
2 modules (34 x 24 in all). Module (c, r) covers [c, c+1) x [r, r+1).

```text
 FFFFFFF.ddddddddddddddd.FFFFFFF     F  finder: 7x7, black ring, white
 F.....F.d d d d d d d  .F.....F        ring, black 3x3 core (QR style)
 F.FFF.F.  normal copy  .F.FFF.F     d  data cell: 2x2 modules, 7 across
 F.FFF.F.  5 rows x 7   .F.FFF.F        and 10 down; columns 8..21
 F.FFF.F.               .F.FFF.F     .  white separator (columns 7, 22)
 F.....F.               .F.....F
 FFFFFFF.               .FFFFFFF     rows 0..9:   the normal copy
 ........               ........     rows 10..19: the inverted copy,
 ........ inverted copy ........                  each cell at the same
 ...                             ...              place in its half
```

Each half has 35 cells, k = 7 * row + column within the half: k = 0 and
k = 34 are references (dark in the normal copy), k = 1..=32 are the 32 bits
of the Gray code of the clock (most significant first), k = 33 is their
parity. The clock is `Date.now()` modulo 2^32: Unix milliseconds.

Reading compares each cell with its inverted twin, never with a fixed
threshold: a bit counts only when one of the two is clearly darker than the
other (by 40 % of the black-to-white range measured on the finders). A frame
caught while the clock changed (a blend of two exposures, or a tear where
the picture above a line is older than below it) has some twin pairs
equally grey, or equally dark, and is rejected; because the two copies lie
in the top and bottom halves, a single tear leaves one copy whole, so what
passes is one of the two clock values, never a mix. The Gray code keeps
the bits that change between near values few, and the parity catches a
single misread bit. The references tell a picture turned by 180 degrees
(read backwards, the references come out light) from an upright one.

The four finder centres form a rectangle of 23 x 13 modules: finding them
fixes the code's position, scale and perspective (a homography from the
unit square). Finders are found as in QR readers: rows of the binarised
picture are scanned for runs of dark, light, dark, light, dark in the ratio
1:1:3:1:1, each hit is checked down its column, hits are clustered, and
sets of four are tried, largest first, until one reads.
*/

/// Modules across and down the code, without the quiet zone.
pub const COLS: usize = 30;
#[cfg_attr(not(test), allow(dead_code))] // The layout, drawn by the page and the tests.
pub const ROWS: usize = 20;
/// White modules around the code on the page.
#[cfg_attr(not(test), allow(dead_code))] // The layout, drawn by the page and the tests.
pub const QUIET: usize = 2;

/// Cells in each half: 7 across, 5 down.
pub const CELLS: usize = 35;
const CELL_COLS: usize = 7;

/// Finder centres in module coordinates, clockwise from the top left.
const CENTRES: [(f64, f64); 4] = [(3.5, 3.5), (26.5, 3.5), (26.5, 16.5), (3.5, 16.5)];
/// Distances between finder centres, in modules.
const SPAN_X: f64 = 23.0;
const SPAN_Y: f64 = 13.0;

/// A bit counts when its twin cells differ by this share of the finders'
/// black-to-white range.
const BIT_CONTRAST: f64 = 0.4;
/// Below this black-to-white range (of 255) nothing is read.
const MIN_RANGE: f64 = 24.0;
/// Finder candidates tried, largest first.
const MAX_CLUSTERS: usize = 12;

/// The centre of cell `k` of the normal (top) or inverted (bottom) copy.
pub fn cell_centre(k: usize, inverted: bool) -> (f64, f64) {
    let column = k % CELL_COLS;
    let row = k / CELL_COLS + if inverted { 5 } else { 0 };
    (9.0 + 2.0 * column as f64, 1.0 + 2.0 * row as f64)
}

/// Whether each cell of the normal copy is dark, for clock value `value`.
#[cfg_attr(not(test), allow(dead_code))] // The layout, drawn by the page and the tests.
pub fn cells(value: u32) -> [bool; CELLS] {
    let gray = value ^ (value >> 1);
    let mut dark = [false; CELLS];
    dark[0] = true;
    dark[34] = true;
    for bit in 0..32 {
        dark[1 + bit] = (gray >> (31 - bit)) & 1 == 1;
    }
    dark[33] = gray.count_ones() % 2 == 1;
    dark
}

/// The binary value of a Gray code.
pub fn from_gray(gray: u32) -> u32 {
    let mut value = gray;
    for shift in [16, 8, 4, 2, 1] {
        value ^= value >> shift;
    }
    value
}

/// Whether module (c, r) of the code is dark: finders and data cells;
/// anything outside the 30 x 20 grid is white. For tests and renderers.
#[cfg_attr(not(test), allow(dead_code))] // The layout, drawn by the page and the tests.
pub fn module_dark(c: i64, r: i64, value: u32) -> bool {
    if !(0..COLS as i64).contains(&c) || !(0..ROWS as i64).contains(&r) {
        return false;
    }
    for (fx, fy) in CENTRES {
        let (dx, dy) = ((c as f64 + 0.5 - fx).abs(), (r as f64 + 0.5 - fy).abs());
        if dx < 3.5 && dy < 3.5 {
            let ring = dx.max(dy);
            return !(1.5..=2.5).contains(&ring);
        }
    }
    if !(8..22).contains(&c) {
        return false;
    }
    let column = ((c - 8) / 2) as usize;
    let row = (r / 2) as usize;
    let k = (row % 5) * CELL_COLS + column;
    let dark = cells(value)[k];
    if row < 5 {
        dark
    } else {
        !dark
    }
}

/// A picture's luminance, one byte a pixel, row after row.
pub struct Luma<'a> {
    pub width: usize,
    pub height: usize,
    pub pixels: &'a [u8],
}

impl Luma<'_> {
    /// The pixel that covers (x, y), or None outside the picture.
    fn at(&self, x: f64, y: f64) -> Option<f64> {
        if !(x >= 0.0 && y >= 0.0) {
            return None;
        }
        let (x, y) = (x as usize, y as usize);
        (x < self.width && y < self.height).then(|| f64::from(self.pixels[y * self.width + x]))
    }
}

/// A perspective map from the unit square to the picture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Homography {
    a: [f64; 9],
}

impl Homography {
    /// Maps (0,0), (1,0), (1,1), (0,1) to the four points (Heckbert's
    /// square-to-quadrilateral, as in ZXing's PerspectiveTransform).
    pub fn square_to(p: [(f64, f64); 4]) -> Homography {
        let [(x0, y0), (x1, y1), (x2, y2), (x3, y3)] = p;
        let (dx3, dy3) = (x0 - x1 + x2 - x3, y0 - y1 + y2 - y3);
        let a = if dx3.abs() < 1e-9 && dy3.abs() < 1e-9 {
            [x1 - x0, x2 - x1, x0, y1 - y0, y2 - y1, y0, 0.0, 0.0, 1.0]
        } else {
            let (dx1, dx2, dy1, dy2) = (x1 - x2, x3 - x2, y1 - y2, y3 - y2);
            let denominator = dx1 * dy2 - dx2 * dy1;
            let g = (dx3 * dy2 - dx2 * dy3) / denominator;
            let h = (dx1 * dy3 - dx3 * dy1) / denominator;
            [
                x1 - x0 + g * x1,
                x3 - x0 + h * x3,
                x0,
                y1 - y0 + g * y1,
                y3 - y0 + h * y3,
                y0,
                g,
                h,
                1.0,
            ]
        };
        Homography { a }
    }

    /// Where the unit-square point (u, v) lands.
    pub fn map(&self, u: f64, v: f64) -> (f64, f64) {
        let a = &self.a;
        let w = a[6] * u + a[7] * v + a[8];
        ((a[0] * u + a[1] * v + a[2]) / w, (a[3] * u + a[4] * v + a[5]) / w)
    }

    /// Where module coordinates (c, r) land.
    pub fn module(&self, c: f64, r: f64) -> (f64, f64) {
        self.map((c - CENTRES[0].0) / SPAN_X, (r - CENTRES[0].1) / SPAN_Y)
    }
}

/// What was read from a picture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The clock: Unix milliseconds modulo 2^32.
    pub value: u32,
    /// The code's finder centres in the picture (for the next frame).
    pub corners: [(f64, f64); 4],
    /// Approximate module size in pixels.
    pub module: f64,
    /// The smallest twin contrast, as a share of the black-to-white range.
    pub margin: f64,
}

/// Why a picture did not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No four finders that look like the code.
    NotFound,
    /// Found, but some bit's twins were too alike (caught mid-change) or a
    /// check failed.
    Unreadable,
}

/// Reads the code through `h`, or says why it cannot.
pub fn read_at(img: &Luma, h: &Homography) -> Result<(u32, f64), Miss> {
    let sample = |c: f64, r: f64| {
        let (x, y) = h.module(c, r);
        img.at(x, y)
    };
    // Levels from the finders: their cores are black, their inner rings white.
    let (mut black, mut white) = (Vec::with_capacity(36), Vec::with_capacity(32));
    for (fx, fy) in CENTRES {
        for dy in [-1.0, 0.0, 1.0] {
            for dx in [-1.0, 0.0, 1.0] {
                black.push(sample(fx + dx, fy + dy).ok_or(Miss::Unreadable)?);
            }
        }
        for (dx, dy) in [(-2.0, -2.0), (0.0, -2.0), (2.0, -2.0), (2.0, 0.0)].into_iter().chain([
            (2.0, 2.0),
            (0.0, 2.0),
            (-2.0, 2.0),
            (-2.0, 0.0),
        ]) {
            white.push(sample(fx + dx, fy + dy).ok_or(Miss::Unreadable)?);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (b, w) = (mean(&black), mean(&white));
    let range = w - b;
    if range < MIN_RANGE {
        return Err(Miss::Unreadable);
    }
    let middle = b + range / 2.0;
    if black.iter().any(|&v| v >= middle) || white.iter().any(|&v| v <= middle) {
        return Err(Miss::Unreadable);
    }
    let cell = |k: usize, inverted: bool| -> Option<f64> {
        let (c, r) = cell_centre(k, inverted);
        let mut sum = 0.0;
        for dy in [-0.5, 0.0, 0.5] {
            for dx in [-0.5, 0.0, 0.5] {
                sum += sample(c + dx, r + dy)?;
            }
        }
        Some(sum / 9.0)
    };
    let mut bits = [false; CELLS];
    let mut margin = f64::MAX;
    for (k, bit) in bits.iter_mut().enumerate() {
        let normal = cell(k, false).ok_or(Miss::Unreadable)?;
        let inverted = cell(k, true).ok_or(Miss::Unreadable)?;
        let difference = (inverted - normal) / range;
        if difference.abs() < BIT_CONTRAST {
            return Err(Miss::Unreadable);
        }
        margin = margin.min(difference.abs());
        *bit = difference > 0.0;
    }
    // Upright, the references read dark; turned by 180 degrees, cell k is
    // read from the other copy's cell 34 - k, so every bit comes out
    // inverted and mirrored in order.
    let dark: [bool; CELLS] = match (bits[0], bits[34]) {
        (true, true) => bits,
        (false, false) => std::array::from_fn(|k| !bits[CELLS - 1 - k]),
        _ => return Err(Miss::Unreadable),
    };
    let gray = dark[1..=32].iter().fold(0u32, |g, &bit| g << 1 | u32::from(bit));
    if (gray.count_ones() % 2 == 1) != dark[33] {
        return Err(Miss::Unreadable);
    }
    Ok((from_gray(gray), margin))
}

/// A finder pattern seen in the picture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finder {
    pub x: f64,
    pub y: f64,
    /// Module size in pixels.
    pub module: f64,
    /// Rows whose scan found it.
    pub hits: u32,
}

/// Which pixels are dark: darker than the mean of a window around them
/// (a sixth of the picture's larger side each way), so that uneven light
/// across a filmed screen does not matter.
fn binarise(img: &Luma) -> Vec<bool> {
    let (w, h) = (img.width, img.height);
    let stride = w + 1;
    let mut sums = vec![0u64; stride * (h + 1)];
    for y in 0..h {
        let mut row = 0u64;
        for x in 0..w {
            row += u64::from(img.pixels[y * w + x]);
            sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
        }
    }
    let reach = (w.max(h) / 6).max(8);
    let mut dark = vec![false; w * h];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(reach), (y + reach + 1).min(h));
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(reach), (x + reach + 1).min(w));
            let sum = sums[y1 * stride + x1] + sums[y0 * stride + x0]
                - sums[y0 * stride + x1]
                - sums[y1 * stride + x0];
            let count = ((x1 - x0) * (y1 - y0)) as u64;
            // Darker than the local mean, by at least 4 of 255.
            dark[y * w + x] = (u64::from(img.pixels[y * w + x]) + 4) * count < sum;
        }
    }
    dark
}

/// Five run lengths in the ratio 1:1:3:1:1, within half a module each.
fn finder_ratio(runs: &[usize; 5]) -> Option<f64> {
    let total: usize = runs.iter().sum();
    if total < 7 {
        return None;
    }
    let module = total as f64 / 7.0;
    let slack = module / 2.0 + 0.5;
    let ok = (runs[0] as f64 - module).abs() < slack
        && (runs[1] as f64 - module).abs() < slack
        && (runs[2] as f64 - 3.0 * module).abs() < 3.0 * slack
        && (runs[3] as f64 - module).abs() < slack
        && (runs[4] as f64 - module).abs() < slack;
    ok.then_some(module)
}

/// The five runs through (x, y) along one axis, centred on the dark run
/// that holds (x, y): returns the runs and the centre of the middle one.
fn cross_runs(
    dark: &[bool],
    len: usize,
    index: impl Fn(usize) -> usize,
    at: usize,
    limit: usize,
) -> Option<([usize; 5], f64)> {
    if !dark[index(at)] {
        return None;
    }
    // Backwards: the dark middle, then light, then dark.
    let mut runs = [0usize; 5];
    let mut i = at as isize;
    for (slot, want) in [(2, true), (1, false), (0, true)] {
        while i >= 0 && dark[index(i as usize)] == want && runs[slot] <= limit {
            runs[slot] += 1;
            i -= 1;
        }
        if runs[slot] == 0 || runs[slot] > limit {
            return None;
        }
    }
    let start_of_middle = at + 1 - runs[2];
    let mut i = at + 1;
    for (slot, want) in [(2, true), (3, false), (4, true)] {
        while i < len && dark[index(i)] == want && runs[slot] <= limit {
            runs[slot] += 1;
            i += 1;
        }
        if runs[slot] == 0 || runs[slot] > limit {
            return None;
        }
    }
    Some((runs, start_of_middle as f64 + runs[2] as f64 / 2.0))
}

/// Every finder pattern in the picture, largest first.
pub fn find_finders(img: &Luma) -> Vec<Finder> {
    let (w, h) = (img.width, img.height);
    if w < 14 || h < 14 || img.pixels.len() < w * h {
        return Vec::new();
    }
    let dark = binarise(img);
    let mut clusters: Vec<Finder> = Vec::new();
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(w); // (start, length)
    for y in 0..h {
        runs.clear();
        let row = &dark[y * w..(y + 1) * w];
        let mut start = 0;
        for x in 1..=w {
            if x == w || row[x] != row[start] {
                runs.push((start, x - start));
                start = x;
            }
        }
        // Five runs starting with a dark one.
        let first_dark = usize::from(!row[0]);
        for i in (first_dark..runs.len().saturating_sub(4)).step_by(2) {
            let five = [runs[i].1, runs[i + 1].1, runs[i + 2].1, runs[i + 3].1, runs[i + 4].1];
            let Some(module) = finder_ratio(&five) else { continue };
            let total: usize = five.iter().sum();
            let x = runs[i + 2].0 + runs[i + 2].1 / 2;
            // Down the column through the middle run.
            let limit = total * 2;
            let Some((vertical, cy)) = cross_runs(&dark, h, |j| j * w + x, y, limit) else {
                continue;
            };
            let Some(v_module) = finder_ratio(&vertical) else { continue };
            if !(0.6..=1.0 / 0.6).contains(&(v_module / module)) {
                continue;
            }
            // Across again through the refined centre row.
            let ry = (cy as usize).min(h - 1);
            let Some((horizontal, cx)) = cross_runs(&dark, w, |i| ry * w + i, x, limit) else {
                continue;
            };
            let Some(h_module) = finder_ratio(&horizontal) else { continue };
            let found = Finder { x: cx, y: cy, module: (h_module + v_module) / 2.0, hits: 1 };
            merge(&mut clusters, found);
        }
    }
    clusters.retain(|f| f.hits >= 2 || f.module < 1.5);
    clusters.sort_by(|a, b| b.module.total_cmp(&a.module).then(b.hits.cmp(&a.hits)));
    clusters
}

fn merge(clusters: &mut Vec<Finder>, f: Finder) {
    for c in clusters.iter_mut() {
        let near = (c.x - f.x).abs() <= c.module * 1.5 && (c.y - f.y).abs() <= c.module * 1.5;
        if near && (0.67..=1.5).contains(&(f.module / c.module)) {
            let n = f64::from(c.hits);
            c.x = (c.x * n + f.x) / (n + 1.0);
            c.y = (c.y * n + f.y) / (n + 1.0);
            c.module = (c.module * n + f.module) / (n + 1.0);
            c.hits += 1;
            return;
        }
    }
    clusters.push(f);
}

/// Four finders in clockwise order (on screen, y down) from the one that
/// starts a long side, if they look like the code's: a convex quadrilateral
/// whose sides measure about 23 and 13 of their modules.
fn arrange(four: [&Finder; 4]) -> Option<[(f64, f64); 4]> {
    let modules: Vec<f64> = four.iter().map(|f| f.module).collect();
    let (smallest, largest) =
        modules.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &m| (lo.min(m), hi.max(m)));
    if largest > smallest * 2.0 {
        return None;
    }
    let module = modules.iter().sum::<f64>() / 4.0;
    let (mx, my) = four.iter().fold((0.0, 0.0), |(x, y), f| (x + f.x / 4.0, y + f.y / 4.0));
    let mut points: Vec<(f64, f64)> = four.iter().map(|f| (f.x, f.y)).collect();
    points.sort_by(|a, b| (a.1 - my).atan2(a.0 - mx).total_cmp(&(b.1 - my).atan2(b.0 - mx)));
    let side = |i: usize| {
        let (a, b) = (points[i], points[(i + 1) % 4]);
        ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt()
    };
    let turn = |i: usize| {
        let (a, b, c) = (points[i], points[(i + 1) % 4], points[(i + 2) % 4]);
        (b.0 - a.0) * (c.1 - b.1) - (b.1 - a.1) * (c.0 - b.0)
    };
    if !(0..4).all(|i| turn(i) > 0.0) {
        return None;
    }
    let start = if side(0) + side(2) >= side(1) + side(3) { 0 } else { 1 };
    let long = (side(start) + side(start + 2)) / 2.0 / module;
    let short = (side(start + 1) + side((start + 3) % 4)) / 2.0 / module;
    let fits = |measured: f64, expected: f64| (expected / 1.8..=expected * 1.8).contains(&measured);
    if !(fits(long, SPAN_X) && fits(short, SPAN_Y)) {
        return None;
    }
    Some(std::array::from_fn(|i| points[(start + i) % 4]))
}

/// Reads the code at the finder centres `corners` (clockwise from the top
/// left, or turned by 180 degrees).
pub fn read_corners(img: &Luma, corners: [(f64, f64); 4]) -> Result<Reading, Miss> {
    let h = Homography::square_to(corners);
    let (value, margin) = read_at(img, &h)?;
    let (a, b) = (h.module(0.0, 0.0), h.module(COLS as f64, 0.0));
    let module = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt() / COLS as f64;
    Ok(Reading { value, corners, module, margin })
}

/// Finds the code and reads it: first where it was in the last frame
/// (`hint`), then by a search of the whole picture, largest code first.
pub fn read(img: &Luma, hint: Option<[(f64, f64); 4]>) -> Result<Reading, Miss> {
    if let Some(corners) = hint {
        if let Ok(reading) = read_corners(img, corners) {
            return Ok(reading);
        }
    }
    let finders = find_finders(img);
    let tried = &finders[..finders.len().min(MAX_CLUSTERS)];
    let mut miss = Miss::NotFound;
    let n = tried.len();
    for a in 0..n {
        for b in a + 1..n {
            for c in b + 1..n {
                for d in c + 1..n {
                    let Some(corners) = arrange([&tried[a], &tried[b], &tried[c], &tried[d]])
                    else {
                        continue;
                    };
                    match read_corners(img, corners) {
                        Ok(reading) => return Ok(reading),
                        Err(_) => miss = Miss::Unreadable,
                    }
                }
            }
        }
    }
    Err(miss)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A picture of the code for `value` with its finder centres at
    /// `corners`, on `background`: each pixel shows the module under its
    /// centre, through the inverse of the code's homography.
    pub fn render(
        width: usize,
        height: usize,
        value: u32,
        corners: [(f64, f64); 4],
        background: u8,
    ) -> Vec<u8> {
        let a = Homography::square_to(corners).a;
        // The adjugate of the 3x3 matrix maps picture points back.
        let inv = [
            a[4] * a[8] - a[5] * a[7],
            a[2] * a[7] - a[1] * a[8],
            a[1] * a[5] - a[2] * a[4],
            a[5] * a[6] - a[3] * a[8],
            a[0] * a[8] - a[2] * a[6],
            a[2] * a[3] - a[0] * a[5],
            a[3] * a[7] - a[4] * a[6],
            a[1] * a[6] - a[0] * a[7],
            a[0] * a[4] - a[1] * a[3],
        ];
        let card = QUIET as f64;
        let mut out = vec![background; width * height];
        for y in 0..height {
            for x in 0..width {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let w = inv[6] * px + inv[7] * py + inv[8];
                let u = (inv[0] * px + inv[1] * py + inv[2]) / w;
                let v = (inv[3] * px + inv[4] * py + inv[5]) / w;
                let (c, r) = (CENTRES[0].0 + u * SPAN_X, CENTRES[0].1 + v * SPAN_Y);
                if c >= -card && c < COLS as f64 + card && r >= -card && r < ROWS as f64 + card {
                    let dark = module_dark(c.floor() as i64, r.floor() as i64, value);
                    out[y * width + x] = if dark { 20 } else { 235 };
                }
            }
        }
        out
    }

    /// Finder centres for an upright code with `module` pixels a module and
    /// its grid's top left at (x, y).
    pub fn upright(x: f64, y: f64, module: f64) -> [(f64, f64); 4] {
        CENTRES.map(|(c, r)| (x + c * module, y + r * module))
    }

    fn luma(width: usize, height: usize, pixels: &[u8]) -> Luma<'_> {
        Luma { width, height, pixels }
    }

    #[test]
    fn gray_codes_round_trip_and_cells_hold_parity() {
        for v in [0u32, 1, 2, 3, 0x7FFF_FFFF, 0x8000_0000, u32::MAX, 1_732_000_123] {
            assert_eq!(from_gray(v ^ (v >> 1)), v);
            let dark = cells(v);
            assert!(dark[0] && dark[34]);
            let ones = dark[1..=32].iter().filter(|&&d| d).count();
            assert_eq!(ones % 2 == 1, dark[33]);
        }
    }

    #[test]
    fn the_layout_has_finders_and_twin_cells() {
        let v = 0x1234_5678;
        // Finder rings and core.
        assert!(module_dark(0, 0, v) && !module_dark(1, 1, v) && module_dark(3, 3, v));
        assert!(module_dark(29, 19, v) && !module_dark(28, 18, v) && module_dark(26, 16, v));
        // Separators and the quiet zone.
        assert!((0..20).all(|r| !module_dark(7, r, v) && !module_dark(22, r, v)));
        assert!(!module_dark(-1, 5, v) && !module_dark(30, 5, v));
        // Every cell and its twin differ.
        for k in 0..CELLS {
            let (c, r) = cell_centre(k, false);
            let (c2, r2) = cell_centre(k, true);
            assert_eq!(r2 - r, 10.0);
            let dark = module_dark(c as i64, r as i64, v);
            assert_eq!(dark, cells(v)[k]);
            assert_eq!(module_dark(c2 as i64, r2 as i64, v), !dark);
        }
    }

    #[test]
    fn reads_an_upright_code_found_anywhere() {
        let (w, h) = (640, 480);
        let v = 1_732_000_123u32;
        let corners = upright(37.0, 61.0, 9.0);
        let img = render(w, h, v, corners, 128);
        let finders = find_finders(&luma(w, h, &img));
        assert_eq!(finders.len(), 4, "{finders:?}");
        for f in &finders {
            assert!((f.module - 9.0).abs() < 1.0, "{f:?}");
            assert!(corners.iter().any(|c| (c.0 - f.x).abs() < 1.5 && (c.1 - f.y).abs() < 1.5));
        }
        let reading = read(&luma(w, h, &img), None).unwrap();
        assert_eq!(reading.value, v);
        assert!((reading.module - 9.0).abs() < 0.5, "{reading:?}");
        assert!(reading.margin > 0.9, "{reading:?}");
        // The next frame reads at the same place without a search.
        let img2 = render(w, h, v + 17, corners, 128);
        let again = read_corners(&luma(w, h, &img2), reading.corners).unwrap();
        assert_eq!(again.value, v + 17);
    }

    #[test]
    fn reads_small_turned_and_slanted_codes() {
        let (w, h) = (640, 480);
        // 4 pixels a module: 136 pixels for the whole card.
        let small = upright(300.0, 200.0, 4.0);
        // Upside down: the corners listed from the bottom right.
        let big = upright(100.0, 80.0, 12.0);
        let turned = [big[2], big[3], big[0], big[1]];
        // A perspective: the right side nearer the camera.
        let slanted = [(150.0, 150.0), (450.0, 125.0), (460.0, 345.0), (140.0, 300.0)];
        for (name, corners) in [("small", small), ("turned", turned), ("slanted", slanted)] {
            for v in [0u32, 0xFFFF_FFFF, 0x5555_AAAA, 1_732_000_999] {
                let img = render(w, h, v, corners, 90);
                let got = read(&luma(w, h, &img), None);
                assert_eq!(got.map(|r| r.value), Ok(v), "{name} {v:#x}");
            }
        }
    }

    #[test]
    fn picks_the_largest_of_nested_codes() {
        // The test screen shows the stream beside the clock: the stream
        // holds a smaller copy of the clock, with an older value.
        let (w, h) = (640, 480);
        let outer = upright(10.0, 10.0, 11.0);
        let mut img = render(w, h, 5000, outer, 255);
        let inner = render(w, h, 4000, upright(400.0, 300.0, 4.0), 255);
        for y in 290..480 {
            for x in 390..640 {
                img[y * w + x] = inner[y * w + x];
            }
        }
        assert_eq!(read(&luma(w, h, &img), None).map(|r| r.value), Ok(5000));
    }

    #[test]
    fn a_blend_or_a_tear_of_two_values_never_reads_as_a_third() {
        let (w, h) = (400, 300);
        let corners = upright(20.0, 20.0, 10.0);
        // 0x0FFF_FFFF -> 0x1000_0010 changes many bits at once.
        for (a, b) in [(1_000u32, 1_017u32), (0x0FFF_FFFF, 0x1000_0010), (7, 0xFFFF_0000)] {
            let pa = render(w, h, a, corners, 128);
            let pb = render(w, h, b, corners, 128);
            for share in [0.5, 0.6] {
                let blend: Vec<u8> = pa
                    .iter()
                    .zip(&pb)
                    .map(|(&x, &y)| (f64::from(x) * share + f64::from(y) * (1.0 - share)) as u8)
                    .collect();
                let got = read(&luma(w, h, &blend), None).map(|r| r.value);
                assert!(got.is_err() || got == Ok(a) || got == Ok(b), "{a} {b} {share}: {got:?}");
            }
            for tear in (0..h).step_by(7) {
                let mut torn = pb.clone();
                torn[..tear * w].copy_from_slice(&pa[..tear * w]);
                let got = read(&luma(w, h, &torn), None).map(|r| r.value);
                assert!(got.is_err() || got == Ok(a) || got == Ok(b), "{a} {b} {tear}: {got:?}");
            }
        }
    }

    #[test]
    fn nothing_is_read_from_noise_or_a_blank_picture() {
        let (w, h) = (320, 240);
        let blank = vec![200u8; w * h];
        assert_eq!(read(&luma(w, h, &blank), None), Err(Miss::NotFound));
        let mut state = 12345u32;
        let noise: Vec<u8> = (0..w * h)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 24) as u8
            })
            .collect();
        assert!(read(&luma(w, h, &noise), None).is_err());
    }
}
