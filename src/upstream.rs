/*!
Reading another server's stream: its URL, the response head, chunked
transfer coding, and the body that is left for the splitter. Pure code, no
I/O; [`crate::relay`] moves the bytes. The upstream's part headers and
boundaries need no parsing: the splitter finds each JPEG by its own
markers, whatever framing the upstream uses.
*/

use std::fmt;
use std::net::Ipv6Addr;

use memchr::memchr_iter;

/// A response head larger than this is refused: real ones are a few hundred
/// bytes, and the cap bounds what a broken server makes each client hold.
pub const MAX_HEAD: usize = 16 * 1024;

/// Chunk extensions and trailers are skipped, but only this much of each
/// line, so that an endless one cannot hold a client forever.
const MAX_CHUNK_LINE: usize = 4096;

/// What a stream response says about its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `Transfer-Encoding: chunked`: the body must be de-chunked first.
    pub chunked: bool,
}

/// Why a response is not a stream we can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    Malformed,
    TooLarge,
    Status(u16),
    /// The Content-Type, which [`is_stream`] refused.
    NotAStream(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HeadError::Malformed => write!(f, "malformed response head"),
            HeadError::TooLarge => write!(f, "response head larger than {MAX_HEAD} bytes"),
            HeadError::Status(code) => write!(f, "status {code}, not 200"),
            HeadError::NotAStream(t) => {
                write!(f, "Content-Type {t:?} is neither multipart/* nor video/x-motion-jpeg")
            }
        }
    }
}

/// Parses the response head at the start of `buf`. `Ok(None)` while the
/// blank line that ends it has not arrived; else the head and its length,
/// after which the body starts.
///
/// The head is read as bytes, not text: a field value may hold obs-text
/// (bytes from 0x80, such as Latin-1 in `Server: Caméra`), which RFC 9112
/// §5 lets a recipient take as opaque data.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut start = 0;
    let mut end = None;
    for lf in memchr_iter(b'\n', buf) {
        let line = &buf[start..lf];
        if start > 0 && (line.is_empty() || line == b"\r") {
            end = Some(lf + 1);
            break;
        }
        start = lf + 1;
    }
    let Some(end) = end else {
        return if buf.len() > MAX_HEAD { Err(HeadError::TooLarge) } else { Ok(None) };
    };
    let mut lines = buf[..end].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().ok_or(HeadError::Malformed)?;
    let mut words = status.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    let version = words.next().ok_or(HeadError::Malformed)?;
    let code = words.next().filter(|c| c.len() == 3 && c.iter().all(u8::is_ascii_digit));
    let code = code.filter(|_| version.starts_with(b"HTTP/")).ok_or(HeadError::Malformed)?;
    let code = code.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0'));
    if code != 200 {
        return Err(HeadError::Status(code));
    }
    let fields = fields(lines.take_while(|l| !l.is_empty()))?;
    // The last of a repeated field counts, as each would replace the one before.
    let field = |name: &[u8]| {
        fields.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| &v[..])
    };
    // Chunked, if used at all, is the last coding applied.
    let chunked = field(b"transfer-encoding").is_some_and(|v| {
        v.rsplit(|&b| b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    let content_type = field(b"content-type").unwrap_or_default();
    if !is_stream(content_type) {
        return Err(HeadError::NotAStream(String::from_utf8_lossy(content_type).into_owned()));
    }
    Ok(Some((Head { chunked }, end)))
}

/// A header field's name, and its value with any obs-folds joined.
type Field<'a> = (&'a [u8], Vec<u8>);

/// The header fields of `lines` as names and values, each value trimmed.
/// A line that starts with SP or HT is an obs-fold: it continues the value
/// before it, joined by one SP (RFC 9112 §5.2). One before any field is
/// dropped, as §2.2 allows for whitespace after the start line.
fn fields<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Field<'a>>, HeadError> {
    let mut fields: Vec<Field> = Vec::new();
    for line in lines {
        if let [b' ' | b'\t', ..] = line {
            if let Some((_, value)) = fields.last_mut() {
                let more = line.trim_ascii();
                if !more.is_empty() {
                    if !value.is_empty() {
                        value.push(b' ');
                    }
                    value.extend_from_slice(more);
                }
            }
            continue;
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::Malformed)?;
        let (name, value) = line.split_at(colon);
        fields.push((name.trim_ascii(), value[1..].trim_ascii().to_vec()));
    }
    Ok(fields)
}

