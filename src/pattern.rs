/*!
The built-in test pattern: moving colour bars, the frame number and the
wall-clock time in large digits, and the time again as a strip of black and
white blocks that survives JPEG, so that a page can read each frame's age
from its pixels.

Drawing is pure; [`spawn`] runs it on a producer thread that writes JPEGs
into a pipe, which the poll loop reads like stdin.
*/

use std::fs::File;
use std::io::{self, Write};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const WIDTH: usize = 640;
pub const HEIGHT: usize = 480;

/// JPEG quality: what a camera's MJPEG mode typically sends (60 KB a frame here).
const QUALITY: u8 = 80;

/// The time strip: `STRIP_BITS` blocks of `STRIP_BLOCK` pixels square at
/// the top left, in rows of `STRIP_COLUMNS`, most significant bit first,
/// white for 1. Blocks of 16 pixels align with JPEG's 8x8 and 16x16
/// blocks, so the encoder keeps them clean. 42 bits of Unix milliseconds
/// last until the year 2109.
pub const STRIP_BITS: usize = 42;
pub const STRIP_BLOCK: usize = 16;
pub const STRIP_COLUMNS: usize = 21;
const STRIP_ROWS: usize = STRIP_BITS.div_ceil(STRIP_COLUMNS);

/// The top left corner of the block that carries `bit`.
fn strip_block(bit: usize) -> (usize, usize) {
    (bit % STRIP_COLUMNS * STRIP_BLOCK, bit / STRIP_COLUMNS * STRIP_BLOCK)
}

/// An RGB picture.
pub struct Canvas {
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new() -> Canvas {
        Canvas { pixels: vec![0; WIDTH * HEIGHT * 3] }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for row in y.min(HEIGHT)..(y + h).min(HEIGHT) {
            let line = &mut self.pixels[row * WIDTH * 3..(row + 1) * WIDTH * 3];
            for px in line[x.min(WIDTH) * 3..(x + w).min(WIDTH) * 3].chunks_exact_mut(3) {
                px.copy_from_slice(&rgb);
            }
        }
    }

    /// Draws frame `n` showing the time `unix_millis`.
    pub fn draw(&mut self, n: u64, unix_millis: u64) {
        const BARS: [[u8; 3]; 7] = [
            [192, 192, 192],
            [192, 192, 0],
            [0, 192, 192],
            [0, 192, 0],
            [192, 0, 192],
            [192, 0, 0],
            [0, 0, 192],
        ];
        let bar = WIDTH / BARS.len() + 1;
        let shift = (n as usize * 4) % WIDTH;
        for x in 0..WIDTH {
            let colour = BARS[((x + shift) / bar) % BARS.len()];
            self.rect(x, 0, 1, HEIGHT, colour);
        }
        // A dark panel so the digits read well over any bar.
        self.rect(40, 150, WIDTH - 80, 230, [16, 16, 16]);
        let secs = unix_millis / 1000;
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03}",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            unix_millis % 1000
        );
        draw_text(self, 64, 170, &format!("{:08}", n % 100_000_000), 8);
        draw_text(self, 64, 280, &clock, 6);
        self.draw_strip(unix_millis);
    }

    fn draw_strip(&mut self, value: u64) {
        self.rect(0, 0, STRIP_COLUMNS * STRIP_BLOCK, STRIP_ROWS * STRIP_BLOCK, [0, 0, 0]);
        for bit in 0..STRIP_BITS {
            let on = value >> (STRIP_BITS - 1 - bit) & 1 == 1;
            let colour = if on { [255, 255, 255] } else { [0, 0, 0] };
            let (x, y) = strip_block(bit);
            self.rect(x, y, STRIP_BLOCK, STRIP_BLOCK, colour);
        }
    }

    /// Reads the strip back, as the viewer page does.
    pub fn read_strip(pixels: &[u8]) -> u64 {
        let mut value = 0;
        for bit in 0..STRIP_BITS {
            let (x, y) = strip_block(bit);
            let i = ((y + STRIP_BLOCK / 2) * WIDTH + x + STRIP_BLOCK / 2) * 3;
            let luma =
                (u32::from(pixels[i]) + u32::from(pixels[i + 1]) + u32::from(pixels[i + 2])) / 3;
            value = value << 1 | u64::from(luma > 127);
        }
        value
    }

    pub fn encode(&self) -> Result<Vec<u8>, jpeg_encoder::EncodingError> {
        let mut out = Vec::with_capacity(96 * 1024);
        let encoder = jpeg_encoder::Encoder::new(&mut out, QUALITY);
        encoder.encode(&self.pixels, WIDTH as u16, HEIGHT as u16, jpeg_encoder::ColorType::Rgb)?;
        Ok(out)
    }
}

