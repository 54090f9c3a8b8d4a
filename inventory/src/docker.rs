//! The Docker Engine API over its unix socket, read only: the running
//! containers (id, name, image, labels, addresses, MACs, netns) and the event
//! stream.
//!
//! A small blocking HTTP/1.1 client on `std::os::unix::net::UnixStream` and
//! `serde_json`, rather than `bollard` (tokio, hyper, ~100 crates) or a
//! general HTTP client: the inventory thread makes two kinds of GET request
//! to one local socket, and a runtime would only add threads and build time.
//! It understands `Content-Length`, `Transfer-Encoding: chunked` and bodies
//! ended by the connection closing.
//!
//! Privileges: read access to the socket (`-v /var/run/docker.sock:/var/run/docker.sock:ro`;
//! `ro` only stops the file being replaced: the API itself has no read-only
//! mode, so the station only ever sends GET requests).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Default Engine API socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The socket named by `DOCKER_HOST` (`unix:///path`) or the default.
pub fn socket_path() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// One running container as the Engine API describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerContainer {
    /// Full id (64 hex digits).
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// Addresses on its networks.
    pub ips: Vec<IpAddr>,
    /// MACs on its networks.
    pub macs: Vec<[u8; 6]>,
    /// Its network namespace file (`NetworkSettings.SandboxKey`), when set.
    pub sandbox_key: Option<PathBuf>,
    /// Its init process (`State.Pid`), 0 when unknown.
    pub pid: u32,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn connect(sock: &Path, timeout: Option<Duration>) -> io::Result<UnixStream> {
    let s = UnixStream::connect(sock)?;
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn send_get(stream: &mut UnixStream, path: &str) -> io::Result<()> {
    // One write: `write!` on the raw socket would issue one write(2) per piece.
    let request = format!("GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: cj-station\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    stream.flush()
}

/// Reads the status line and headers: (status, chunked, content length).
fn read_head(r: &mut impl BufRead) -> io::Result<(u16, bool, Option<usize>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP reply: {line:?}")))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    Ok((status, chunked, length))
}

/// Reads one chunk of a chunked body; `None` at the last chunk.
fn read_chunk(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
    if size == 0 {
        return Ok(None);
    }
    let mut data = vec![0u8; size];
    r.read_exact(&mut data)?;
    line.clear();
    r.read_line(&mut line)?;
    Ok(Some(data))
}

/// `GET path`; the status and the whole body.
///
/// # Errors
/// No socket, or a broken reply.
pub fn get(sock: &Path, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = connect(sock, Some(Duration::from_secs(10)))?;
    send_get(&mut stream, path)?;
    let mut r = BufReader::new(stream);
    let (status, chunked, length) = read_head(&mut r)?;
    let mut body = Vec::new();
    if chunked {
        while let Some(c) = read_chunk(&mut r)? {
            body.extend_from_slice(&c);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

fn get_json(sock: &Path, path: &str) -> io::Result<Value> {
    let (status, body) = get(sock, path)?;
    if status != 200 {
        return Err(io::Error::other(format!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim())));
    }
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("GET {path}: {e}")))
}

/// The running containers with their networks, netns file and pid.
///
/// # Errors
/// The daemon cannot be reached or answers nonsense.
pub fn containers(sock: &Path) -> io::Result<Vec<DockerContainer>> {
    let list = get_json(sock, "/containers/json")?;
    let mut out = Vec::new();
    for c in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(id) = c["Id"].as_str() else { continue };
        // Inspect for the pid and the netns file; a container that stopped in between is skipped.
        let Ok(full) = get_json(sock, &format!("/containers/{id}/json")) else { continue };
        out.push(from_inspect(&full));
    }
    Ok(out)
}

/// A container from its `/containers/{id}/json` document.
pub fn from_inspect(v: &Value) -> DockerContainer {
    let mut c = DockerContainer {
        id: v["Id"].as_str().unwrap_or_default().to_owned(),
        name: v["Name"].as_str().unwrap_or_default().trim_start_matches('/').to_owned(),
        image: v["Config"]["Image"].as_str().unwrap_or_default().to_owned(),
        pid: v["State"]["Pid"].as_u64().unwrap_or(0) as u32,
        ..Default::default()
    };
    if let Some(labels) = v["Config"]["Labels"].as_object() {
        c.labels = labels.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect();
        c.labels.sort();
    }
    let ns = &v["NetworkSettings"];
    if let Some(key) = ns["SandboxKey"].as_str().filter(|s| !s.is_empty()) {
        c.sandbox_key = Some(PathBuf::from(key));
    }
    let mut nets: Vec<&Value> = vec![ns];
    if let Some(m) = ns["Networks"].as_object() {
        nets.extend(m.values());
    }
    for n in nets {
        for key in ["IPAddress", "GlobalIPv6Address"] {
            if let Some(ip) = n[key].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                if !c.ips.contains(&ip) {
                    c.ips.push(ip);
                }
            }
        }
        if let Some(mac) = n["MacAddress"].as_str().and_then(parse_mac) {
            if !c.macs.contains(&mac) {
                c.macs.push(mac);
            }
        }
    }
    c
}

