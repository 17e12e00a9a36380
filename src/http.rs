/*!
HTTP requests in, response heads out: pure code, no I/O.

Requests are parsed with `httparse` from the bytes a client has sent so far;
[`parse`] says whether the request is complete, what it asks for, or which
error status it earns. The builders at the bottom make every response head
the server sends.
*/

use std::fmt::Write as _;
use std::time::Duration;

/// A request line and headers larger than this get `431`, or `414` when the
/// request line alone has not ended by then: real clients send a few
/// hundred bytes, and the cap bounds what a client can make us hold.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// More headers than this get `431` (httparse needs a fixed array).
const MAX_HEADERS: usize = 64;

/// The longest `?fps` interval: one frame a day. A viewer that wants fewer
/// wants snapshots, and the bound keeps every deadline reckoned from the
/// interval far inside `Instant`'s range.
pub const MAX_FRAME_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// The multipart boundary: mjpg-streamer's and µStreamer's, because
/// mjpg-streamer's input_http plugin, and scripts copied from it, look for
/// the delimiter `--boundarydonotcross` itself instead of reading the
/// Content-Type's parameter. It never occurs in the part headers, and
/// `Content-Length` (or, for advance headers, the JPEG's own end) tells
/// clients where JPEG data ends.
pub const BOUNDARY: &str = "boundarydonotcross";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `multipart/x-mixed-replace` stream of every frame.
    Stream,
    /// The latest frame as one JPEG.
    Snapshot,
    /// The viewer page.
    Index,
    /// Counters as JSON.
    Stats,
    /// The same counters for Prometheus.
    Metrics,
    /// The glass-to-glass latency page.
    Latency,
    /// A small icon, cached for a day so browsers stop asking.
    Favicon,
}

/// How each part of a stream is laid out for this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `headers, JPEG, CRLF --B CRLF`: each part carries `Content-Length`,
    /// which FFmpeg, OpenCV and VLC use to find the end of the JPEG.
    Length,
    /// `JPEG, CRLF --B CRLF, next part's headers, CRLF`: the next part's
    /// header block follows each frame at once, because Chromium paints a
    /// part only when it has parsed the next part's headers. There is no
    /// `Content-Length`, since the next frame's length is not yet known.
    AdvanceHeaders,
}

/// What a stream response calls its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamType {
    /// `multipart/x-mixed-replace; boundary=B`.
    Multipart,
    /// `application/octet-stream; multipart=x-mixed-replace; boundary=B`,
    /// the same bytes: WebKit refuses a page's `fetch()` a multipart body
    /// ("Load failed") but reads this. It still holds the words `multipart`
    /// and `boundary=B`, which fetch() readers (Fluidd's) look for.
    OctetStream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    /// The response head only.
    Head,
    /// A CORS preflight: may a page on another origin ask this?
    Options,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub route: Route,
    pub method: Method,
    pub framing: Framing,
    pub stream_type: StreamType,
    /// `?fps=N` as the time from one frame to the next (`0.5`: 2 s); `None`
    /// without it.
    pub frame_interval: Option<Duration>,
    /// The `Authorization` header, if any, for the caller to check.
    pub authorization: Option<Vec<u8>>,
}

impl Request {
    pub fn head_only(&self) -> bool {
        self.method == Method::Head
    }
}

/// The outcome of parsing what a client has sent so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole request.
    Request(Request),
    /// The request is wrong; answer with this status and close.
    Error(Status),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    /// A known query parameter, named here, has a value it cannot take;
    /// the body says which, since nothing else would tell the user.
    BadQuery(&'static str),
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    UriTooLong,
    HeadersTooLarge,
    Unavailable,
}

impl Status {
    pub fn line(self) -> &'static str {
        match self {
            Status::BadRequest | Status::BadQuery(_) => "400 Bad Request",
            Status::Unauthorized => "401 Unauthorized",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::UriTooLong => "414 URI Too Long",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// Where a whole request ends in what the client sent, and whether the
/// client lets the connection carry another request after its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// The request's length: any bytes after it begin the next request.
    pub len: usize,
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection:
    /// keep-alive` (RFC 9112 §9.3); and no body, since the server reads no
    /// bodies and could not tell where the next request begins.
    pub keep_alive: bool,
}

/// What a whole response's `Connection` header says: whether the server
/// reads another request on the connection once the response is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    Close,
    /// Said to HTTP/1.1 clients too, where it is the default, so that one
    /// head serves both versions (an HTTP/1.0 client needs it said).
    KeepAlive,
}

impl Connection {
    fn header(self) -> &'static str {
        match self {
            Connection::Close => "Connection: close\r\n",
            Connection::KeepAlive => "Connection: keep-alive\r\n",
        }
    }
}

/// Parses the bytes received so far from one client.
pub fn parse(buf: &[u8]) -> Parsed {
    parse_message(buf).0
}