impl Default for Canvas {
    fn default() -> Self {
        Canvas::new()
    }
}

/// Seven-segment digits: which of the segments a b c d e f g are lit.
const SEGMENTS: [u8; 10] = [
    0b1111110, 0b0110000, 0b1101101, 0b1111001, 0b0110011, 0b1011011, 0b1011111, 0b1110000,
    0b1111111, 0b1111011,
];

/// Draws digits, `:` and `.` in seven-segment style, `scale` pixels per unit
/// of a 5x9-unit cell.
fn draw_text(canvas: &mut Canvas, mut x: usize, y: usize, text: &str, scale: usize) {
    let white = [240, 240, 240];
    let u = scale;
    for ch in text.chars() {
        match ch {
            '0'..='9' => {
                let s = SEGMENTS[ch as usize - '0' as usize];
                let lit = |i: u8| s >> (6 - i) & 1 == 1;
                let (w, h) = (5 * u, 9 * u);
                let t = u;
                if lit(0) {
                    canvas.rect(x, y, w, t, white);
                }
                if lit(1) {
                    canvas.rect(x + w - t, y, t, h / 2, white);
                }
                if lit(2) {
                    canvas.rect(x + w - t, y + h / 2, t, h / 2, white);
                }
                if lit(3) {
                    canvas.rect(x, y + h - t, w, t, white);
                }
                if lit(4) {
                    canvas.rect(x, y + h / 2, t, h / 2, white);
                }
                if lit(5) {
                    canvas.rect(x, y, t, h / 2, white);
                }
                if lit(6) {
                    canvas.rect(x, y + h / 2 - t / 2, w, t, white);
                }
                x += 7 * u;
            }
            ':' => {
                canvas.rect(x, y + 2 * u, u, u, white);
                canvas.rect(x, y + 6 * u, u, u, white);
                x += 3 * u;
            }
            '.' => {
                canvas.rect(x, y + 8 * u, u, u, white);
                x += 3 * u;
            }
            _ => x += 5 * u,
        }
    }
}

pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Starts the producer thread: a frame every `1/fps` s, written into `pipe`
/// until the reading end closes. Each frame is drawn and encoded ahead of
/// its slot and carries the time of its slot, which is when it is written.
pub fn spawn(mut pipe: File, fps: u32) -> io::Result<thread::JoinHandle<()>> {
    let interval = crate::source::interval(fps);
    thread::Builder::new().name("test-pattern".into()).spawn(move || {
        let mut canvas = Canvas::new();
        let (start, wall) = (Instant::now(), SystemTime::now());
        // The slot adds up rather than multiplying a frame count, which
        // would wrap on a long run.
        let mut slot = Duration::ZERO;
        for n in 0.. {
            canvas.draw(n, unix_millis(wall + slot));
            let Ok(jpeg) = canvas.encode() else { return };
            if let Some(wait) = (start + slot).checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            slot += interval;
            if pipe.write_all(&jpeg).is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitter::Splitter;

    #[test]
    fn a_pattern_frame_is_one_whole_jpeg() {
        let mut canvas = Canvas::new();
        canvas.draw(7, 1_700_000_000_123);
        let jpeg = canvas.encode().unwrap();
        let mut splitter = Splitter::new(1 << 20);
        let fed = splitter.feed(&jpeg);
        assert_eq!(fed.consumed, jpeg.len());
        assert_eq!(fed.frame.as_deref(), Some(&jpeg[..]));
    }

    #[test]
    fn the_strip_reads_back() {
        let mut canvas = Canvas::new();
        let t = 1_764_000_000_999;
        canvas.draw(1, t);
        assert_eq!(Canvas::read_strip(&canvas.pixels), t);
    }
}
