/*!
What the server answers to a parsed request: pure code, no I/O.

[`respond`] turns a request and what the server holds (the latest frame,
the credentials, the CORS headers) into a [`Reply`], which the loop hands
to the client. `/stats` is the one reply the loop completes itself, since
only it can walk the viewers; nothing else pays for that walk.
*/

use crate::frame::Frame;
use crate::http::{self, Connection, Framing, Method, Parsed, Route, Status};
use std::rc::Rc;
use std::time::Duration;

/// What the server holds that a reply may need.
pub struct Ctx<'a> {
    /// The base64 `USER:PASS` every request must carry, if any.
    pub credentials: Option<&'a str>,
    /// Header lines every response carries ([`cors_headers`]).
    pub extra: &'a str,
    pub latest: Option<&'a Rc<Frame>>,
    /// The camera is starting: a snapshot waits for its first frame.
    pub starting: bool,
    /// The wall-clock time, for the stream's first part headers.
    pub unix_micros: u64,
    /// What a whole reply does to the connection after it: kept only if the
    /// client lets it be and the connection has requests left.
    pub connection: Connection,
}

#[derive(Debug)]
pub enum Reply {
    /// The stream: `head` (up to the first JPEG byte), then frames.
    Stream { head: Vec<u8>, framing: Framing, frame_interval: Option<Duration> },
    /// A whole response: `head`, then a snapshot's JPEG if any; then the
    /// connection closes or waits for the next request, as `head` says.
    Whole { head: Vec<u8>, jpeg: Option<Rc<Frame>>, connection: Connection },
    /// `/stats` or `/metrics`: the caller gathers the figures and sends
    /// them with [`page`].
    Figures { format: Format, head_only: bool, connection: Connection },
    /// A snapshot to answer with the camera's first frame, or with
    /// [`snapshot`] of what there is once [`SNAPSHOT_WAIT`] has passed.
    Await { head_only: bool, connection: Connection },
}

/// How the figures are asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `/stats`.
    Json,
    /// `/metrics`: Prometheus's text exposition.
    Prometheus,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

impl Reply {
    fn bytes(head: Vec<u8>, connection: Connection) -> Reply {
        Reply::Whole { head, jpeg: None, connection }
    }
}

/// Answers what a client sent, once [`http::parse`] says it is complete
/// or wrong. Never called for [`Parsed::Partial`].
pub fn respond(parsed: Parsed, ctx: &Ctx) -> Reply {
    let (extra, connection) = (ctx.extra, ctx.connection);
    let request = match parsed {
        Parsed::Partial => {
            let head = http::error_response(Status::BadRequest, extra, false, Connection::Close);
            return Reply::bytes(head, Connection::Close);
        }
        Parsed::Error(status) => {
            return Reply::bytes(http::error_response(status, extra, false, connection), connection)
        }
        Parsed::Request(request) => request,
    };
    let head_only = request.head_only();
    // A preflight never carries credentials: browsers send them only once
    // it has said they may.
    if request.method == Method::Options {
        return Reply::bytes(http::preflight_response(extra, connection), connection);
    }
    if let Some(expected) = ctx.credentials {
        if !authorized(request.authorization.as_deref(), expected) {
            let head = http::error_response(Status::Unauthorized, extra, head_only, connection);
            return Reply::bytes(head, connection);
        }
    }
    match request.route {
        Route::Stream if head_only => {
            Reply::bytes(http::stream_head_only(extra, request.stream_type, connection), connection)
        }
        Route::Stream => Reply::Stream {
            head: http::stream_head(extra, request.framing, request.stream_type, ctx.unix_micros),
            framing: request.framing,
            frame_interval: request.frame_interval,
        },
        Route::Snapshot if ctx.starting => Reply::Await { head_only, connection },
        Route::Snapshot => snapshot(ctx.latest, extra, head_only, connection),
        Route::Index => {
            let html = "text/html; charset=utf-8";
            Reply::bytes(page(INDEX_HTML, html, extra, head_only, connection), connection)
        }
        Route::Latency => {
            let html = "text/html; charset=utf-8";
            Reply::bytes(page(LATENCY_HTML, html, extra, head_only, connection), connection)
        }
        Route::Favicon => {
            let (len, max_age) = (FAVICON.len(), FAVICON_MAX_AGE);
            let mut out = http::cached_head("image/x-icon", len, max_age, extra, connection);
            if !head_only {
                out.extend_from_slice(FAVICON);
            }
            Reply::bytes(out, connection)
        }
        Route::Stats => Reply::Figures { format: Format::Json, head_only, connection },
        Route::Metrics => Reply::Figures { format: Format::Prometheus, head_only, connection },
    }
}