/// Parses the bytes received so far from one client, and says where the
/// request ends when it is whole and well-formed, even if it earns an error
/// (`404`, `405`, a bad `?fps`). A malformed request, or one cut off at
/// [`MAX_REQUEST_BYTES`], has no such end: its answer closes the connection.
pub fn parse_message(buf: &[u8]) -> (Parsed, Option<Message>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_BYTES => {
            (Parsed::Error(too_large(buf)), None)
        }
        Ok(httparse::Status::Partial) => (Parsed::Partial, None),
        Err(httparse::Error::TooManyHeaders) => (Parsed::Error(Status::HeadersTooLarge), None),
        Err(_) => (Parsed::Error(Status::BadRequest), None),
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
            else {
                return (Parsed::Error(Status::BadRequest), None);
            };
            let message = Message { len, keep_alive: keep_alive(version, req.headers) };
            (request(method, target, req.headers), Some(message))
        }
    }
}

/// True if a User-Agent is WebKit's (Safari, every browser on iOS, GTK's
/// and WPE's): `AppleWebKit/` without `Chrome/` or `Chromium/`, which
/// Blink-based browsers add to the same token.
fn is_webkit(user_agent: &[u8]) -> bool {
    let has = |word: &[u8]| memchr::memmem::find(user_agent, word).is_some();
    has(b"AppleWebKit/") && !has(b"Chrome/") && !has(b"Chromium/")
}

/// A whole request's meaning, or the status it earns.
fn request(method: &str, target: &str, headers: &[httparse::Header]) -> Parsed {
    let header =
        |name: &str| headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        _ => return Parsed::Error(Status::MethodNotAllowed),
    };
    let target = match Target::parse(target) {
        Ok(target) => target,
        Err(status) => return Parsed::Error(status),
    };
    // Framed for what the request is for, not for who sends it: a
    // browser's <img> or page load is painted by the browser itself,
    // which wants the next part's headers early; a fetch() from a
    // page's script (Mainsail's MJPEG-Streamer mode: Accept */*)
    // sizes parts by Content-Length, as players do.
    let browser = header("user-agent").is_some_and(|ua| ua.starts_with(b"Mozilla/"));
    let shown = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("accept"))
        .any(|h| asks_for_image_or_page(h.value));
    let framing = match target.advance_headers {
        Some(true) => Framing::AdvanceHeaders,
        Some(false) => Framing::Length,
        None if browser && shown => Framing::AdvanceHeaders,
        None => Framing::Length,
    };
    // WebKit's <img> and page loads take multipart; its fetch() only the
    // same bytes under another name.
    let webkit = header("user-agent").is_some_and(is_webkit);
    let stream_type =
        if webkit && !shown { StreamType::OctetStream } else { StreamType::Multipart };
    Parsed::Request(Request {
        route: target.route,
        method,
        framing,
        stream_type,
        frame_interval: target.frame_interval,
        authorization: header("authorization").map(<[u8]>::to_vec),
    })
}

/// Whether a request of HTTP/1.`minor` with these headers lets the
/// connection stay open after its reply. `Connection` is a list of
/// tokens, possibly over several lines, any case; `close` wins. A body
/// (`Transfer-Encoding`, or a `Content-Length` that is not 0) is never
/// read, so its connection is not kept either.
fn keep_alive(minor: u8, headers: &[httparse::Header]) -> bool {
    let tokens = || {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
    };
    let close = tokens().any(|t| t.eq_ignore_ascii_case(b"close"));
    let asked = tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive"));
    let body = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
    });
    !close && !body && (minor >= 1 || asked)
}

/// True if an `Accept` value names an `image/` type or range, or
/// `text/html`, as browsers send for an `<img>` and for a page or frame,
/// with a weight above 0 (`q=0` says "not this", RFC 9110 §12.4.2). `*/*`
/// alone, as `fetch()` sends by default, asks for neither.
fn asks_for_image_or_page(accept: &[u8]) -> bool {
    accept.split(|&b| b == b',').any(|range| {
        let mut parts = range.split(|&b| b == b';');
        let media_range = parts.next().unwrap_or_default().trim_ascii();
        let wanted = media_range.get(..6).is_some_and(|kind| kind.eq_ignore_ascii_case(b"image/"))
            || media_range.eq_ignore_ascii_case(b"text/html");
        let refused = parts.any(|param| {
            let param = param.trim_ascii();
            let Some(weight) = param.strip_prefix(b"q=").or_else(|| param.strip_prefix(b"Q="))
            else {
                return false;
            };
            // Zero is "0", "0." or "0." and up to three zeros (§12.4.2).
            weight.first() == Some(&b'0')
                && weight[1..].first().is_none_or(|&b| b == b'.')
                && weight.iter().skip(2).all(|&b| b == b'0')
        });
        wanted && !refused
    })
}

