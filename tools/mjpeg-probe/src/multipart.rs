/*!
The `multipart/x-mixed-replace` body parser: pure code, fed whatever each
`read` returned (after de-chunking), one byte or a megabyte at a time.

Servers lay the stream out in different ways, and all of them are read:

```text
boundary first:  --B CRLF headers CRLF CRLF body CRLF --B CRLF headers …
boundary after:  headers CRLF CRLF body CRLF --B CRLF headers CRLF CRLF body …
```

A part with `Content-Length` is exactly that many bytes. A part without it
ends at `CRLF --B`; blank lines before the delimiter are not part of it,
which cannot cut a JPEG short since a JPEG ends with `FF D9`. Blank lines
between parts are skipped, and a close delimiter `--B--` ends the stream.

RFC 2046 puts `--` before the boundary parameter to make the delimiter, but
some servers declare `boundary=--B` and then write `--B` itself; when the
parameter starts with `--`, both `----B` and `--B` are delimiters.
*/

use std::fmt;

use memchr::memchr;

/// A part header line longer than this is not a header: real ones are a few
/// dozen bytes, and the cap bounds what a broken stream makes us hold.
const MAX_LINE: usize = 4096;

/// A boundary longer than this is refused (RFC 2046 allows 70 characters).
pub const MAX_BOUNDARY: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A line between parts that is neither a header, a delimiter nor blank.
    Garbage,
    /// A line longer than [`MAX_LINE`].
    LongLine,
    /// A `Content-Length` that is not a number.
    BadLength,
    /// A part larger than the cap given to [`Multipart::new`].
    Oversize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Error::Garbage => "a line between parts is no header or delimiter",
            Error::LongLine => "a part header line is too long",
            Error::BadLength => "a part has a malformed Content-Length",
            Error::Oversize => "a part is larger than the size cap",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between parts, or in a part's headers: reading lines.
    Line,
    /// In a body whose length is known.
    Counted { left: usize },
    /// In a body without length, looking for `CRLF --B`.
    Scan,
    /// After the `CRLF --B` that ended a scanned body: the rest of that line.
    DelimiterTail,
    /// After the close delimiter: everything else is ignored.
    Done,
}

/// What one call of [`Multipart::feed`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// How many input bytes were consumed; feed the rest again.
    pub consumed: usize,
    /// A part was completed by the consumed bytes; it is in [`Multipart::part`].
    pub part: bool,
}

pub struct Multipart {
    /// `CRLF --B`, and `CRLF B` too when `B` starts with `--`. Without the
    /// CRLF, each is a delimiter line. Only their first byte is CR, which
    /// the scan relies on.
    patterns: Vec<Vec<u8>>,
    /// How much of each pattern the bytes at the end of `part` match.
    matched: Vec<usize>,
    state: State,
    /// The part header line being read.
    line: Vec<u8>,
    /// Set by a delimiter or a header line: the next blank line starts a body.
    in_headers: bool,
    /// The `Content-Length` of the part whose headers are being read.
    length: Option<usize>,
    part: Vec<u8>,
    max_part: usize,
}

impl Multipart {
    /// A parser for the boundary parameter `boundary` (quotes removed), that
    /// refuses parts larger than `max_part`. `None` if the boundary is empty,
    /// too long or holds a line break.
    pub fn new(boundary: &[u8], max_part: usize) -> Option<Multipart> {
        if boundary.is_empty()
            || boundary.len() > MAX_BOUNDARY
            || boundary.iter().any(|&b| b == b'\r' || b == b'\n')
        {
            return None;
        }
        let mut patterns = vec![[b"\r\n--", boundary].concat()];
        if boundary.starts_with(b"--") {
            patterns.push([b"\r\n", boundary].concat());
        }
        Some(Multipart {
            matched: vec![0; patterns.len()],
            patterns,
            state: State::Line,
            line: Vec::new(),
            in_headers: false,
            length: None,
            part: Vec::new(),
            max_part,
        })
    }

