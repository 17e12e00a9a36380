/*!
The pictures viewers get when the source has none: "starting camera…" and
"NO SIGNAL" with the reason and the time, at the last frame's size so that
clients which fix the size on the first frame (OpenCV) go on decoding.

Drawing is pure ([`render`]); encoding a large picture takes milliseconds
to tens of them on a small Pi, so a [`Renderer`] thread does it and wakes
the loop with the result.
*/

use mio::Waker;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

/// The size used before any frame has told the real one.
pub const DEFAULT_SIZE: (u16, u16) = (640, 480);

/// Lower quality than a camera's: flat grey and text compress to little.
const QUALITY: u8 = 50;

/// Glyphs of 5x7 pixels, one byte a row, the low five bits left to right.
const GLYPHS: &[(char, [u8; 7])] = &[
    ('A', [14, 17, 17, 31, 17, 17, 17]),
    ('B', [30, 17, 17, 30, 17, 17, 30]),
    ('C', [14, 17, 16, 16, 16, 17, 14]),
    ('D', [30, 17, 17, 17, 17, 17, 30]),
    ('E', [31, 16, 16, 30, 16, 16, 31]),
    ('F', [31, 16, 16, 30, 16, 16, 16]),
    ('G', [14, 17, 16, 23, 17, 17, 15]),
    ('H', [17, 17, 17, 31, 17, 17, 17]),
    ('I', [14, 4, 4, 4, 4, 4, 14]),
    ('J', [7, 2, 2, 2, 2, 18, 12]),
    ('K', [17, 18, 20, 24, 20, 18, 17]),
    ('L', [16, 16, 16, 16, 16, 16, 31]),
    ('M', [17, 27, 21, 21, 17, 17, 17]),
    ('N', [17, 17, 25, 21, 19, 17, 17]),
    ('O', [14, 17, 17, 17, 17, 17, 14]),
    ('P', [30, 17, 17, 30, 16, 16, 16]),
    ('Q', [14, 17, 17, 17, 21, 18, 13]),
    ('R', [30, 17, 17, 30, 20, 18, 17]),
    ('S', [15, 16, 16, 14, 1, 1, 30]),
    ('T', [31, 4, 4, 4, 4, 4, 4]),
    ('U', [17, 17, 17, 17, 17, 17, 14]),
    ('V', [17, 17, 17, 17, 17, 10, 4]),
    ('W', [17, 17, 17, 21, 21, 21, 10]),
    ('X', [17, 17, 10, 4, 10, 17, 17]),
    ('Y', [17, 17, 10, 4, 4, 4, 4]),
    ('Z', [31, 1, 2, 4, 8, 16, 31]),
    ('0', [14, 17, 19, 21, 25, 17, 14]),
    ('1', [4, 12, 4, 4, 4, 4, 14]),
    ('2', [14, 17, 1, 2, 4, 8, 31]),
    ('3', [31, 2, 4, 2, 1, 17, 14]),
    ('4', [2, 6, 10, 18, 31, 2, 2]),
    ('5', [31, 16, 30, 1, 1, 17, 14]),
    ('6', [6, 8, 16, 30, 17, 17, 14]),
    ('7', [31, 1, 2, 4, 8, 8, 8]),
    ('8', [14, 17, 17, 14, 17, 17, 14]),
    ('9', [14, 17, 17, 15, 1, 2, 12]),
    (' ', [0, 0, 0, 0, 0, 0, 0]),
    ('.', [0, 0, 0, 0, 0, 12, 12]),
    (':', [0, 12, 12, 0, 12, 12, 0]),
    (',', [0, 0, 0, 0, 12, 4, 8]),
    (';', [0, 12, 12, 0, 12, 4, 8]),
    ('-', [0, 0, 0, 31, 0, 0, 0]),
    ('(', [2, 4, 8, 8, 8, 4, 2]),
    (')', [8, 4, 2, 2, 2, 4, 8]),
    ('/', [0, 1, 2, 4, 8, 16, 0]),
    ('\'', [12, 4, 8, 0, 0, 0, 0]),
    ('=', [0, 0, 31, 0, 31, 0, 0]),
    ('_', [0, 0, 0, 0, 0, 0, 31]),
    ('+', [0, 4, 4, 31, 4, 4, 0]),
    ('%', [24, 25, 2, 4, 8, 19, 3]),
    ('!', [4, 4, 4, 4, 4, 0, 4]),
    ('?', [14, 17, 1, 2, 4, 0, 4]),
];

fn glyph(c: char) -> [u8; 7] {
    let c = c.to_ascii_uppercase();
    GLYPHS
        .iter()
        .find(|(g, _)| *g == c)
        .or_else(|| GLYPHS.iter().find(|(g, _)| *g == '?'))
        .unwrap()
        .1
}

/// A greyscale picture.
struct Grey {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Grey {
    /// Draws `text` with its top left at (x, y), `scale` pixels a dot,
    /// clipped to the picture.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (dy, row) in rows.iter().enumerate() {
                for dx in 0..5 {
                    if row >> (4 - dx) & 1 == 1 {
                        self.dot(x + (i * 6 + dx) * scale, y + dy * scale, scale);
                    }
                }
            }
        }
    }

    fn dot(&mut self, x: usize, y: usize, scale: usize) {
        for row in y..(y + scale).min(self.height) {
            let line = &mut self.pixels[row * self.width..(row + 1) * self.width];
            let end = (x + scale).min(self.width);
            if x < end {
                line[x..end].fill(235);
            }
        }
    }
}