/// What a request that reached the cap unfinished earns. httparse has
/// checked every byte so far, so a request line begun (empty lines before it
/// are allowed) whose method has ended but whose line has not is stuck in
/// its target: the version after it is eight bytes.
fn too_large(buf: &[u8]) -> Status {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = &buf[start..];
    if line.contains(&b' ') && !line.contains(&b'\n') {
        Status::UriTooLong
    } else {
        Status::HeadersTooLarge
    }
}

/// What the request target (path and query) asks for.
struct Target {
    route: Route,
    advance_headers: Option<bool>,
    frame_interval: Option<Duration>,
}

impl Target {
    /// Maps the paths of this server, µStreamer and mjpg-streamer onto routes.
    /// Unknown query parameters are ignored: viewers append cache-busters.
    /// An unknown path is `404`; then a known parameter's bad value is `400`.
    fn parse(target: &str) -> Result<Target, Status> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = origin_path(path);
        let mut action = None;
        let mut advance_headers = None;
        let mut fps = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "action" => action = Some(value),
                "advance_headers" => advance_headers = Some(truthy(value)),
                "fps" => fps = Some(value),
                _ => {}
            }
        }
        let route = match (path, action) {
            ("/" | "/index.html", Some("stream")) => Route::Stream,
            ("/" | "/index.html", Some("snapshot")) => Route::Snapshot,
            ("/" | "/index.html", _) => Route::Index,
            ("/video.mjpg" | "/stream" | "/stream.mjpg", _) => Route::Stream,
            ("/snapshot.jpg" | "/snapshot", _) => Route::Snapshot,
            ("/stats", _) => Route::Stats,
            ("/metrics", _) => Route::Metrics,
            ("/latency", _) => Route::Latency,
            ("/favicon.ico", _) => Route::Favicon,
            _ => return Err(Status::NotFound),
        };
        let frame_interval =
            fps.map(|value| frame_interval(value).ok_or(Status::BadQuery("fps"))).transpose()?;
        Ok(Target { route, advance_headers, frame_interval })
    }
}

/// `?fps=N` as the time from one frame to the next. N is a decimal number
/// above 0 in digits with at most one point (`0.5` is a frame every 2 s);
/// a sign, an exponent, `inf` or `NaN` is refused rather than guessed at,
/// and so is a rate slower than one frame per [`MAX_FRAME_INTERVAL`].
fn frame_interval(value: &str) -> Option<Duration> {
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    let points = value.bytes().filter(|&b| b == b'.').count();
    if digits == 0 || points > 1 || digits + points != value.len() {
        return None;
    }
    let fps: f64 = value.parse().ok()?;
    if !fps.is_finite() || fps <= 0.0 {
        return None;
    }
    let interval = Duration::try_from_secs_f64(1.0 / fps).ok()?;
    (interval <= MAX_FRAME_INTERVAL).then_some(interval)
}

/// The path of an absolute-form target (`http://host:port/path`, RFC 9112
/// §3.2.2, as proxies send it), which a server must accept; its empty path
/// is `/`. The authority is not looked at: this server has one host. Any
/// other target is returned as it is.
fn origin_path(target: &str) -> &str {
    let Some((scheme, rest)) = target.split_once("://") else { return target };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return target;
    }
    rest.find('/').map_or("/", |at| &rest[at..])
}

/// µStreamer's rule: a value is true if it starts with `1`, or is `true` or `yes`.
fn truthy(value: &str) -> bool {
    value.starts_with('1')
        || value.eq_ignore_ascii_case("true")
        || value.eq_ignore_ascii_case("yes")
}

/// Headers that keep every cache and proxy from holding on to a live picture.
const NO_CACHE: &str = "Cache-Control: no-cache, no-store, must-revalidate\r\nPragma: no-cache\r\n";

/// Headers every response carries.
fn common(out: &mut String, status: &str, extra: &str, connection: Connection) {
    let connection = connection.header();
    let _ =
        write!(out, "HTTP/1.1 {status}\r\nServer: raspivid_mjpeg_server\r\n{connection}{extra}");
}

/// The head of a stream response, and the start of its body up to the
/// first JPEG byte (the opening delimiter; for [`Framing::AdvanceHeaders`]
/// also the first part's headers). A stream ends only with its connection.
pub fn stream_head(
    extra: &str,
    framing: Framing,
    stream_type: StreamType,
    unix_micros: u64,
) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    common(&mut out, "200 OK", extra, Connection::Close);
    let _ = write!(
        out,
        "Content-Type: {}\r\n{NO_CACHE}\r\n--{BOUNDARY}\r\n",
        stream_content_type(stream_type)
    );
    if framing == Framing::AdvanceHeaders {
        push_part_headers(&mut out, None, unix_micros, extra);
    }
    out.into_bytes()
}

