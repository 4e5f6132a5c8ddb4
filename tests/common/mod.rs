//! What the tests of the `ws-relay` binary share: a relay process on a free
//! port, tungstenite clients, raw sockets with a strict parser of what comes
//! back, and plain HTTP. Every relay started here inherits the environment,
//! so `WS_RELAY_THREADS=4 cargo test` runs each test against four shards.

#![allow(dead_code)] // Each test file uses its own share of these.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tungstenite::{Message, WebSocket};
use ws_relay::client::{masked_frame, upgrade_request, OpCode, Received, ServerParser};

/// A relay process on a free port, killed when dropped.
pub struct Relay {
    pub child: Child,
    pub addr: SocketAddr,
    /// The separate metrics address, with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
}

impl Relay {
    pub fn start(flags: &[&str]) -> Self {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_ws-relay")), flags)
    }

    /// The relay with at most `fds` open file descriptors.
    pub fn start_with_fd_limit(fds: u32, flags: &[&str]) -> Self {
        let mut shell = Command::new("sh");
        shell.args(["-c", &format!("ulimit -n {fds} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_ws-relay")]);
        Self::spawn(shell, flags)
    }

    pub fn spawn(mut command: Command, flags: &[&str]) -> Self {
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the relay starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").expect("first line names the address").parse().unwrap();
        let metrics = flags.iter().any(|f| matches!(*f, "--metrics-listen" | "--admin-listen")).then(|| {
            line.clear();
            stdout.read_line(&mut line).unwrap();
            line.trim().strip_prefix("metrics on ").expect("second line names the metrics address").parse().unwrap()
        });
        Self { child, addr, metrics }
    }

    /// `GET /metrics`, from the metrics port if it has one.
    pub fn scrape(&self) -> String {
        http_to(self.metrics.unwrap_or(self.addr), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    pub fn ws(&self, path: &str) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let url = format!("ws://{}{path}", self.addr);
        tungstenite::client::client(url, stream).expect("upgrade").0
    }

    /// A raw socket that has completed the upgrade to `path`.
    pub fn raw(&self, path: &str) -> Raw {
        let mut raw = Raw::connect(self.addr);
        raw.write(&upgrade_request(path, "test"));
        assert_eq!(raw.next(), Received::Http(101));
        raw
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client socket speaking bytes, with a strict parser of what comes back.
pub struct Raw {
    pub stream: TcpStream,
    pub parser: ServerParser,
    pub queue: Vec<Received>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self { stream, parser: ServerParser::default(), queue: Vec::new() }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut f = Vec::new();
        masked_frame(&mut f, true, opcode, payload, [0xDE, 0xAD, 0xBE, 0xEF]);
        self.write(&f);
    }

    pub fn next(&mut self) -> Received {
        let mut buf = [0; 4096];
        while self.queue.is_empty() {
            let n = self.stream.read(&mut buf).expect("data before the timeout");
            assert!(n > 0, "connection closed while waiting");
            self.parser.feed(&buf[..n], &mut self.queue).expect("valid server output");
        }
        self.queue.remove(0)
    }

    /// True once the server has closed the TCP connection.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.parser.feed(&buf[..n], &mut self.queue).expect("valid server output"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// The next text message, skipping pings and pongs, over TCP or TLS.
pub fn text<S: Read + Write>(ws: &mut WebSocket<S>) -> String {
    loop {
        match ws.read().expect("a message before the timeout") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

pub fn texts(ws: &mut WebSocket<TcpStream>, n: usize) -> Vec<String> {
    (0..n).map(|_| text(ws)).collect()
}

pub fn send<S: Read + Write>(ws: &mut WebSocket<S>, s: &str) {
    ws.send(Message::text(s)).unwrap();
}

/// Reads until the relay's close frame and returns its code and reason.
pub fn close_of(ws: &mut WebSocket<TcpStream>) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

/// Nothing arrives within a short wait.
pub fn silent(ws: &mut WebSocket<TcpStream>) -> bool {
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    let quiet = matches!(ws.read(), Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut);
    ws.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    quiet
}

pub const ROOM: &str = "/ws-relay/spacewar";

/// Sends `request` on a fresh socket and returns the whole answer; the relay
/// must close the connection after it.
pub fn http(relay: &Relay, request: &[u8]) -> String {
    http_to(relay.addr, request)
}

pub fn http_to(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the relay closes after answering");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of the sample named exactly `name` (labels included) in a scrape.
pub fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{exposition}"))
}