/// A JPEG of `size` showing `title` large and `lines` below it, centred.
/// `…` becomes three dots; characters without a glyph become `?`.
pub fn render(size: (u16, u16), title: &str, lines: &[String]) -> Vec<u8> {
    let (width, height) = (usize::from(size.0.max(16)), usize::from(size.1.max(16)));
    let mut grey = Grey { width, height, pixels: vec![40; width * height] };
    let title = title.replace('…', "...");
    let lines: Vec<String> = lines.iter().map(|l| l.replace('…', "...")).collect();
    // The title fills at most 3/4 of the width; the lines at most 9/10.
    let fit =
        |text: &str, share: usize| (width * share / 10 / (text.chars().count().max(1) * 6)).max(1);
    let big = fit(&title, 7).min(height / 40).max(1);
    let small = lines.iter().map(|l| fit(l, 9)).min().unwrap_or(big).min(big / 2).max(1);
    let total = 9 * big + lines.len() * 10 * small;
    let mut y = height.saturating_sub(total) / 2;
    let centre =
        |text: &str, scale: usize| width.saturating_sub(text.chars().count() * 6 * scale) / 2;
    grey.text(centre(&title, big), y, &title, big);
    y += 9 * big;
    for line in &lines {
        grey.text(centre(line, small), y, line, small);
        y += 10 * small;
    }
    let mut out = Vec::with_capacity(width * height / 16);
    let encoder = jpeg_encoder::Encoder::new(&mut out, QUALITY);
    // Sizes come from u16 and the buffer matches them: encoding cannot fail.
    let _ =
        encoder.encode(&grey.pixels, width as u16, height as u16, jpeg_encoder::ColorType::Luma);
    out
}

/// The width and height a JPEG's frame header (SOF) gives, if it has one.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return None;
        }
        let marker = jpeg[at + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let sof = jpeg.get(at + 5..at + 9)?;
            let height = u16::from_be_bytes([sof[0], sof[1]]);
            let width = u16::from_be_bytes([sof[2], sof[3]]);
            return (width > 0 && height > 0).then_some((width, height));
        }
        if marker == 0xDA {
            return None;
        }
        at += 2 + len;
    }
    None
}

/// What a generated frame stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The source is starting: a placeholder.
    Starting,
    /// The source is down.
    Offline,
}

impl Kind {
    /// The `X-Source-State` value for parts and snapshots of this kind.
    pub fn state(self) -> &'static str {
        match self {
            Kind::Starting => "starting",
            Kind::Offline => "offline",
        }
    }
}

pub struct Request {
    pub kind: Kind,
    pub size: (u16, u16),
    pub title: String,
    pub lines: Vec<String>,
}

/// Renders on its own thread, and wakes the loop when a picture is ready.
pub struct Renderer {
    requests: Sender<Request>,
    done: Receiver<(Kind, Vec<u8>)>,
    /// A request is out: at most one at a time, so they never pile up.
    busy: bool,
}

impl Renderer {
    pub fn spawn(waker: Arc<Waker>) -> std::io::Result<Renderer> {
        let (requests, todo) = mpsc::channel::<Request>();
        let (finished, done) = mpsc::channel();
        thread::Builder::new().name("offline-frames".into()).spawn(move || {
            for r in todo {
                let jpeg = render(r.size, &r.title, &r.lines);
                if finished.send((r.kind, jpeg)).is_err() || waker.wake().is_err() {
                    return;
                }
            }
        })?;
        Ok(Renderer { requests, done, busy: false })
    }

    /// Asks for a picture unless one is being made.
    pub fn request(&mut self, request: Request) {
        if !self.busy {
            self.busy = self.requests.send(request).is_ok();
        }
    }

    /// The picture, once made.
    pub fn take(&mut self) -> Option<(Kind, Vec<u8>)> {
        let done = self.done.try_recv().ok();
        if done.is_some() {
            self.busy = false;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitter::Splitter;

    #[test]
    fn a_picture_is_one_whole_jpeg_of_the_size_asked() {
        for size in [(640, 480), (1920, 1080), (160, 120), (1, 1)] {
            let jpeg = render(size, "NO SIGNAL", &["camera exited with status 1".into()]);
            let fed = Splitter::new(1 << 24).feed(&jpeg);
            assert_eq!(fed.frame.as_deref(), Some(&jpeg[..]), "{size:?}");
            let want = (size.0.max(16), size.1.max(16));
            assert_eq!(jpeg_size(&jpeg), Some(want));
        }
    }

    #[test]
    fn text_is_drawn_where_it_is_centred() {
        let mut grey = Grey { width: 60, height: 20, pixels: vec![0; 1200] };
        grey.text(0, 0, "I", 1);
        // 'I' is 01110 on its first row.
        assert_eq!(&grey.pixels[..5], &[0, 235, 235, 235, 0]);
        assert_eq!(glyph('i'), glyph('I'));
        assert_eq!(glyph('€'), glyph('?'));
    }

    #[test]
    fn the_size_is_read_from_the_frame_header() {
        let mut canvas = crate::pattern::Canvas::new();
        canvas.draw(1, 0);
        assert_eq!(jpeg_size(&canvas.encode().unwrap()), Some((640, 480)));
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8]), None);
        assert_eq!(jpeg_size(b"junk"), None);
    }
}