/// True for a Content-Type whose body the splitter can cut into JPEGs: any
/// `multipart/*` (`x-mixed-replace`, and `mixed` as some cameras send it),
/// or `video/x-motion-jpeg` (JPEGs one after another). Its parameters,
/// the boundary among them, are not looked at: the splitter finds each
/// JPEG by its own markers, whatever lies between them.
fn is_stream(content_type: &[u8]) -> bool {
    let media_type = content_type.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    let Some(slash) = media_type.iter().position(|&b| b == b'/') else { return false };
    let (kind, subtype) = (&media_type[..slash], &media_type[slash + 1..]);
    (kind.eq_ignore_ascii_case(b"multipart") && !subtype.is_empty())
        || media_type.eq_ignore_ascii_case(b"video/x-motion-jpeg")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// Skipping a chunk extension to the end of the size line.
    Extension {
        size: u64,
        skipped: usize,
    },
    /// Read the CR that ends the size line.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    /// The CR LF after chunk data.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines up to a blank one.
    Trailer {
        line: usize,
    },
    Done,
}

/// A malformed chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkError(&'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "chunked body: {}", self.0)
    }
}

/// Decodes `Transfer-Encoding: chunked`, fed any number of bytes at a time.
pub struct Dechunker {
    state: Chunk,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker { state: Chunk::Size { size: 0, digits: 0 } }
    }
}

impl Dechunker {
    /// True once the last chunk and trailers have been read.
    pub fn finished(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes `data` in place: the chunk data it carries is moved to its
    /// front, and its length returned. Decoding only ever shrinks the bytes,
    /// so no second buffer is needed.
    pub fn decode(&mut self, data: &mut [u8]) -> Result<usize, ChunkError> {
        let (mut at, mut out) = (0, 0);
        while at < data.len() {
            if let Chunk::Data { left } = self.state {
                let used = left.min((data.len() - at) as u64) as usize;
                data.copy_within(at..at + used, out);
                (at, out) = (at + used, out + used);
                self.state = if left == used as u64 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { left: left - used as u64 }
                };
                continue;
            }
            self.state = self.step(data[at])?;
            at += 1;
        }
        Ok(out)
    }

    /// The state after one byte outside chunk data.
    fn step(&self, byte: u8) -> Result<Chunk, ChunkError> {
        let end_of_size =
            |size| if size == 0 { Chunk::Trailer { line: 0 } } else { Chunk::Data { left: size } };
        Ok(match (self.state, byte) {
            (Chunk::Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
                // 15 digits are more than any chunk, and cannot overflow a u64.
                if digits == 15 {
                    return Err(ChunkError("chunk size too large"));
                }
                let digit = (byte as char).to_digit(16).unwrap_or(0);
                Chunk::Size { size: size * 16 + u64::from(digit), digits: digits + 1 }
            }
            (Chunk::Size { digits: 0, .. }, _) => return Err(ChunkError("expected a chunk size")),
            (Chunk::Size { size, .. }, b'\r') => Chunk::SizeLf { size },
            (Chunk::Size { size, .. }, b'\n') => end_of_size(size),
            (Chunk::Size { size, .. }, b';' | b' ' | b'\t') => {
                Chunk::Extension { size, skipped: 0 }
            }
            (Chunk::Size { .. }, _) => return Err(ChunkError("bad character in a chunk size")),
            (Chunk::Extension { size, .. }, b'\n') => end_of_size(size),
            (Chunk::Extension { size, skipped }, _) if skipped < MAX_CHUNK_LINE => {
                Chunk::Extension { size, skipped: skipped + 1 }
            }
            (Chunk::Extension { .. }, _) => return Err(ChunkError("chunk extension too long")),
            (Chunk::SizeLf { size }, b'\n') => end_of_size(size),
            (Chunk::SizeLf { .. }, _) => {
                return Err(ChunkError("CR without LF after a chunk size"))
            }
            (Chunk::Data { .. }, _) => unreachable!("data is copied in `feed`"),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataCr, b'\n') | (Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
            (Chunk::DataCr | Chunk::DataLf, _) => {
                return Err(ChunkError("chunk data longer than its size"))
            }
            (Chunk::Trailer { line: 0 }, b'\n') => Chunk::Done,
            (Chunk::Trailer { .. }, b'\n') => Chunk::Trailer { line: 0 },
            (Chunk::Trailer { line }, b'\r') => Chunk::Trailer { line },
            (Chunk::Trailer { line }, _) if line < MAX_CHUNK_LINE => {
                Chunk::Trailer { line: line + 1 }
            }
            (Chunk::Trailer { .. }, _) => return Err(ChunkError("trailer line too long")),
            (Chunk::Done, _) => Chunk::Done,
        })
    }
}