/// Follows `/events` for containers and networks, calling `on_event` for
/// each; returns when the stream ends or fails (the caller reconnects).
///
/// # Errors
/// No socket, or a broken reply.
pub fn follow_events(sock: &Path, mut on_event: impl FnMut()) -> io::Result<()> {
    let mut stream = connect(sock, None)?;
    // filters={"type":["container","network"]}
    send_get(&mut stream, "/events?filters=%7B%22type%22%3A%5B%22container%22%2C%22network%22%5D%7D")?;
    let mut r = BufReader::new(stream);
    let (status, chunked, _) = read_head(&mut r)?;
    if status != 200 {
        return Err(io::Error::other(format!("GET /events: HTTP {status}")));
    }
    if chunked {
        while read_chunk(&mut r)?.is_some() {
            on_event();
        }
    } else {
        let mut line = String::new();
        while r.read_line(&mut line)? > 0 {
            on_event();
            line.clear();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_document_gives_networks_and_netns() {
        let doc = r#"{"Id":"0123456789abcdef0123","Name":"/web-1","State":{"Pid":4242},
            "Config":{"Image":"busybox:cj","Labels":{"b":"2","a":"1"}},
            "NetworkSettings":{"SandboxKey":"/var/run/docker/netns/abc","IPAddress":"172.17.0.2",
              "MacAddress":"02:42:ac:11:00:02",
              "Networks":{"bridge":{"IPAddress":"172.17.0.2","GlobalIPv6Address":"","MacAddress":"02:42:ac:11:00:02"},
                          "other":{"IPAddress":"10.9.0.3","MacAddress":"02:42:0a:09:00:03"}}}}"#;
        let c = from_inspect(&serde_json::from_str(doc).unwrap());
        assert_eq!(c.name, "web-1");
        assert_eq!(c.pid, 4242);
        assert_eq!(c.labels, vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(c.sandbox_key.as_deref(), Some(Path::new("/var/run/docker/netns/abc")));
        assert_eq!(c.ips.len(), 2);
        assert_eq!(c.macs, vec![[2, 0x42, 0xac, 0x11, 0, 2], [2, 0x42, 10, 9, 0, 3]]);
    }

    #[test]
    fn http_over_a_unix_socket_chunked_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            for reply in [
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                // Read the whole request head before answering, as a server does:
                // answering after a partial read races the client's remaining writes.
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "client closed before sending a whole request");
                    req.extend_from_slice(&buf[..n]);
                }
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        assert_eq!(get(&path, "/x").unwrap(), (200, b"[1,2]".to_vec()));
        assert_eq!(get(&path, "/y").unwrap(), (404, b"nope!".to_vec()));
        server.join().unwrap();
        assert!(get(&dir.path().join("none.sock"), "/").is_err());
    }
}