    /// The body of the last completed part.
    pub fn part(&self) -> &[u8] {
        &self.part
    }

    /// True once the close delimiter has been read.
    pub fn finished(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes input up to the end of the first part that completes in it,
    /// or all of it.
    pub fn feed(&mut self, input: &[u8]) -> Result<Fed, Error> {
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            match self.state {
                State::Line | State::DelimiterTail => {
                    let (used, line_done) = match memchr(b'\n', rest) {
                        Some(lf) => (lf + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.line.len() + used > MAX_LINE {
                        return Err(Error::LongLine);
                    }
                    self.line.extend_from_slice(&rest[..used]);
                    at += used;
                    if line_done {
                        let line = std::mem::take(&mut self.line);
                        let part = self.end_of_line(trim_end(&line))?;
                        self.line = line;
                        self.line.clear();
                        if part {
                            return Ok(Fed { consumed: at, part: true });
                        }
                    }
                }
                State::Counted { left } => {
                    let used = left.min(rest.len());
                    self.part.extend_from_slice(&rest[..used]);
                    at += used;
                    self.state = State::Counted { left: left - used };
                    if left == used {
                        self.state = State::Line;
                        return Ok(Fed { consumed: at, part: true });
                    }
                }
                State::Scan => {
                    at += self.scan(rest)?;
                    if self.state != State::Scan {
                        return Ok(Fed { consumed: at, part: true });
                    }
                }
                State::Done => at = input.len(),
            }
        }
        Ok(Fed { consumed: at, part: false })
    }

    /// Handles a complete line, CR LF removed. Returns true if it completed a
    /// part, which only an empty body with `Content-Length: 0` does.
    fn end_of_line(&mut self, line: &[u8]) -> Result<bool, Error> {
        if self.state == State::DelimiterTail {
            // The line began with a delimiter; `--` after it closes the stream.
            self.start_headers(line.starts_with(b"--"));
            return Ok(false);
        }
        if let Some(close) = self.delimiter(line) {
            self.start_headers(close);
            return Ok(false);
        }
        if line.is_empty() {
            if self.in_headers {
                return Ok(self.start_body());
            }
            return Ok(false);
        }
        let colon = memchr(b':', line).ok_or(Error::Garbage)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if trim(name).eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(value).map_err(|_| Error::BadLength)?;
            let length: usize = value.trim().parse().map_err(|_| Error::BadLength)?;
            if length > self.max_part {
                return Err(Error::Oversize);
            }
            self.length = Some(length);
        }
        self.in_headers = true;
        Ok(false)
    }

    /// If `line` is a delimiter line, whether it is the close delimiter.
    fn delimiter(&self, line: &[u8]) -> Option<bool> {
        self.patterns.iter().find_map(|pattern| {
            let after = line.strip_prefix(&pattern[2..])?;
            match trim(after) {
                b"" => Some(false),
                b"--" => Some(true),
                _ => None,
            }
        })
    }

    fn start_headers(&mut self, close: bool) {
        self.state = if close { State::Done } else { State::Line };
        self.in_headers = !close;
        self.length = None;
    }

    /// Starts the body after the blank line that ended a part's headers.
    /// Returns true if the body is empty and so already complete.
    fn start_body(&mut self) -> bool {
        self.part.clear();
        self.in_headers = false;
        self.state = match self.length.take() {
            Some(0) => return true,
            Some(left) => {
                self.part.reserve(left);
                State::Counted { left }
            }
            None => {
                self.matched.iter_mut().for_each(|m| *m = 0);
                State::Scan
            }
        };
        false
    }

    /// Moves scanned body bytes into the part up to and including a
    /// delimiter, or all of them. Returns how many were used.
    fn scan(&mut self, input: &[u8]) -> Result<usize, Error> {
        let longest = self.patterns.iter().map(Vec::len).max().unwrap_or(0);
        let mut at = 0;
        while at < input.len() {
            if self.matched.iter().all(|&m| m == 0) {
                // Nothing is half matched, so every byte up to the next CR is body.
                let cr = memchr(b'\r', &input[at..]).map_or(input.len(), |cr| at + cr);
                self.part.extend_from_slice(&input[at..cr]);
                at = cr;
                if self.part.len() > self.max_part {
                    return Err(Error::Oversize);
                }
                if at == input.len() {
                    break;
                }
            }
            let byte = input[at];
            self.part.push(byte);
            at += 1;
            for (matched, pattern) in self.matched.iter_mut().zip(&self.patterns) {
                // CR only starts a pattern, so a mismatch can only fall back to
                // a match of length 1 (this byte is CR) or 0.
                *matched = if pattern[*matched] == byte {
                    *matched + 1
                } else {
                    usize::from(byte == b'\r')
                };
            }
            let done = self.patterns.iter().zip(&self.matched).find(|(p, m)| p.len() == **m);
            if let Some((pattern, _)) = done {
                let end = self.part.len() - pattern.len();
                let end = end - trailing_line_breaks(&self.part[..end]);
                self.part.truncate(end);
                self.state = State::DelimiterTail;
                break;
            }
            // Bytes of a half-matched delimiter may sit in the part for now.
            if self.part.len() > self.max_part + longest {
                return Err(Error::Oversize);
            }
        }
        if self.state == State::DelimiterTail && self.part.len() > self.max_part {
            return Err(Error::Oversize);
        }
        Ok(at)
    }
}

/// The boundary parameter of the last Content-Type in a response head,
/// quotes removed; `None` without one. The server's reading of a head
/// ignores it (its splitter finds JPEGs by their markers), but this parser
/// cuts parts at it.
pub fn boundary(head: &[u8]) -> Option<Vec<u8>> {
    let content_type = head
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = line.split_at(colon);
            trim(name).eq_ignore_ascii_case(b"content-type").then(|| trim(&value[1..]))
        })
        .last()?;
    let content_type = String::from_utf8_lossy(content_type);
    let (_, params) = content_type.split_once(';')?;
    param(params, "boundary").filter(|b| !b.is_empty()).map(|b| b.as_bytes().to_vec())
}

