//! HTTP on the wire: routes, errors, limits, access control.

mod common;

use common::{frames, json_number, produce, Server, Viewer, STEP};
use std::io::{BufRead, BufReader, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn errors_have_their_status_and_headers() {
    let server = Server::start(&[]);
    let (status, _, body) = server.get_path("/nothing-here");
    assert_eq!((status, &body[..]), (404, &b"404 Not Found\n"[..]));
    let (status, head, _) = server.get("POST /video.mjpg HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("\r\nAllow: GET, HEAD, OPTIONS\r\n"), "{head}");
    assert_eq!(server.get("GET / HTTP/1.1\r\nBad header\r\n\r\n").0, 400);
    let mut huge = String::from("GET /video.mjpg HTTP/1.1\r\n");
    while huge.len() < 9000 {
        huge.push_str("X-Padding: 0123456789abcdef0123456789abcdef\r\n");
    }
    assert_eq!(server.get(&huge).0, 431);
    let long = format!("GET /video.mjpg?{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
    let (status, _, body) = server.get(&long);
    assert_eq!((status, &body[..]), (414, &b"414 URI Too Long\n"[..]));
}

#[test]
fn an_absolute_form_target_is_served_like_its_path() {
    let mut server = Server::start(&[]);
    let sent = frames(1);
    produce(&mut server, &sent, Duration::ZERO);
    let port = server.port;
    common::wait_until("the frame is the snapshot", || {
        let (status, _, body) = server.get(&format!(
            "GET http://127.0.0.1:{port}/snapshot.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        ));
        status == 200 && body == sent[0]
    });
    let (status, head, _) =
        server.get("HEAD HTTP://camera.example/video.mjpg?fps=0.5 HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("\r\nContent-Type: multipart/x-mixed-replace; boundary="), "{head}");
    assert_eq!(server.get("GET http://camera.example/nothing HTTP/1.1\r\n\r\n").0, 404);
}

#[test]
fn binary_garbage_gets_400_and_the_server_goes_on() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xFF, 0x00, 0x80, 0x0A, 0x0D, 0x0A]).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    assert_eq!(server.get_path("/").0, 200);
}

#[test]
fn a_request_in_one_byte_writes_still_works() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.set_nodelay(true).unwrap();
    for b in b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n" {
        s.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let (status, head, body) = common::read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("\r\nContent-Type: application/json\r\n"));
    assert!(body.starts_with(b"{\"uptime_s\":"));
}

/// The head of a whole response from this server, byte for byte.
fn head(status: &str, connection: &str, content_type: &str, length: usize) -> String {
    format!(
        "HTTP/1.1 {status}\r\nServer: raspivid_mjpeg_server\r\nConnection: {connection}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {length}\r\n\
         Cache-Control: no-cache, no-store, must-revalidate\r\nPragma: no-cache\r\n\r\n"
    )
}

/// A server whose snapshot is `frames(1)[0]`, and that frame.
fn snapshot_server(args: &[&str]) -> (Server, Vec<u8>) {
    let mut server = Server::start(args);
    let sent = frames(1);
    produce(&mut server, &sent, Duration::ZERO);
    common::wait_until("the frame is the snapshot", || {
        server.get_path("/snapshot.jpg").2 == sent[0]
    });
    (server, sent.into_iter().next().unwrap())
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (server, jpeg) = snapshot_server(&[]);
    let mut s = server.connect();
    s.write_all(
        b"GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /?action=snapshot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let mut expected = head("200 OK", "keep-alive", "image/jpeg", jpeg.len()).into_bytes();
    expected.extend_from_slice(&jpeg);
    expected.extend(head("404 Not Found", "keep-alive", "text/plain", 14).bytes());
    expected.extend_from_slice(b"404 Not Found\n");
    expected.extend(head("200 OK", "close", "image/jpeg", jpeg.len()).bytes());
    expected.extend_from_slice(&jpeg);
    assert!(raw == expected, "{}", String::from_utf8_lossy(&raw[..raw.len().min(2000)]));
}

#[test]
fn pipelined_requests_beyond_what_the_server_buffers_are_all_answered_in_order() {
    const FAVICON: &[u8] = include_bytes!("../src/favicon.ico");
    let (server, jpeg) = snapshot_server(&[]);
    // 91 requests of 128 bytes: the first 64 fill the 8 KiB the server holds
    // exactly, and the rest wait in its socket, where no event announces them.
    let requests = ["GET /snapshot.jpg", "GET /favicon.ico", "HEAD /snapshot", "GET /nothing"];
    let mut all = Vec::new();
    for n in 0..=90 {
        let (target, connection) =
            if n == 90 { ("GET /nothing", "close") } else { (requests[n % 4], "keep-alive") };
        let request = format!("{target} HTTP/1.1\r\nConnection: {connection}\r\nX-Pad: ");
        let pad = "p".repeat(128 - request.len() - 4);
        all.extend(format!("{request}{pad}\r\n\r\n").bytes());
    }
    assert_eq!(all.len(), 91 * 128);
    let mut s = server.connect();
    let reader = s.try_clone().unwrap();
    // Written on a thread: the answers must be read meanwhile.
    let writer = thread::spawn(move || s.write_all(&all).unwrap());
    let mut raw = Vec::new();
    BufReader::new(reader).read_to_end(&mut raw).unwrap();
    writer.join().unwrap();
    let mut expected = Vec::new();
    for n in 0..=90 {
        // The last is a 404 that says close.
        let (connection, kind) = if n == 90 { ("close", 3) } else { ("keep-alive", n % 4) };
        match kind {
            0 => {
                expected.extend(head("200 OK", connection, "image/jpeg", jpeg.len()).bytes());
                expected.extend_from_slice(&jpeg);
            }
            1 => expected.extend(
                format!(
                    "HTTP/1.1 200 OK\r\nServer: raspivid_mjpeg_server\r\nConnection: {connection}\r\n\
                     Content-Type: image/x-icon\r\nContent-Length: {}\r\n\
                     Cache-Control: public, max-age=86400\r\n\r\n",
                    FAVICON.len()
                )
                .bytes()
                .chain(FAVICON.iter().copied()),
            ),
            2 => expected.extend(head("200 OK", connection, "image/jpeg", jpeg.len()).bytes()),
            _ => {
                expected.extend(head("404 Not Found", connection, "text/plain", 14).bytes());
                expected.extend_from_slice(b"404 Not Found\n");
            }
        }
    }
    let same = raw.iter().zip(&expected).take_while(|(a, b)| a == b).count();
    assert!(
        raw == expected,
        "{} bytes of {} as expected; then {:?}",
        same,
        expected.len(),
        String::from_utf8_lossy(&raw[same..raw.len().min(same + 300)])
    );
}

#[test]
fn a_request_as_long_as_the_buffer_is_answered_and_then_the_one_behind_it() {
    let server = Server::start(&[]);
    // 8 KiB exactly: the server holds it whole, and the next request stays
    // in its socket, where no event announces it once the first is answered.
    let mut first = b"GET /nothing HTTP/1.1\r\nX-Pad: ".to_vec();
    first.resize(8 * 1024 - 4, b'p');
    first.extend_from_slice(b"\r\n\r\n");
    let second = b"GET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n";
    let mut s = server.connect();
    s.write_all(&[&first[..], second].concat()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let mut expected = head("404 Not Found", "keep-alive", "text/plain", 14).into_bytes();
    expected.extend_from_slice(b"404 Not Found\n");
    expected.extend(head("404 Not Found", "close", "text/plain", 14).bytes());
    expected.extend_from_slice(b"404 Not Found\n");
    assert_eq!(String::from_utf8_lossy(&raw), String::from_utf8_lossy(&expected));
}

#[test]
fn sequential_snapshots_share_one_connection_until_the_cap_says_close() {
    let (server, jpeg) = snapshot_server(&[]);
    let mut reader = BufReader::new(server.connect());
    let mut ask = |request: &str| {
        reader.get_mut().write_all(request.as_bytes()).unwrap();
        common::read_response(&mut reader, false).expect("an answer")
    };
    let (_, _, stats) = ask("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    let accepted = json_number(&String::from_utf8(stats).unwrap(), "clients_total");
    for n in 2..100 {
        let (status, head, body) = ask("GET /?action=snapshot HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200);
        assert!(head.contains("\r\nConnection: keep-alive\r\n"), "request {n}: {head}");
        assert!(body == jpeg, "request {n}");
    }
    let (_, head, stats) = ask("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    // The hundredth request: answered, with close, and the connection ends.
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    let stats = String::from_utf8(stats).unwrap();
    assert_eq!(json_number(&stats, "clients_total"), accepted, "one connection for all");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn an_idle_kept_alive_connection_is_closed_at_its_timeout_without_counting_as_timed_out() {
    // The wait between requests is the shorter of 5 s and --request-timeout.
    let (server, jpeg) = snapshot_server(&["--request-timeout", "1"]);
    let mut reader = BufReader::new(server.connect());
    reader.get_mut().write_all(b"GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, head, body) = common::read_response(&mut reader, false).unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("\r\nConnection: keep-alive\r\n") && body == jpeg, "{head}");
    // The server ends it without a word: end of stream, within STEP.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(json_number(&server.stats(), "clients_timed_out"), 0.0);
}

#[test]
fn http_1_0_closes_unless_it_asks_for_keep_alive_which_is_echoed() {
    let (server, jpeg) = snapshot_server(&[]);
    let mut s = server.connect();
    s.write_all(b"GET /snapshot.jpg HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let mut expected = head("200 OK", "close", "image/jpeg", jpeg.len()).into_bytes();
    expected.extend_from_slice(&jpeg);
    assert!(raw == expected, "{}", String::from_utf8_lossy(&raw[..raw.len().min(400)]));

    let mut reader = BufReader::new(server.connect());
    for _ in 0..2 {
        let request = b"GET /snapshot.jpg HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        reader.get_mut().write_all(request).unwrap();
        let (status, head, body) = common::read_response(&mut reader, false).unwrap();
        assert_eq!(status, 200);
        assert!(head.contains("\r\nConnection: keep-alive\r\n") && body == jpeg, "{head}");
    }
}

#[test]
fn a_malformed_request_is_answered_and_closed_whatever_follows() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.1\r\nBad header\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let mut expected = head("400 Bad Request", "close", "text/plain", 16).into_bytes();
    expected.extend_from_slice(b"400 Bad Request\n");
    assert_eq!(String::from_utf8_lossy(&raw), String::from_utf8_lossy(&expected));
}

#[test]
fn a_kept_alive_connection_counts_toward_max_clients_but_is_no_viewer() {
    let (server, _) = snapshot_server(&["--max-clients", "2"]);
    // The connections that waited for the snapshot are gone.
    common::wait_until("only the stats request is left", || {
        json_number(&server.stats(), "clients") == 1.0
    });
    let mut reader = BufReader::new(server.connect());
    let mut ask = |request: &str| {
        reader.get_mut().write_all(request.as_bytes()).unwrap();
        common::read_response(&mut reader, false).expect("an answer")
    };
    assert_eq!(ask("GET /snapshot.jpg HTTP/1.1\r\n\r\n").0, 200);
    let _viewer = Viewer::open(&server, "/video.mjpg");
    // The kept connection and the viewer: a third is one too many.
    let mut third = server.connect();
    let mut raw = Vec::new();
    third.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
    let (_, _, stats) = ask("GET /stats HTTP/1.1\r\n\r\n");
    let stats = String::from_utf8(stats).unwrap();
    assert_eq!(json_number(&stats, "clients"), 2.0, "{stats}");
    assert_eq!(json_number(&stats, "streaming"), 1.0, "{stats}");
}

#[test]
fn head_of_the_stream_and_the_page() {
    let server = Server::start(&[]);
    let (status, head, body) = server.get("HEAD /video.mjpg HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("multipart/x-mixed-replace; boundary="));
    assert!(body.is_empty());
    let (status, head, body) = server.get_path("/?_=123");
    assert_eq!(status, 200);
    assert!(head.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("src=\"video.mjpg\""));
    assert!(page.contains("href=\"snapshot.jpg\""));
}

#[test]
fn a_silent_client_is_closed_at_the_request_timeout() {
    let server = Server::start(&["--request-timeout", "1"]);
    let mut silent = server.connect();
    silent.write_all(b"GET /vid").unwrap();
    let start = Instant::now();
    let mut buf = [0; 16];
    // The server closes without a word: read returns 0.
    assert_eq!(silent.read(&mut buf).unwrap(), 0);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < STEP, "closed after {waited:?}");
    assert_eq!(json_number(&server.stats(), "clients_timed_out"), 1.0);
}

#[test]
fn one_client_more_than_max_clients_gets_503() {
    let server = Server::start(&["--max-clients", "2"]);
    let _a = Viewer::open(&server, "/video.mjpg");
    let _b = Viewer::open(&server, "/video.mjpg");
    let mut c = server.connect();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn basic_auth_guards_every_endpoint() {
    let server = Server::start(&["--auth", "pilot:rc-car"]);
    for path in ["/", "/video.mjpg", "/snapshot.jpg", "/stats"] {
        let (status, head, _) = server.get_path(path);
        assert_eq!(status, 401, "{path}");
        assert!(head.contains("\r\nWWW-Authenticate: Basic realm=\"camera\""), "{head}");
    }
    let wrong = server.get("GET /stats HTTP/1.1\r\nAuthorization: Basic cGlsb3Q6cmMtY2Fy_\r\n\r\n");
    assert_eq!(wrong.0, 401);
    // base64("pilot:rc-car")
    let right = server.get("GET /stats HTTP/1.1\r\nAuthorization: Basic cGlsb3Q6cmMtY2Fy\r\n\r\n");
    assert_eq!(right.0, 200);
}

#[test]
fn cors_headers_only_when_asked_for() {
    let plain = Server::start(&[]);
    assert!(!plain.get_path("/stats").1.contains("Access-Control"));
    let cors = Server::start(&["--allow-origin", "https://dash.example"]);
    let head = cors.get_path("/stats").1;
    assert!(head.contains("\r\nAccess-Control-Allow-Origin: https://dash.example\r\n"), "{head}");
}

#[test]
fn answered_clients_that_have_not_closed_do_not_count_toward_max_clients() {
    let server = Server::start(&["--max-clients", "2"]);
    // Each of these has its whole reply but keeps its end open.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let mut s = server.connect();
            s.write_all(b"GET /stats HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&raw));
            s
        })
        .collect();
    assert_eq!(server.get_path("/stats").0, 200);
    drop(held);
}

#[test]
fn the_wildcard_origin_has_no_credentials_and_preflights_are_answered() {
    let any = Server::start(&["--allow-origin", "*", "--auth", "pilot:rc-car"]);
    let head = any.get_path("/favicon.ico").1;
    assert!(head.contains("\r\nAccess-Control-Allow-Origin: *\r\n"), "{head}");
    assert!(!head.contains("Allow-Credentials"), "browsers refuse credentials with *: {head}");
    let named =
        Server::start(&["--allow-origin", "https://dash.example", "--auth", "pilot:rc-car"]);
    let (status, head, _) = named.get(
        "OPTIONS /stats HTTP/1.1\r\nOrigin: https://dash.example\r\n\
         Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n",
    );
    assert_eq!(status, 204, "{head}");
    for line in [
        "Access-Control-Allow-Origin: https://dash.example",
        "Access-Control-Allow-Credentials: true",
        "Access-Control-Allow-Methods: GET, HEAD",
        "Access-Control-Allow-Headers: Authorization",
    ] {
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{line} missing: {head}");
    }
    // The scheme's name is case-blind (RFC 9110), the credentials are not.
    let lower = named.get("GET /stats HTTP/1.1\r\nAuthorization: basic cGlsb3Q6cmMtY2Fy\r\n\r\n");
    assert_eq!(lower.0, 200);
}

#[test]
#[ignore = "needs strace: run with --include-ignored, as .ci/run does"]
fn a_request_does_not_walk_the_viewers_unless_it_asks_for_stats() {
    common::require("strace");
    let mut server = Server::start(&["--max-clients", "2000"]);
    produce(&mut server, &frames(1), Duration::ZERO);
    // Viewers, each idle with its frame sent.
    let viewers: Vec<_> = (0..300).map(|_| Viewer::open(&server, "/video.mjpg")).collect();
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=ioctl", "-p", &server.child.id().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // strace says when it has attached, on its first line.
    let mut err = std::io::BufReader::new(strace.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("attached"), "{line}");
    for _ in 0..50 {
        assert_eq!(server.get_path("/favicon.ico").0, 200);
    }
    // SAFETY: SIGINT to the strace this test started: it detaches.
    unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGINT) };
    let mut traced = String::new();
    std::io::Read::read_to_string(&mut err, &mut traced).unwrap();
    strace.wait().unwrap();
    let ioctls = traced.lines().filter(|l| l.contains("ioctl(")).count();
    // Once 256 a request (a queue look per listed viewer), 12,800 here.
    assert!(ioctls < 50, "{ioctls} ioctls for 50 favicon requests with 300 viewers");
    drop(viewers);
}

#[test]
fn with_allow_origin_every_part_carries_it_too() {
    // WebKit checks each part of a cross-origin multipart image.
    let mut server = Server::start(&["--allow-origin", "*"]);
    let mut s = server.connect();
    s.write_all(
        b"GET /video.mjpg HTTP/1.1\r\nUser-Agent: Mozilla/5.0 AppleWebKit\r\n\
          Accept: image/webp,image/*;q=0.8,*/*;q=0.5\r\n\r\n",
    )
    .unwrap();
    produce(&mut server, &frames(2), Duration::ZERO);
    let mut got = Vec::new();
    let mut buf = [0; 65536];
    // The head, both frames and the advance headers after the second.
    while got.windows(30).filter(|w| w == b"Access-Control-Allow-Origin: *").count() < 4 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_browser_script_gets_content_length_and_a_browser_image_advance_headers() {
    let mut server = Server::start(&[]);
    let sent = frames(1);
    produce(&mut server, &sent, Duration::ZERO);
    common::wait_until("the frame is the snapshot", || {
        server.get_path("/snapshot.jpg").2 == sent[0]
    });
    // The first part's header block, as a browser asking with `accept` reads it.
    let first_part = |accept: &str| {
        let mut s = server.connect();
        write!(
            s,
            "GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\n\
             User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156\r\nAccept: {accept}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut lines: Vec<String> = Vec::new();
        // The response head, the delimiter, the part's headers.
        while lines.iter().filter(|l| *l == "\r\n").count() < 2 {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "cut short: {lines:?}");
            lines.push(line);
        }
        let blank = lines.iter().position(|l| l == "\r\n").unwrap();
        assert!(lines[blank + 1].starts_with("--"), "{lines:?}");
        lines[blank + 2..].concat()
    };
    // Mainsail's MJPEG-Streamer mode: fetch() in a worker.
    let fetch = first_part("*/*");
    assert!(fetch.contains(&format!("Content-Length: {}\r\n", sent[0].len())), "{fetch}");
    let img = first_part("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8");
    assert!(img.starts_with("Content-Type: image/jpeg\r\n"), "{img}");
    assert!(!img.contains("Content-Length"), "{img}");
}

#[test]
fn an_on_demand_snapshot_asked_for_then_half_closed_starts_the_camera_and_is_answered() {
    // A camera that writes one JPEG ten times a second.
    let jpeg = frames(1).remove(0);
    let dir = std::env::temp_dir().join(format!("rms-half-close-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("frame.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    let camera = format!("while :; do cat '{}'; sleep 0.1; done", path.display());
    let server = Server::start(&["--on-demand", "--exec", &camera]);
    let mut s = server.connect();
    // As `nc -N` sends it: the request, then shutdown(SHUT_WR). The server
    // used to close at that end, and the camera never started.
    s.write_all(b"GET /snapshot.jpg HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert!(!raw.is_empty(), "no answer");
    let (status, head, body) = common::split_response(&raw);
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("X-Source-State"), "the placeholder, not the camera's frame: {head}");
    assert!(body == jpeg, "not the camera's frame");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