/// How long a snapshot waits for a starting camera's first frame before it
/// is given the placeholder: a camera takes a second or two to start.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

/// The snapshot of `latest`: a notice made while the source has no frames
/// says so in `X-Source-State`; before any frame, `503`.
pub fn snapshot(
    latest: Option<&Rc<Frame>>,
    extra: &str,
    head_only: bool,
    connection: Connection,
) -> Reply {
    let Some(frame) = latest else {
        let head = http::error_response(Status::Unavailable, extra, head_only, connection);
        return Reply::bytes(head, connection);
    };
    let state = frame.notice.map(|s| format!("X-Source-State: {s}\r\n")).unwrap_or_default();
    let extra = format!("{extra}{state}");
    Reply::Whole {
        head: http::response_head("200 OK", "image/jpeg", frame.jpeg.len(), &extra, connection),
        jpeg: (!head_only).then(|| Rc::clone(frame)),
        connection,
    }
}

/// A whole `200` response with `body`.
pub fn page(
    body: &str,
    content_type: &str,
    extra: &str,
    head_only: bool,
    connection: Connection,
) -> Vec<u8> {
    let mut out = http::response_head("200 OK", content_type, body.len(), extra, connection);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// True if `given` is `Basic <expected>`; the scheme's case does not matter
/// (RFC 9110 §11.1), the credentials' does.
fn authorized(given: Option<&[u8]>, expected: &str) -> bool {
    let Some(given) = given else { return false };
    let Some(space) = given.iter().position(|&b| b == b' ') else { return false };
    let (scheme, rest) = given.split_at(space);
    scheme.eq_ignore_ascii_case(b"basic")
        && constant_time_eq(rest.trim_ascii(), expected.as_bytes())
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guessed password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &y) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(!y) ^ y);
    }
    diff == 0
}

/// The CORS headers for `--allow-origin`. Browsers refuse credentials
/// beside the `*` wildcard, so `*` allows any page without them, and a
/// named origin is allowed with them (for `--auth`).
pub fn cors_headers(origin: Option<&str>) -> String {
    match origin {
        Some("*") => "Access-Control-Allow-Origin: *\r\n".into(),
        Some(origin) => format!(
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        ),
        None => String::new(),
    }
}

const INDEX_HTML: &str = include_str!("index.html");
const LATENCY_HTML: &str = include_str!("latency.html");