/// The value of parameter `wanted` in `name=value; name="quoted; value"`.
fn param<'a>(mut params: &'a str, wanted: &str) -> Option<&'a str> {
    loop {
        let (name, rest) = params.split_once('=')?;
        let rest = rest.trim_start();
        // A quoted value may hold `;`, so it ends at its closing quote.
        let (value, rest) = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => {
                let (value, rest) = rest.split_once(';').unwrap_or((rest, ""));
                (value.trim(), rest)
            }
        };
        let name = name.trim_start_matches([';', ' ', '\t']).trim();
        if name.eq_ignore_ascii_case(wanted) {
            return Some(value);
        }
        params = rest;
    }
}

fn trim_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `<[u8]>::trim_ascii` is newer than the Rust this crate supports.
fn trim(data: &[u8]) -> &[u8] {
    let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
    let end = data.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |last| last + 1);
    &data[start..end]
}

fn trailing_line_breaks(data: &[u8]) -> usize {
    data.iter().rev().take_while(|&&b| b == b'\r' || b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1 << 20;

    fn boundary_of(content_type: &str) -> Option<String> {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n");
        boundary(head.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn boundary_parameter_forms() {
        assert_eq!(boundary_of("multipart/x-mixed-replace; boundary=frame").unwrap(), "frame");
        assert_eq!(
            boundary_of("multipart/x-mixed-replace; boundary=\"a b;c\"; x=y").unwrap(),
            "a b;c"
        );
        assert_eq!(
            boundary_of("multipart/x-mixed-replace;charset=x; BOUNDARY = --frame ").unwrap(),
            "--frame"
        );
        assert_eq!(boundary_of("multipart/x-mixed-replace"), None);
        assert_eq!(boundary_of("multipart/x-mixed-replace; boundary=\"\""), None);
        assert_eq!(boundary_of("image/jpeg"), None);
        let head = b"HTTP/1.1 200 OK\r\nServer: Cam\xe9ra\r\ncontent-type :multipart/mixed;boundary=b\r\n\r\n";
        assert_eq!(boundary(head), Some(b"b".to_vec()));
        assert_eq!(boundary(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    /// Feeds `stream` in pieces of `step` bytes and collects the parts.
    fn parts_fed_by(boundary: &str, stream: &[u8], step: usize) -> Result<Vec<Vec<u8>>, Error> {
        let mut parser = Multipart::new(boundary.as_bytes(), CAP).unwrap();
        let mut parts = Vec::new();
        for piece in stream.chunks(step) {
            let mut piece = piece;
            while !piece.is_empty() {
                let fed = parser.feed(piece)?;
                assert!(fed.consumed > 0 || fed.part);
                piece = &piece[fed.consumed..];
                if fed.part {
                    parts.push(parser.part().to_vec());
                }
            }
        }
        Ok(parts)
    }

    /// The parts of `stream`, checked to be the same whether it arrives
    /// byte by byte, in odd pieces or whole.
    fn parts(boundary: &str, stream: &[u8]) -> Vec<Vec<u8>> {
        let whole = parts_fed_by(boundary, stream, stream.len().max(1)).unwrap();
        for step in [1, 2, 3, 7] {
            assert_eq!(
                parts_fed_by(boundary, stream, step).unwrap(),
                whole,
                "fed {step} bytes at a time"
            );
        }
        whole
    }

    fn error(boundary: &str, stream: &[u8]) -> Error {
        let whole = parts_fed_by(boundary, stream, stream.len()).unwrap_err();
        assert_eq!(parts_fed_by(boundary, stream, 1).unwrap_err(), whole);
        whole
    }

    fn bodies() -> [Vec<u8>; 3] {
        // The second holds CR LF and a near miss of the delimiter.
        [
            b"\xFF\xD8one\xFF\xD9".to_vec(),
            b"\xFF\xD8t\r\nw\r\n-\r\n--C\r-o\xFF\xD9".to_vec(),
            b"\xFF\xD8\xFF\xD9".to_vec(),
        ]
    }

    #[test]
    fn boundary_first_with_length() {
        let mut s = Vec::new();
        for body in bodies() {
            s.extend_from_slice(
                format!(
                    "--B\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            s.extend_from_slice(&body);
            s.extend_from_slice(b"\r\n");
        }
        assert_eq!(parts("B", &s), bodies());
    }

    #[test]
    fn boundary_after_with_length() {
        let mut s = Vec::new();
        for body in bodies() {
            s.extend_from_slice(
                format!("Content-Type: image/jpeg\r\ncontent-length:{}\r\n\r\n", body.len())
                    .as_bytes(),
            );
            s.extend_from_slice(&body);
            s.extend_from_slice(b"\r\n--B\r\n");
        }
        assert_eq!(parts("B", &s), bodies());
    }

    #[test]
    fn boundary_first_without_length() {
        let mut s = Vec::new();
        for body in bodies() {
            s.extend_from_slice(b"--B\r\nContent-Type: image/jpeg\r\n\r\n");
            s.extend_from_slice(&body);
            s.extend_from_slice(b"\r\n");
        }
        s.extend_from_slice(b"--B\r\n");
        assert_eq!(parts("B", &s), bodies());
    }

    #[test]
    fn boundary_after_without_length() {
        // As a server writes that sends the next part's headers at once.
        let mut s = b"Content-Type: image/jpeg\r\n\r\n".to_vec();
        for body in bodies() {
            s.extend_from_slice(&body);
            s.extend_from_slice(b"\r\n--B\r\nContent-Type: image/jpeg\r\nX-Timestamp: 1.5\r\n\r\n");
        }
        let parsed = parts("B", &s);
        assert_eq!(parsed, bodies());
    }

    #[test]
    fn blank_lines_and_lf_only_lines_are_tolerated() {
        let [a, b, c] = bodies();
        let mut s = b"\r\n\r\n--B\r\n\r\n".to_vec(); // No headers at all.
        s.extend_from_slice(&a);
        s.extend_from_slice(b"\r\n\r\n\r\n--B  \nContent-Length: ");
        s.extend_from_slice(format!("{}\n\n", b.len()).as_bytes());
        s.extend_from_slice(&b);
        s.extend_from_slice(b"\r\n\r\n--B\r\nContent-Type: image/jpeg\r\n\r\n");
        s.extend_from_slice(&c);
        s.extend_from_slice(b"\r\n--B\r\n");
        assert_eq!(parts("B", &s), bodies());
    }

    #[test]
    fn boundary_parameter_starting_with_dashes() {
        let [a, b, c] = bodies();
        let mut s = b"----frame\r\nContent-Length: ".to_vec(); // RFC form
        s.extend_from_slice(format!("{}\r\n\r\n", a.len()).as_bytes());
        s.extend_from_slice(&a);
        s.extend_from_slice(b"\r\n--frame\r\n\r\n"); // literal form, no length
        s.extend_from_slice(&b);
        s.extend_from_slice(b"\r\n----frame\r\n\r\n");
        s.extend_from_slice(&c);
        s.extend_from_slice(b"\r\n--frame\r\n");
        assert_eq!(parts("--frame", &s), bodies());
    }

    #[test]
    fn close_delimiter_ends_the_stream() {
        let s = b"--B\r\n\r\none\r\n--B--\r\nanything at all";
        assert_eq!(parts("B", s), vec![b"one".to_vec()]);
        let mut parser = Multipart::new(b"B", CAP).unwrap();
        let mut rest: &[u8] = s;
        while !rest.is_empty() {
            rest = &rest[parser.feed(rest).unwrap().consumed..];
        }
        assert!(parser.finished());
    }

    #[test]
    fn empty_part_with_length_zero() {
        let s = b"--B\r\nContent-Length: 0\r\n\r\n\r\n--B\r\nContent-Length: 1\r\n\r\nx\r\n";
        assert_eq!(parts("B", s), vec![b"".to_vec(), b"x".to_vec()]);
    }

    #[test]
    fn broken_streams_are_errors() {
        assert_eq!(error("B", b"--B\r\nthis is no header\r\n"), Error::Garbage);
        assert_eq!(error("B", b"--B\r\nContent-Length: 12x\r\n"), Error::BadLength);
        assert_eq!(error("B", b"--B\r\nContent-Length: 2000000\r\n"), Error::Oversize);
        let long = [b"--B\r\nX: ".as_slice(), &[b'a'; MAX_LINE]].concat();
        assert_eq!(error("B", &long), Error::LongLine);
        let endless = [b"--B\r\n\r\n".as_slice(), &vec![b'a'; CAP + 1]].concat();
        assert_eq!(error("B", &endless), Error::Oversize);
        // The cap holds for a scanned body that ends just past it, too.
        let over = [b"--B\r\n\r\n".as_slice(), &vec![b'a'; CAP + 1], b"\r\n--B\r\n"].concat();
        assert_eq!(error("B", &over), Error::Oversize);
        let fits = [b"--B\r\n\r\n".as_slice(), &vec![b'a'; CAP], b"\r\n--B\r\n"].concat();
        assert_eq!(parts_fed_by("B", &fits, fits.len()).unwrap().len(), 1);
    }

    #[test]
    fn unusable_boundaries_are_refused() {
        assert!(Multipart::new(b"", CAP).is_none());
        assert!(Multipart::new(b"a\r\nb", CAP).is_none());
        assert!(Multipart::new(&[b'a'; MAX_BOUNDARY + 1], CAP).is_none());
    }
}