/// A response read as it arrives: the head (checked to be a stream), then
/// the body's bytes, de-chunked if need be.
#[derive(Default)]
pub struct Response {
    head: Vec<u8>,
    /// Set once the head is in: de-chunk the body?
    body: Option<Option<Dechunker>>,
}

/// Why an upstream's answer cannot be relayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    Head(HeadError),
    Chunk(ChunkError),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ResponseError::Head(e) => e.fmt(f),
            ResponseError::Chunk(e) => e.fmt(f),
        }
    }
}

impl Response {
    /// Takes the bytes one read gave, hands the body's bytes to `body`.
    pub fn feed(
        &mut self,
        data: &mut [u8],
        body: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ResponseError> {
        let data = match &mut self.body {
            Some(_) => data,
            None => {
                self.head.extend_from_slice(data);
                let Some((head, len)) = parse_head(&self.head).map_err(ResponseError::Head)? else {
                    return Ok(());
                };
                self.body = Some(head.chunked.then(Dechunker::default));
                let mut rest = self.head.split_off(len);
                self.head = Vec::new();
                return self.feed_body(&mut rest, body);
            }
        };
        self.feed_body(data, body)
    }

    fn feed_body(
        &mut self,
        data: &mut [u8],
        body: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ResponseError> {
        match &mut self.body {
            Some(Some(dechunker)) => {
                let len = dechunker.decode(data).map_err(ResponseError::Chunk)?;
                body(&data[..len]);
            }
            _ => body(data),
        }
        Ok(())
    }

    /// True once the head has been read.
    pub fn streaming(&self) -> bool {
        self.body.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// The host to resolve, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `HOST[:PORT]` as written, for the `Host` header.
    pub authority: String,
    /// Path and query, for the request line.
    pub target: String,
    /// `USER:PASS` from `http://USER:PASS@HOST/`, base64, for Basic auth.
    pub credentials: Option<String>,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let bad = |why: &str| format!("{url}: {why}");
        let rest = match url.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &url[7..],
            _ => return Err(bad("only http:// URLs are supported")),
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let (credentials, authority) = match authority.rsplit_once('@') {
            Some((user, host)) if user.contains(':') => {
                (Some(crate::cli::base64(user.as_bytes())), host)
            }
            Some(_) => return Err(bad("user information must be USER:PASS")),
            None => (None, authority),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                host.parse::<Ipv6Addr>().map_err(|_| bad("bad IPv6 address"))?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                };
                (host, port)
            }
            None if authority.matches(':').count() > 1 => {
                return Err(bad("write IPv6 addresses in brackets"))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(port) => port.parse().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port"))?,
        };
        let target = if target.starts_with('/') { target.to_owned() } else { format!("/{target}") };
        Ok(Url {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            target,
            credentials,
        })
    }

    /// The request for the stream, as `user_agent`.
    pub fn request(&self, user_agent: &str) -> Vec<u8> {
        let auth = match &self.credentials {
            Some(c) => format!("Authorization: Basic {c}\r\n"),
            None => String::new(),
        };
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {user_agent}\r\n{auth}Connection: close\r\n\r\n",
            self.target, self.authority
        )
        .into_bytes()
    }

