//! Fuzzes HTTP request parsing and the response heads built from its result.
//!
//! The input is what a client sends. The server parses everything it has
//! received after each read, at most `MAX_REQUEST_BYTES`, and acts on the
//! first verdict that is not `Partial`. So:
//!
//! - `parse` must not panic on any input or any prefix of it;
//! - once a prefix shorter than the cap gets a verdict, every longer input
//!   must get the same one, or the answer would depend on how TCP happened
//!   to cut the request (prefixes at or past the cap get `431` by design);
//! - every error status must make a well-formed response: a status line
//!   `HTTP/1.1 NNN Reason`, a header block that `httparse` reads back, and a
//!   body as long as its `Content-Length`;
//! - for a request, the stream head (both framings), the HEAD stream head,
//!   a response head and the 401 reply must read back the same way;
//! - every whole response says `Connection: close` or `keep-alive` as asked,
//!   once; a stream head always says `close`;
//! - where a whole request ends (`parse_message`) is within the input, and
//!   the request cut there gets the same verdict and end: what follows it,
//!   the next pipelined request, never changes how it is answered.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raspivid_mjpeg_server::http::{
    self, Connection, Framing, Parsed, Status, StreamType, BOUNDARY, MAX_REQUEST_BYTES,
};

/// Every prefix up to this length; past it, a sample of prefixes.
const ALL_PREFIXES_MAX: usize = 1024;

const STATUSES: [Status; 8] = [
    Status::BadRequest,
    Status::BadQuery("fps"),
    Status::Unauthorized,
    Status::NotFound,
    Status::MethodNotAllowed,
    Status::UriTooLong,
    Status::HeadersTooLarge,
    Status::Unavailable,
];

/// Checks `HTTP/1.1 NNN Reason\r\n` and returns the code.
fn status_line(bytes: &[u8]) -> u16 {
    let end = bytes.windows(2).position(|w| w == b"\r\n").expect("no CRLF after the status line");
    let line = std::str::from_utf8(&bytes[..end]).expect("status line is not UTF-8");
    let rest = line.strip_prefix("HTTP/1.1 ").unwrap_or_else(|| panic!("bad status line {line:?}"));
    let (code, reason) = rest.split_at(3);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "bad status code in {line:?}");
    let reason = reason.strip_prefix(' ').unwrap_or_else(|| panic!("no reason in {line:?}"));
    assert!(!reason.is_empty(), "empty reason in {line:?}");
    assert!(reason.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "bad reason in {line:?}");
    code.parse().unwrap()
}

/// What a head's `Connection` header says for `connection`.
fn said(connection: Connection) -> &'static [u8] {
    match connection {
        Connection::Close => b"close",
        Connection::KeepAlive => b"keep-alive",
    }
}

/// Parses a response head that should say `connection`; returns (code,
/// head length, Content-Length).
fn response(bytes: &[u8], connection: Connection) -> (u16, usize, Option<usize>) {
    let code = status_line(bytes);
    assert!(bytes.windows(4).any(|w| w == b"\r\n\r\n"), "no blank line after the headers");
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => {
            panic!("response head does not parse: {other:?}\n{}", String::from_utf8_lossy(bytes))
        }
    };
    assert_eq!(res.version, Some(1));
    assert_eq!(res.code, Some(code));
    let header = |name: &str| {
        res.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    };
    assert!(header("content-type").is_some(), "no Content-Type");
    assert_eq!(header("connection"), Some(said(connection)));
    let count = res.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).count();
    assert_eq!(count, 1, "Connection said {count} times");
    let length = header("content-length").map(|v| {
        std::str::from_utf8(v)
            .expect("Content-Length is not UTF-8")
            .parse()
            .expect("bad Content-Length")
    });
    (code, len, length)
}

fn check_error(status: Status, head_only: bool, connection: Connection) {
    let bytes = http::error_response(status, "", head_only, connection);
    let (code, len, length) = response(&bytes, connection);
    assert_eq!(status.line().split(' ').next(), Some(&*code.to_string()));
    assert!(code >= 400);
    let body = &bytes[len..];
    let length = length.expect("error response without Content-Length");
    if head_only {
        assert!(body.is_empty(), "HEAD error response carries a body");
    } else {
        assert_eq!(body.len(), length, "body length differs from Content-Length");
    }
}