/// The body prefix a stream response omits under HEAD.
pub fn stream_head_only(extra: &str, stream_type: StreamType, connection: Connection) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    common(&mut out, "200 OK", extra, connection);
    let _ = write!(out, "Content-Type: {}\r\n{NO_CACHE}\r\n", stream_content_type(stream_type));
    out.into_bytes()
}

fn stream_content_type(stream_type: StreamType) -> String {
    match stream_type {
        StreamType::Multipart => format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
        StreamType::OctetStream => {
            format!("application/octet-stream; multipart=x-mixed-replace; boundary={BOUNDARY}")
        }
    }
}

/// A part's header block: the type, the length when known, the frame's
/// wall-clock time (as µStreamer and mjpg-streamer send it), `extra`
/// header lines, a blank line.
pub fn push_part_headers(
    out: &mut String,
    content_length: Option<usize>,
    unix_micros: u64,
    extra: &str,
) {
    out.push_str("Content-Type: image/jpeg\r\n");
    if let Some(length) = content_length {
        let _ = write!(out, "Content-Length: {length}\r\n");
    }
    let _ = write!(
        out,
        "X-Timestamp: {}.{:06}\r\n{extra}\r\n",
        unix_micros / 1_000_000,
        unix_micros % 1_000_000
    );
}

/// The head of a response that caches may keep for `max_age` seconds.
pub fn cached_head(
    content_type: &str,
    length: usize,
    max_age: u32,
    extra: &str,
    connection: Connection,
) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    common(&mut out, "200 OK", extra, connection);
    let _ = write!(
        out,
        "Content-Type: {content_type}\r\nContent-Length: {length}\r\nCache-Control: public, max-age={max_age}\r\n\r\n"
    );
    out.into_bytes()
}

/// The head of a complete response with a body of `length` bytes.
pub fn response_head(
    status: &str,
    content_type: &str,
    length: usize,
    extra: &str,
    connection: Connection,
) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    common(&mut out, status, extra, connection);
    let _ =
        write!(out, "Content-Type: {content_type}\r\nContent-Length: {length}\r\n{NO_CACHE}\r\n");
    out.into_bytes()
}

/// The answer to a CORS preflight: GET and HEAD, with credentials.
pub fn preflight_response(extra: &str, connection: Connection) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    common(&mut out, "204 No Content", extra, connection);
    out.push_str(
        "Access-Control-Allow-Methods: GET, HEAD\r\n\
         Access-Control-Allow-Headers: Authorization\r\n\
         Access-Control-Max-Age: 600\r\nContent-Length: 0\r\n\r\n",
    );
    out.into_bytes()
}