/// A 32x32 camera. Cached for a day: WebKit, shown a bare stream, asks for
/// the icon again on every part while the answer may not be kept.
const FAVICON: &[u8] = include_bytes!("favicon.ico");
const FAVICON_MAX_AGE: u32 = 86_400;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ask(request: &str, ctx: &Ctx) -> Reply {
        respond(http::parse(request.as_bytes()), ctx)
    }

    fn ctx<'a>(latest: Option<&'a Rc<Frame>>) -> Ctx<'a> {
        let connection = Connection::Close;
        Ctx { credentials: None, extra: "", latest, starting: false, unix_micros: 0, connection }
    }

    fn whole(reply: Reply) -> (String, Option<Rc<Frame>>) {
        match reply {
            Reply::Whole { head, jpeg, .. } => (String::from_utf8(head).unwrap(), jpeg),
            other => panic!("{other:?}"),
        }
    }

    fn frame() -> Rc<Frame> {
        Rc::new(Frame::new(1, vec![0xFF, 0xD8, 0xFF, 0xD9], Instant::now(), 0, ""))
    }

    #[test]
    fn the_stream_gets_its_head_and_framing() {
        match ask("GET /video.mjpg?fps=0.5 HTTP/1.1\r\n\r\n", &ctx(None)) {
            Reply::Stream { head, framing, frame_interval } => {
                assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));
                assert_eq!(
                    (framing, frame_interval),
                    (Framing::Length, Some(Duration::from_secs(2)))
                );
            }
            other => panic!("{other:?}"),
        }
        let (head, _) = whole(ask("GET /video.mjpg?fps=0 HTTP/1.1\r\n\r\n", &ctx(None)));
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n400 Bad Request: invalid value for fps\n"), "{head}");
        let (head, _) = whole(ask("HEAD /stream HTTP/1.1\r\n\r\n", &ctx(None)));
        assert!(head.contains("multipart/x-mixed-replace") && head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_snapshot_is_503_before_the_first_frame_then_the_latest() {
        let (head, jpeg) = whole(ask("GET /snapshot.jpg HTTP/1.1\r\n\r\n", &ctx(None)));
        assert!(head.starts_with("HTTP/1.1 503") && head.contains("Retry-After: 1\r\n"));
        assert!(jpeg.is_none());
        let f = frame();
        let (head, jpeg) = whole(ask("GET /?action=snapshot HTTP/1.1\r\n\r\n", &ctx(Some(&f))));
        assert!(head.contains("Content-Type: image/jpeg\r\nContent-Length: 4\r\n"));
        assert!(Rc::ptr_eq(&jpeg.unwrap(), &f));
        let (_, jpeg) = whole(ask("HEAD /snapshot HTTP/1.1\r\n\r\n", &ctx(Some(&f))));
        assert!(jpeg.is_none());
    }

    #[test]
    fn a_snapshot_waits_for_a_starting_camera_and_says_when_it_is_a_notice() {
        let mut c = ctx(None);
        c.starting = true;
        assert!(matches!(
            ask("GET /snapshot.jpg HTTP/1.1\r\n\r\n", &c),
            Reply::Await { head_only: false, .. }
        ));
        let notice = Rc::new(Frame::notice(2, vec![0xFF, 0xD8, 0xFF, 0xD9], 0, "", "offline"));
        let (head, jpeg) = whole(snapshot(Some(&notice), "", false, Connection::Close));
        assert!(head.contains("\r\nX-Source-State: offline\r\n"), "{head}");
        assert!(jpeg.is_some());
        let (head, _) = whole(snapshot(Some(&frame()), "", false, Connection::Close));
        assert!(!head.contains("X-Source-State"), "{head}");
    }

    #[test]
    fn stats_is_left_to_the_caller_and_errors_get_their_status() {
        assert!(matches!(
            ask("HEAD /stats HTTP/1.1\r\n\r\n", &ctx(None)),
            Reply::Figures { format: Format::Json, head_only: true, .. }
        ));
        assert!(matches!(
            ask("GET /metrics HTTP/1.1\r\n\r\n", &ctx(None)),
            Reply::Figures { format: Format::Prometheus, head_only: false, .. }
        ));
        let Reply::Whole { head, .. } = ask("GET /favicon.ico HTTP/1.1\r\n\r\n", &ctx(None)) else {
            panic!()
        };
        assert!(head.ends_with(FAVICON));
        let head = String::from_utf8_lossy(&head[..head.len() - FAVICON.len()]).into_owned();
        assert!(head.contains("Cache-Control: public, max-age=86400\r\n"), "{head}");
        let (head, _) = whole(ask("GET /nope HTTP/1.1\r\n\r\n", &ctx(None)));
        assert!(head.starts_with("HTTP/1.1 404"));
        let (head, _) = whole(ask("BREW / HTTP/1.1\r\n\r\n", &ctx(None)));
        assert!(head.starts_with("HTTP/1.1 405"));
        let (page, _) = whole(ask("GET / HTTP/1.1\r\n\r\n", &ctx(None)));
        assert!(page.contains("text/html") && page.contains("<html"));
    }

    #[test]
    fn whole_replies_keep_the_connection_as_the_context_says_and_a_stream_never_does() {
        let f = frame();
        let mut c = ctx(Some(&f));
        c.connection = Connection::KeepAlive;
        for request in [
            "GET /snapshot.jpg HTTP/1.1\r\n\r\n",
            "HEAD /snapshot.jpg HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /favicon.ico HTTP/1.1\r\n\r\n",
            "HEAD /video.mjpg HTTP/1.1\r\n\r\n",
            "OPTIONS /stats HTTP/1.1\r\n\r\n",
            "GET /nothing HTTP/1.1\r\n\r\n",
        ] {
            match ask(request, &c) {
                Reply::Whole { head, connection, .. } => {
                    assert_eq!(connection, Connection::KeepAlive, "{request}");
                    let head = String::from_utf8_lossy(&head).into_owned();
                    assert!(head.contains("\r\nConnection: keep-alive\r\n"), "{head}");
                }
                other => panic!("{request}: {other:?}"),
            }
        }
        assert!(matches!(
            ask("GET /metrics HTTP/1.1\r\n\r\n", &c),
            Reply::Figures { connection: Connection::KeepAlive, .. }
        ));
        c.starting = true;
        assert!(matches!(
            ask("GET /snapshot HTTP/1.1\r\n\r\n", &c),
            Reply::Await { connection: Connection::KeepAlive, .. }
        ));
        match ask("GET /video.mjpg HTTP/1.1\r\n\r\n", &c) {
            Reply::Stream { head, .. } => {
                assert!(String::from_utf8(head).unwrap().contains("\r\nConnection: close\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_guard_every_route_and_the_scheme_is_case_blind() {
        let mut c = ctx(None);
        c.credentials = Some("eDp5");
        for path in ["/", "/video.mjpg", "/snapshot.jpg", "/stats", "/favicon.ico"] {
            let (head, _) = whole(ask(&format!("GET {path} HTTP/1.1\r\n\r\n"), &c));
            assert!(head.starts_with("HTTP/1.1 401"), "{path}");
            assert!(head.contains("WWW-Authenticate: Basic"));
        }
        let wrong = "GET /stats HTTP/1.1\r\nAuthorization: Basic eDp6\r\n\r\n";
        assert!(whole(ask(wrong, &c)).0.starts_with("HTTP/1.1 401"));
        let other_scheme = "GET /stats HTTP/1.1\r\nAuthorization: Bearer eDp5\r\n\r\n";
        assert!(whole(ask(other_scheme, &c)).0.starts_with("HTTP/1.1 401"));
        for scheme in ["Basic", "basic", "BASIC"] {
            let right = format!("GET /stats HTTP/1.1\r\nAuthorization: {scheme} eDp5\r\n\r\n");
            assert!(matches!(ask(&right, &c), Reply::Figures { .. }), "{scheme}");
        }
    }

    #[test]
    fn a_preflight_is_answered_without_credentials() {
        let cors = cors_headers(Some("https://a.example"));
        let mut c = ctx(None);
        c.credentials = Some("eDp5");
        c.extra = &cors;
        let preflight = "OPTIONS /stats HTTP/1.1\r\nOrigin: https://a.example\r\n\
                         Access-Control-Request-Headers: authorization\r\n\r\n";
        let (head, _) = whole(ask(preflight, &c));
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(head.contains("Access-Control-Allow-Origin: https://a.example\r\n"));
        assert!(head.contains("Access-Control-Allow-Credentials: true\r\n"));
        assert!(head.contains("Access-Control-Allow-Methods: GET, HEAD\r\n"));
        assert!(head.contains("Access-Control-Allow-Headers: Authorization\r\n"));
    }

    #[test]
    fn the_wildcard_origin_never_comes_with_credentials() {
        assert_eq!(cors_headers(Some("*")), "Access-Control-Allow-Origin: *\r\n");
        assert!(cors_headers(Some("http://x")).contains("Allow-Credentials: true"));
        assert_eq!(cors_headers(None), "");
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
