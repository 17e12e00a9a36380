/*!
`http://HOST[:PORT][/path][?query]` URLs: IPv4, `[IPv6]` or a host name.
*/

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// The host to resolve, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `HOST[:PORT]` as written, for the `Host` header.
    pub authority: String,
    /// Path and query, for the request line.
    pub target: String,
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
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
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
        Ok(Url { host: host.to_owned(), port, authority: authority.to_owned(), target })
    }

    /// The addresses to try, in the resolver's order.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }

    /// The request every reading and stalled client sends.
    pub fn request(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mjpeg-probe\r\n\r\n",
            self.target, self.authority
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, authority: &str, target: &str) -> Url {
        Url { host: host.into(), port, authority: authority.into(), target: target.into() }
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
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_and_resolution() {
        let u = Url::parse("http://127.0.0.1:9/v").unwrap();
        assert_eq!(
            u.request(),
            b"GET /v HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUser-Agent: mjpeg-probe\r\n\r\n"
        );
        assert_eq!(u.resolve().unwrap(), vec!["127.0.0.1:9".parse().unwrap()]);
        assert!(!Url::parse("http://localhost:9/").unwrap().resolve().unwrap().is_empty());
    }
}