/// A whole error response: status, a one-line plain-text body, and the
/// headers the status needs.
pub fn error_response(
    status: Status,
    extra: &str,
    head_only: bool,
    connection: Connection,
) -> Vec<u8> {
    let body = match status {
        Status::BadQuery(name) => format!("{}: invalid value for {name}\n", status.line()),
        _ => format!("{}\n", status.line()),
    };
    let more = match status {
        Status::MethodNotAllowed => "Allow: GET, HEAD, OPTIONS\r\n",
        Status::Unauthorized => "WWW-Authenticate: Basic realm=\"camera\", charset=\"UTF-8\"\r\n",
        Status::Unavailable => "Retry-After: 1\r\n",
        _ => "",
    };
    let extra = format!("{extra}{more}");
    let mut out = response_head(status.line(), "text/plain", body.len(), &extra, connection);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Parsed {
        parse(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    fn route(target: &str) -> Option<Route> {
        match get(target) {
            Parsed::Request(r) => Some(r.route),
            _ => None,
        }
    }

    #[test]
    fn routes_and_aliases() {
        assert_eq!(route("/video.mjpg"), Some(Route::Stream));
        assert_eq!(route("/stream"), Some(Route::Stream));
        assert_eq!(route("/?action=stream"), Some(Route::Stream));
        assert_eq!(route("/snapshot.jpg"), Some(Route::Snapshot));
        assert_eq!(route("/snapshot"), Some(Route::Snapshot));
        assert_eq!(route("/?action=snapshot"), Some(Route::Snapshot));
        assert_eq!(route("/"), Some(Route::Index));
        assert_eq!(route("/stats"), Some(Route::Stats));
        assert_eq!(route("/favicon.ico"), Some(Route::Favicon));
        assert_eq!(route("/metrics"), Some(Route::Metrics));
        assert_eq!(route("/latency"), Some(Route::Latency));
    }

    #[test]
    fn unknown_query_parameters_are_ignored() {
        assert_eq!(route("/video.mjpg?1700000000000"), Some(Route::Stream));
        assert_eq!(route("/snapshot.jpg?t=5&x"), Some(Route::Snapshot));
        assert_eq!(route("/?_=1&action=stream&v=2"), Some(Route::Stream));
        // OctoPrint's cache-buster: a bare number after the action.
        assert_eq!(route("/?action=stream&1700000000000"), Some(Route::Stream));
    }

    #[test]
    fn an_absolute_form_target_routes_like_its_path() {
        assert_eq!(route("http://cam.local/video.mjpg"), Some(Route::Stream));
        assert_eq!(route("http://cam.local:8554/snapshot.jpg?t=1"), Some(Route::Snapshot));
        assert_eq!(route("HTTP://[::1]:8554/?action=stream"), Some(Route::Stream));
        assert_eq!(route("https://cam.local/stats"), Some(Route::Stats));
        assert_eq!(route("http://cam.local"), Some(Route::Index));
        assert_eq!(route("http://cam.local?action=snapshot"), Some(Route::Snapshot));
        match get("http://cam.local:8554/stream?fps=0.5&advance_headers=1") {
            Parsed::Request(r) => {
                assert_eq!(r.frame_interval, Some(Duration::from_secs(2)));
                assert_eq!(r.framing, Framing::AdvanceHeaders);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(get("http://cam.local/nothing"), Parsed::Error(Status::NotFound));
        assert_eq!(get("ftp://cam.local/video.mjpg"), Parsed::Error(Status::NotFound));
        assert_eq!(get("/x/http://cam.local/video.mjpg"), Parsed::Error(Status::NotFound));
    }

    #[test]
    fn origin_path_strips_only_an_http_scheme_and_authority() {
        assert_eq!(origin_path("/video.mjpg"), "/video.mjpg");
        assert_eq!(origin_path("http://h/video.mjpg"), "/video.mjpg");
        assert_eq!(origin_path("http://h:1/a/b"), "/a/b");
        assert_eq!(origin_path("hTTpS://h/"), "/");
        assert_eq!(origin_path("http://h"), "/");
        assert_eq!(origin_path("http://"), "/");
        assert_eq!(origin_path("http:/h/video.mjpg"), "http:/h/video.mjpg");
        assert_eq!(origin_path("rtsp://h/video.mjpg"), "rtsp://h/video.mjpg");
        assert_eq!(origin_path("/a://b"), "/a://b");
        assert_eq!(origin_path("*"), "*");
        assert_eq!(origin_path(""), "");
    }

    #[test]
    fn unknown_path_is_404() {
        assert_eq!(get("/video.mjpgx"), Parsed::Error(Status::NotFound));
        assert_eq!(get("/etc/passwd"), Parsed::Error(Status::NotFound));
        assert_eq!(get("*"), Parsed::Error(Status::NotFound));
    }

    #[test]
    fn methods() {
        let post = parse(b"POST /video.mjpg HTTP/1.1\r\n\r\n");
        assert_eq!(post, Parsed::Error(Status::MethodNotAllowed));
        match parse(b"HEAD /snapshot.jpg HTTP/1.0\r\n\r\n") {
            Parsed::Request(r) => assert!(r.head_only() && r.route == Route::Snapshot),
            other => panic!("{other:?}"),
        }
        match parse(b"OPTIONS /stats HTTP/1.1\r\nOrigin: http://a\r\n\r\n") {
            Parsed::Request(r) => assert_eq!((r.method, r.route), (Method::Options, Route::Stats)),
            other => panic!("{other:?}"),
        }
        let head = error_response(Status::MethodNotAllowed, "", false, Connection::Close);
        assert!(String::from_utf8(head).unwrap().contains("\r\nAllow: GET, HEAD, OPTIONS\r\n"));
    }

    #[test]
    fn malformed_is_400() {
        assert_eq!(parse(b"GET\x00 / HTTP/1.1\r\n\r\n"), Parsed::Error(Status::BadRequest));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01"), Parsed::Error(Status::BadRequest));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nNo colon\r\n\r\n"), Parsed::Error(Status::BadRequest));
        // HTTP/0.9 had no version; we do not speak it.
        assert_eq!(parse(b"GET /\r\n\r\n"), Parsed::Error(Status::BadRequest));
    }

    #[test]
    fn partial_until_the_blank_line_then_431_past_the_cap() {
        let full = b"GET /video.mjpg HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Parsed::Partial, "cut at {cut}");
        }
        assert!(matches!(parse(full), Parsed::Request(_)));
        let mut endless = b"GET / HTTP/1.1\r\n".to_vec();
        while endless.len() < MAX_REQUEST_BYTES {
            endless.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse(&endless), Parsed::Error(Status::HeadersTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Parsed::Error(Status::HeadersTooLarge));
    }

    fn keeps(request: &str) -> bool {
        parse_message(request.as_bytes()).1.expect("a whole request").keep_alive
    }

    #[test]
    fn http_1_1_keeps_the_connection_unless_it_says_close_or_sends_a_body() {
        assert!(keeps("GET / HTTP/1.1\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.1\r\nConnection: Upgrade\r\nConnection:  close \r\n\r\n"));
        // Tokens, not substrings.
        assert!(keeps("GET / HTTP/1.1\r\nConnection: closed, x-close\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
        assert!(!keeps("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn http_1_0_keeps_the_connection_only_when_it_asks() {
        assert!(!keeps("GET / HTTP/1.0\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
    }

    #[test]
    fn a_whole_request_ends_where_the_next_begins() {
        let first = "GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\n\r\n";
        let both = format!("{first}GET /stats HTTP/1.1\r\n\r\nGET /");
        let (parsed, message) = parse_message(both.as_bytes());
        assert_eq!(message, Some(Message { len: first.len(), keep_alive: true }));
        assert!(matches!(parsed, Parsed::Request(r) if r.route == Route::Snapshot));
        let rest = &both.as_bytes()[first.len()..];
        let (parsed, message) = parse_message(rest);
        assert_eq!(message.map(|m| m.len), Some(rest.len() - 5));
        assert!(matches!(parsed, Parsed::Request(r) if r.route == Route::Stats));
        assert_eq!(parse_message(b"GET /"), (Parsed::Partial, None));
    }

    #[test]
    fn a_refused_but_well_formed_request_has_an_end_and_a_malformed_one_none() {
        for (request, status) in [
            ("GET /nothing HTTP/1.1\r\n\r\n", Status::NotFound),
            ("DELETE / HTTP/1.1\r\n\r\n", Status::MethodNotAllowed),
            ("GET /stream?fps=x HTTP/1.1\r\n\r\n", Status::BadQuery("fps")),
        ] {
            let message = Some(Message { len: request.len(), keep_alive: true });
            assert_eq!(parse_message(request.as_bytes()), (Parsed::Error(status), message));
        }
        let malformed = b"GET / HTTP/1.1\r\nNo colon\r\n\r\n";
        assert_eq!(parse_message(malformed), (Parsed::Error(Status::BadRequest), None));
        let mut endless = b"GET / HTTP/1.1\r\n".to_vec();
        endless.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(parse_message(&endless), (Parsed::Error(Status::HeadersTooLarge), None));
    }

    #[test]
    fn whole_responses_say_whether_the_connection_stays_and_a_stream_closes() {
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        for connection in [Connection::Close, Connection::KeepAlive] {
            let said = match connection {
                Connection::Close => "\r\nConnection: close\r\n",
                Connection::KeepAlive => "\r\nConnection: keep-alive\r\n",
            };
            for head in [
                text(response_head("200 OK", "image/jpeg", 4, "", connection)),
                text(cached_head("image/x-icon", 4, 60, "", connection)),
                text(preflight_response("", connection)),
                text(error_response(Status::NotFound, "", false, connection)),
                text(stream_head_only("", StreamType::Multipart, connection)),
            ] {
                assert_eq!(head.matches("Connection:").count(), 1, "{head}");
                assert!(head.contains(said), "{head}");
            }
        }
        let stream = text(stream_head("", Framing::Length, StreamType::Multipart, 0));
        assert!(stream.contains("\r\nConnection: close\r\n"), "{stream}");
    }

    #[test]
    fn a_request_line_unfinished_at_the_cap_is_414() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_BYTES));
        let long = long.as_bytes();
        for cut in 0..MAX_REQUEST_BYTES {
            assert_eq!(parse(&long[..cut]), Parsed::Partial, "cut at {cut}");
        }
        assert_eq!(parse(&long[..MAX_REQUEST_BYTES]), Parsed::Error(Status::UriTooLong));
        let absolute = format!("GET http://h/{}", "a".repeat(MAX_REQUEST_BYTES));
        let capped = &absolute.as_bytes()[..MAX_REQUEST_BYTES];
        assert_eq!(parse(capped), Parsed::Error(Status::UriTooLong));
        // Empty lines before the request line do not end it.
        let late = format!("\r\n\r\nGET /{}", "a".repeat(MAX_REQUEST_BYTES));
        let capped = &late.as_bytes()[..MAX_REQUEST_BYTES];
        assert_eq!(parse(capped), Parsed::Error(Status::UriTooLong));
        // A target that fits, with headers that do not, is the headers' fault.
        let mut both = format!("GET /{} HTTP/1.1\r\n", "a".repeat(4000)).into_bytes();
        while both.len() < MAX_REQUEST_BYTES {
            both.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse(&both), Parsed::Error(Status::HeadersTooLarge));
        // Without a space there is no target yet: a method this long is
        // not a URI's fault.
        assert_eq!(parse(&[b'A'; MAX_REQUEST_BYTES]), Parsed::Error(Status::HeadersTooLarge));
        let reply =
            String::from_utf8(error_response(Status::UriTooLong, "", false, Connection::Close))
                .unwrap();
        assert!(reply.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\n414 URI Too Long\n"), "{reply}");
    }

    #[test]
    fn framing_follows_the_query_then_what_a_browser_asks_for() {
        let framing = |headers: &str, target: &str| match parse(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes(),
        ) {
            Parsed::Request(r) => r.framing,
            other => panic!("{other:?}"),
        };
        let chrome = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156\r\n";
        let img = "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\n";
        let page = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n";
        let fetch = "Accept: */*\r\n";
        let (advance, length) = (Framing::AdvanceHeaders, Framing::Length);
        // A browser's <img> and its page load or iframe paint the stream.
        assert_eq!(framing(&format!("{chrome}{img}"), "/video.mjpg"), advance);
        assert_eq!(framing(&format!("{chrome}{page}"), "/video.mjpg"), advance);
        // Its fetch() (Mainsail), or no Accept at all, reads parts itself.
        assert_eq!(framing(&format!("{chrome}{fetch}"), "/video.mjpg"), length);
        assert_eq!(framing(chrome, "/video.mjpg"), length);
        // Not a browser: Content-Length whatever it accepts.
        assert_eq!(framing(&format!("User-Agent: Lavf/60\r\n{img}"), "/video.mjpg"), length);
        assert_eq!(framing(img, "/video.mjpg"), length);
        assert_eq!(framing("", "/video.mjpg"), length);
        // The query decides over both.
        assert_eq!(framing(&format!("{chrome}{img}"), "/video.mjpg?advance_headers=0"), length);
        assert_eq!(framing(&format!("{chrome}{fetch}"), "/stream?advance_headers=1"), advance);
        assert_eq!(framing("", "/stream?advance_headers=1"), advance);
        assert_eq!(framing("", "/stream?advance_headers=yes"), advance);
        // Any of several Accept lines may ask.
        let two = format!("{chrome}{fetch}Accept: image/jpeg\r\n");
        assert_eq!(framing(&two, "/video.mjpg"), advance);
    }

    #[test]
    fn webkit_fetch_gets_the_stream_as_octet_stream() {
        let kind = |headers: &str| match parse(
            format!("GET /video.mjpg HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes(),
        ) {
            Parsed::Request(r) => r.stream_type,
            other => panic!("{other:?}"),
        };
        let safari = "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) \
                      AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15\r\n";
        let gtk = "User-Agent: Mozilla/5.0 (X11; Ubuntu; Linux x86_64) AppleWebKit/605.1.15 \
                   (KHTML, like Gecko) Version/18.0 Safari/605.1.15\r\n";
        let chrome = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n";
        let firefox = "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0\r\n";
        let img =
            "Accept: image/webp,image/avif,video/*;q=0.8,image/png,image/*;q=0.8,*/*;q=0.5\r\n";
        let page = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n";
        let fetch = "Accept: */*\r\n";
        let (octet, multipart) = (StreamType::OctetStream, StreamType::Multipart);
        for webkit in [safari, gtk] {
            assert_eq!(kind(&format!("{webkit}{fetch}")), octet);
            assert_eq!(kind(webkit), octet);
            assert_eq!(kind(&format!("{webkit}{img}")), multipart);
            assert_eq!(kind(&format!("{webkit}{page}")), multipart);
        }
        for other in [chrome, firefox, "User-Agent: Lavf/60\r\n", ""] {
            assert_eq!(kind(&format!("{other}{fetch}")), multipart, "{other}");
        }
        let head = String::from_utf8(stream_head("", Framing::Length, octet, 0)).unwrap();
        assert!(head.contains(&format!(
            "\r\nContent-Type: application/octet-stream; multipart=x-mixed-replace; boundary={BOUNDARY}\r\n"
        )));
        assert!(head.ends_with(&format!("\r\n\r\n--{BOUNDARY}\r\n")), "{head}");
        let only = String::from_utf8(stream_head_only("", octet, Connection::Close)).unwrap();
        assert!(only.contains("\r\nContent-Type: application/octet-stream; multipart="), "{only}");
        assert!(only.ends_with("\r\n\r\n"), "{only}");
    }

    #[test]
    fn accept_asks_for_an_image_or_a_page_unless_weighted_0() {
        for yes in [
            "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
            "image/webp,image/avif,image/jxl,image/heic,video/*;q=0.8,image/*;q=0.8,*/*;q=0.5",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "image/*",
            "IMAGE/JPEG",
            "Text/HTML",
            "*/*, image/jpeg ; q=0.1",
            "image/jpeg;q=0.001",
            "image/jpeg;level=1;q=1",
            "image/jpeg;q=01",
        ] {
            assert!(asks_for_image_or_page(yes.as_bytes()), "{yes}");
        }
        for no in [
            "*/*",
            "",
            "application/json, text/plain, */*",
            "text/*",
            "text/htmlx",
            "multipart/x-mixed-replace",
            "video/x-motion-jpeg",
            "image",
            "imagex/jpeg",
            "xtext/html",
            "image/*;q=0",
            "image/*;q=0.",
            "image/*;q=0.0",
            "image/*; Q=0.000",
            "text/html;q=0, */*",
        ] {
            assert!(!asks_for_image_or_page(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn fps_cap_and_headers_are_read() {
        match parse(b"GET /video.mjpg?fps=5 HTTP/1.1\r\nauthorization: Basic eDp5\r\n\r\n") {
            Parsed::Request(r) => {
                assert_eq!(r.frame_interval, Some(Duration::from_millis(200)));
                assert_eq!(r.authorization.as_deref(), Some(&b"Basic eDp5"[..]));
            }
            other => panic!("{other:?}"),
        }
        match get("/video.mjpg?x=1") {
            Parsed::Request(r) => assert_eq!(r.frame_interval, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fractional_fps_is_an_interval() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(frame_interval("0.5"), ms(2000));
        assert_eq!(frame_interval(".5"), ms(2000));
        assert_eq!(frame_interval("5."), ms(200));
        assert_eq!(frame_interval("0.25"), ms(4000));
        assert_eq!(frame_interval("1"), ms(1000));
        assert_eq!(frame_interval("2.5"), ms(400));
        assert_eq!(frame_interval("010"), ms(100));
        assert_eq!(frame_interval("30"), Some(Duration::from_nanos(33_333_333)));
        // A day a frame is the slowest; a faster source than any camera is
        // as good as no cap.
        assert_eq!(frame_interval("0.0000115741"), Some(Duration::from_nanos(86_399_806_464_434)));
        assert_eq!(frame_interval("0.0000115740"), None);
        assert_eq!(frame_interval("1000000000"), Some(Duration::from_nanos(1)));
        assert_eq!(frame_interval(&"9".repeat(400)), None, "past f64: infinite");
    }

    #[test]
    fn fps_that_is_not_a_positive_decimal_is_refused() {
        for value in [
            "", "0", "0.0", "00", ".", "-1", "+1", "-0.5", "1e3", "1E3", "inf", "NaN", "infinity",
            "0x10", "1.2.3", "..5", " 5", "5 ", "5%20", "½", "５", "1,5", "five",
        ] {
            assert_eq!(frame_interval(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_bad_fps_is_400_naming_it_and_an_unknown_path_stays_404() {
        for target in ["/video.mjpg?fps=0", "/video.mjpg?fps=abc", "/stream?fps=-2", "/?fps"] {
            assert_eq!(get(target), Parsed::Error(Status::BadQuery("fps")), "{target}");
        }
        assert_eq!(get("/?action=stream&fps=5&fps=x"), Parsed::Error(Status::BadQuery("fps")));
        assert_eq!(get("/nowhere?fps=0"), Parsed::Error(Status::NotFound));
        let reply = String::from_utf8(error_response(
            Status::BadQuery("fps"),
            "",
            false,
            Connection::Close,
        ))
        .unwrap();
        assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
        assert!(reply.contains("\r\nContent-Length: 39\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\n400 Bad Request: invalid value for fps\n"), "{reply}");
    }

    #[test]
    fn stream_head_is_exact() {
        let head =
            String::from_utf8(stream_head("", Framing::Length, StreamType::Multipart, 0)).unwrap();
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 200 OK\r\nServer: raspivid_mjpeg_server\r\nConnection: close\r\n\
                 Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
                 Cache-Control: no-cache, no-store, must-revalidate\r\nPragma: no-cache\r\n\
                 \r\n--{BOUNDARY}\r\n"
            )
        );
        let advance = String::from_utf8(stream_head(
            "",
            Framing::AdvanceHeaders,
            StreamType::Multipart,
            1_500_000,
        ))
        .unwrap();
        assert!(advance.ends_with(&format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nX-Timestamp: 1.500000\r\n\r\n"
        )));
    }

    #[test]
    fn part_headers_are_exact() {
        let mut out = String::new();
        push_part_headers(&mut out, Some(1234), 1_700_000_000_000_042, "");
        assert_eq!(
            out,
            "Content-Type: image/jpeg\r\nContent-Length: 1234\r\nX-Timestamp: 1700000000.000042\r\n\r\n"
        );
        out.clear();
        push_part_headers(&mut out, None, 0, "Access-Control-Allow-Origin: *\r\n");
        assert!(out.ends_with("X-Timestamp: 0.000000\r\nAccess-Control-Allow-Origin: *\r\n\r\n"));
    }

    #[test]
    fn error_responses_carry_their_headers() {
        let text = |s| String::from_utf8(error_response(s, "", false, Connection::Close)).unwrap();
        assert!(text(Status::Unavailable).contains("\r\nRetry-After: 1\r\n"));
        assert!(text(Status::Unauthorized).contains("\r\nWWW-Authenticate: Basic"));
        let r = text(Status::NotFound);
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(r.ends_with("\r\n\r\n404 Not Found\n"));
        let head = String::from_utf8(error_response(Status::NotFound, "", true, Connection::Close))
            .unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }
}