    /// The URL for messages: without the password.
    pub fn shown(&self) -> String {
        format!("http://{}{}", self.authority, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    fn content_type(content_type: &str) -> Result<Head, HeadError> {
        let text = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n");
        Ok(head(&text)?.unwrap().0)
    }

    #[test]
    fn head_is_found_and_measured() {
        let text = "HTTP/1.0 200 OK\r\nServer: x\r\ncontent-type: Multipart/X-Mixed-Replace;boundary=abc\r\n\r\n--abc";
        let (parsed, len) = head(text).unwrap().unwrap();
        assert_eq!(parsed, Head { chunked: false });
        assert_eq!(&text[len..], "--abc");
        for cut in 0..len {
            assert_eq!(head(&text[..cut]), Ok(None), "cut at {cut}");
        }
        let lf_only =
            "HTTP/1.1 200 OK\nContent-Type: multipart/x-mixed-replace; boundary=b\n\nbody";
        assert_eq!(head(lf_only).unwrap().unwrap().1, lf_only.len() - 4);
    }

    #[test]
    fn any_multipart_type_or_motion_jpeg_is_a_stream_with_or_without_a_boundary() {
        for ok in [
            "multipart/x-mixed-replace; boundary=frame",
            "multipart/x-mixed-replace",
            "multipart/x-mixed-replace; boundary=\"\"",
            "multipart/x-mixed-replace;charset=x; BOUNDARY = --frame ",
            "multipart/mixed",
            "Multipart/Mixed; boundary=\"a b;c\"",
            "multipart/related ; type=image/jpeg",
            "video/x-motion-jpeg",
            "VIDEO/X-MOTION-JPEG; boundary=x",
        ] {
            assert_eq!(content_type(ok), Ok(Head { chunked: false }), "{ok}");
        }
        for refused in [
            "image/jpeg",
            "text/html",
            "multipart/",
            "multipart",
            "video/x-motion-jpegx",
            "video/mjpeg",
            "x-multipart/mixed",
            "",
        ] {
            let err = content_type(refused).unwrap_err();
            assert_eq!(err, HeadError::NotAStream(refused.into()), "{refused}");
        }
    }

    #[test]
    fn obs_text_in_a_field_or_the_reason_is_taken_as_it_is() {
        let raw = b"HTTP/1.1 200 \xc7a va\r\nServer: Cam\xe9ra\r\n\
                    Content-Type: multipart/x-mixed-replace; boundary=\xff\r\n\r\nbody";
        let (parsed, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!((parsed, &raw[len..]), (Head { chunked: false }, &b"body"[..]));
        for cut in 0..len {
            assert_eq!(parse_head(&raw[..cut]), Ok(None), "cut at {cut}");
        }
        let refused = b"HTTP/1.1 200 OK\r\nContent-Type: image/jp\xe9g\r\n\r\n";
        assert_eq!(parse_head(refused), Err(HeadError::NotAStream("image/jp\u{fffd}g".into())));
    }

    #[test]
    fn an_obs_fold_continues_the_field_before_it() {
        let folded = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;\r\n \
                      boundary=frame\r\nTransfer-Encoding:\r\n\t chunked \r\n\r\n";
        assert_eq!(head(folded).unwrap().unwrap().0, Head { chunked: true });
        // Folded into the type, a continuation changes what the type is.
        let joined = "HTTP/1.1 200 OK\r\nContent-Type: multipart\r\n /mixed\r\n\r\n";
        assert_eq!(head(joined), Err(HeadError::NotAStream("multipart /mixed".into())));
        let blank = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\t\r\nX: y\r\n\r\n";
        assert_eq!(head(blank), Err(HeadError::NotAStream("text/html".into())));
        // Before any field there is nothing to continue: the line is dropped.
        let first = "HTTP/1.1 200 OK\r\n X: y\r\nContent-Type: multipart/mixed\r\n\r\n";
        assert_eq!(head(first).unwrap().unwrap().0, Head { chunked: false });
    }

    #[test]
    fn chunked_and_refused_heads() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\
                       Content-Type: multipart/x-mixed-replace; boundary=b\r\n\r\n";
        assert!(head(chunked).unwrap().unwrap().0.chunked);
        assert_eq!(head("HTTP/1.1 404 Not Found\r\n\r\n"), Err(HeadError::Status(404)));
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n"), Err(HeadError::NotAStream(String::new())));
        assert_eq!(head("HTTP/1.1 2x0 OK\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(head("HTTP/1.1 2000 OK\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(head("HTTP/1.1\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(head("ICY 200 OK\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(head("HTTP/1.1 200 OK\r\nno colon\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD + 1]), Err(HeadError::TooLarge));
    }

    /// De-chunks `body` fed in pieces of `step` bytes.
    fn dechunk(body: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = Dechunker::default();
        let mut out = Vec::new();
        for piece in body.chunks(step) {
            let mut piece = piece.to_vec();
            let len = decoder.decode(&mut piece)?;
            out.extend_from_slice(&piece[..len]);
        }
        Ok((out, decoder.finished()))
    }

    #[test]
    fn chunked_bodies_are_decoded_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n3\nx\r\n\n0\r\nTrailer: 1\r\n\r\nignored";
        for step in [1, 2, 5, body.len()] {
            let (out, finished) = dechunk(body, step).unwrap();
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyzx\r\n");
            assert!(finished);
        }
        let (out, finished) = dechunk(b"3\r\nabc\r\n4\r\nde", 1).unwrap();
        assert_eq!((out.as_slice(), finished), (b"abcde".as_slice(), false));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        assert!(dechunk(b"x\r\n", 1).is_err());
        assert!(dechunk(b"\r\n", 1).is_err());
        assert!(dechunk(b"3\r\nabcd\r\n", 1).is_err());
        assert!(dechunk(b"3\rx", 1).is_err());
        assert!(dechunk(b"1000000000000000\r\n", 1).is_err());
        assert!(dechunk(&[b"1;".as_slice(), &[b'e'; MAX_CHUNK_LINE + 1]].concat(), 7).is_err());
    }

    /// The body `Response` gives for `raw` fed in pieces of `step` bytes.
    fn body(raw: &[u8], step: usize) -> Result<Vec<u8>, ResponseError> {
        let mut response = Response::default();
        let mut out = Vec::new();
        for piece in raw.chunks(step) {
            response.feed(&mut piece.to_vec(), &mut |b| out.extend_from_slice(b))?;
        }
        Ok(out)
    }

    #[test]
    fn a_response_gives_its_body_whatever_the_pieces_and_the_coding() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=--X\r\n\r\n--X\r\nabc";
        let chunked =
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=\"f\"\r\n\
                        Transfer-Encoding: chunked\r\n\r\n4\r\n--f\n\r\n3\r\nabc\r\n";
        for step in [1, 2, 7, 1000] {
            assert_eq!(body(plain, step).unwrap(), b"--X\r\nabc", "step {step}");
            assert_eq!(body(chunked, step).unwrap(), b"--f\nabc", "step {step}");
        }
        let refused = body(b"HTTP/1.1 401 Unauthorized\r\n\r\n", 3).unwrap_err();
        assert_eq!(refused.to_string(), "status 401, not 200");
        let html =
            body(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>", 100).unwrap_err();
        assert_eq!(
            html.to_string(),
            "Content-Type \"text/html\" is neither multipart/* nor video/x-motion-jpeg"
        );
    }

    fn url(host: &str, port: u16, authority: &str, target: &str) -> Url {
        let (host, authority, target) = (host.into(), authority.into(), target.into());
        Url { host, port, authority, target, credentials: None }
    }

    #[test]
    fn forms_of_urls() {
        assert_eq!(
            Url::parse("http://127.0.0.1:8554/video.mjpg?fps=5"),
            Ok(url("127.0.0.1", 8554, "127.0.0.1:8554", "/video.mjpg?fps=5"))
        );
        assert_eq!(Url::parse("HTTP://localhost"), Ok(url("localhost", 80, "localhost", "/")));
        assert_eq!(Url::parse("http://[::1]:81?x#frag"), Ok(url("::1", 81, "[::1]:81", "/?x")));
        assert_eq!(Url::parse("http://[::1]/a"), Ok(url("::1", 80, "[::1]", "/a")));
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "https://x/",
            "x:80/",
            "http://",
            "http://::1/",
            "http://[::1/",
            "http://[::1]x/",
            "http://[zz]/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:/",
            "http://u@h/",
            "http://u@h:1/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_and_what_is_shown() {
        let u = Url::parse("http://127.0.0.1:9/v").unwrap();
        assert_eq!(
            u.request("relay"),
            b"GET /v HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUser-Agent: relay\r\nConnection: close\r\n\r\n"
        );
        let cam = Url::parse("http://pilot:rc:car@cam.local:8554/video.mjpg").unwrap();
        assert_eq!((cam.host.as_str(), cam.port), ("cam.local", 8554));
        assert_eq!(cam.shown(), "http://cam.local:8554/video.mjpg");
        let request = String::from_utf8(cam.request("r")).unwrap();
        assert!(request.contains("\r\nAuthorization: Basic cGlsb3Q6cmM6Y2Fy\r\n"), "{request}");
    }
}