fn check_request(framing: Framing, unix_micros: u64, head_only: bool) {
    let types = [StreamType::Multipart, StreamType::OctetStream];
    for (framing, stream_type) in [framing, Framing::Length, Framing::AdvanceHeaders]
        .into_iter()
        .flat_map(|framing| types.map(|stream_type| (framing, stream_type)))
    {
        let bytes = http::stream_head("", framing, stream_type, unix_micros);
        let (code, len, length) = response(&bytes, Connection::Close);
        assert_eq!((code, length), (200, None));
        let body = &bytes[len..];
        let delimiter = format!("--{BOUNDARY}\r\n");
        assert!(
            body.starts_with(delimiter.as_bytes()),
            "stream body does not open with the delimiter"
        );
        let part = &body[delimiter.len()..];
        match framing {
            Framing::Length => assert!(part.is_empty()),
            Framing::AdvanceHeaders => {
                let mut headers = [httparse::EMPTY_HEADER; 8];
                match httparse::parse_headers(part, &mut headers) {
                    Ok(httparse::Status::Complete((n, _))) => assert_eq!(n, part.len()),
                    other => panic!("part headers do not parse: {other:?}"),
                }
            }
        }
    }
    for connection in [Connection::Close, Connection::KeepAlive] {
        let head = http::stream_head_only("", StreamType::Multipart, connection);
        let (code, len, length) = response(&head, connection);
        assert_eq!((code, length), (200, None));
        assert_eq!(len, head.len());
        let head = http::response_head("200 OK", "image/jpeg", 1234, "", connection);
        let (code, len, length) = response(&head, connection);
        assert_eq!((code, length), (200, Some(1234)));
        assert_eq!(len, head.len());
        check_error(Status::Unauthorized, head_only, connection);
        check_error(Status::Unavailable, head_only, connection);
    }
}

fn check_verdict(parsed: &Parsed, unix_micros: u64) {
    match parsed {
        Parsed::Partial => {}
        Parsed::Error(status) => {
            for connection in [Connection::Close, Connection::KeepAlive] {
                check_error(*status, false, connection);
                check_error(*status, true, connection);
            }
        }
        Parsed::Request(request) => {
            check_request(request.framing, unix_micros, request.head_only())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (full, message) = http::parse_message(data);
    assert_eq!(full, http::parse(data));
    let unix_micros = data.iter().fold(0u64, |t, &b| t.rotate_left(8) ^ u64::from(b));
    check_verdict(&full, unix_micros);

    // A whole request's end: within the input, and the request alone is
    // answered the same as with whatever follows it.
    if let Some(message) = message {
        assert!(message.len > 0 && message.len <= data.len(), "{message:?} of {}", data.len());
        assert!(!matches!(full, Parsed::Partial));
        let alone = http::parse_message(&data[..message.len]);
        assert_eq!(alone, (full.clone(), Some(message)), "the request alone is read otherwise");
    }

    // What the server would see: never more than the cap.
    let capped = &data[..data.len().min(MAX_REQUEST_BYTES)];
    let seen = http::parse(capped);
    if data.len() >= MAX_REQUEST_BYTES {
        assert!(!matches!(seen, Parsed::Partial), "partial at the cap");
    }

    // Prefixes: a verdict given early must be the verdict at the end.
    let check_prefix = |cut: usize| {
        let prefix = http::parse(&data[..cut]);
        match &prefix {
            Parsed::Partial => {}
            _ if cut >= MAX_REQUEST_BYTES => {}
            verdict => {
                assert_eq!(
                    verdict,
                    &full,
                    "verdict at {cut} bytes differs from the verdict at {}",
                    data.len()
                );
                assert_eq!(
                    verdict, &seen,
                    "verdict at {cut} bytes differs from the capped verdict"
                );
            }
        }
    };
    if data.len() <= ALL_PREFIXES_MAX {
        (0..data.len()).for_each(check_prefix);
    } else {
        // The ends of lines are where verdicts change; sample a few of them.
        let mut cuts: Vec<usize> = data
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .take(64)
            .collect();
        cuts.extend((0..16).map(|k| data.len() * k / 16));
        cuts.push(MAX_REQUEST_BYTES - 1);
        cuts.retain(|&c| c < data.len());
        cuts.iter().copied().for_each(check_prefix);
    }

    // Every status builds a well-formed response, whatever the input.
    if data.first() == Some(&0) {
        for status in STATUSES {
            for connection in [Connection::Close, Connection::KeepAlive] {
                check_error(status, false, connection);
                check_error(status, true, connection);
            }
        }
    }
});
