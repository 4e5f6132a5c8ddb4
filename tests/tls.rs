//! Native TLS over real sockets: wss:// beside ws:// on one relay, TLS 1.2
//! and 1.3, what the TLS port says to garbage, to plain HTTP and to a client
//! that stops mid-handshake, the certificate reloaded on SIGHUP for new
//! connections while live ones go on, and a takeover that keeps the TLS port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::WebSocket;

mod common;

use common::{http_to, sample, send, text};

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn metrics(relay: &Relay) -> String {
    http_to(relay.plain, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// A relay serving ws:// on `plain` and wss:// on `tls`, killed when dropped.
struct Relay {
    child: Child,
    plain: SocketAddr,
    tls: SocketAddr,
    log: Option<std::process::ChildStderr>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `localhost` and its key, as PEM files in `dir`.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().clone())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ws-relay-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(cert: &Path, key: &Path, extra: &[&str]) -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ws-relay"))
        .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the relay starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = |prefix: &str| -> SocketAddr {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim().strip_prefix(prefix).unwrap_or_else(|| panic!("{prefix}: {l}")).parse().unwrap()
    };
    let plain = line("listening on ");
    let tls = line("tls on ");
    let log = child.stderr.take();
    Relay { child, plain, tls, log }
}

fn client_config(
    trust: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As browsers offer it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn tls_stream(addr: SocketAddr, config: Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp)
}

fn wss(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> WebSocket<Tls> {
    let url = format!("wss://localhost:{}{path}", addr.port());
    tungstenite::client::client(url, tls_stream(addr, config)).expect("upgrade over TLS").0
}

fn ws(addr: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tungstenite::client::client(format!("ws://{addr}{path}"), tcp).expect("upgrade").0
}

#[test]
fn wss_and_ws_share_rooms_over_tls_1_3_and_1_2() {
    let dir = scratch("rooms");
    let (cert, key, der) = certificate(&dir, "a");
    let relay = start(&cert, &key, &[]);
    for (versions, room) in
        [(&[&rustls::version::TLS13][..], "/ws-relay/13"), (&[&rustls::version::TLS12][..], "/ws-relay/12")]
    {
        let mut secure = wss(relay.tls, client_config(&der, versions), room);
        assert_eq!(text(&mut secure), "1 self");
        let mut plain = ws(relay.plain, room);
        assert_eq!([text(&mut plain), text(&mut plain)], ["2 self", "1 join"]);
        assert_eq!(text(&mut secure), "2 join");
        send(&mut secure, "* over TLS");
        assert_eq!(text(&mut plain), "1 over TLS");
        // Larger than a TLS record and than rustls's buffer, both ways.
        let big = "x".repeat(60_000);
        send(&mut plain, &format!("* {big}"));
        assert_eq!(text(&mut secure), format!("2 {big}"));
        send(&mut secure, &format!("2 {big}"));
        assert_eq!(text(&mut plain), format!("1 {big}"));
        let alpn = secure.get_ref().conn.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(alpn, Some(b"http/1.1".to_vec()));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_tls_port_answers_garbage_plain_http_and_silence() {
    let dir = scratch("bad");
    let (cert, key, _) = certificate(&dir, "a");
    let relay = start(&cert, &key, &["--handshake-timeout", "500ms"]);
    // Plain HTTP: a plain answer saying what to do.
    let mut s = TcpStream::connect(relay.tls).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /ws-relay/x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("use https:// or wss://"), "{answer}");
    // Garbage that is not a TLS record: an alert, then the end.
    let mut s = TcpStream::connect(relay.tls).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.first() == Some(&0x15) || rest.is_empty(), "an alert record or nothing: {rest:?}");
    // A client that stops halfway through its ClientHello: cut at the handshake timeout.
    let mut s = TcpStream::connect(relay.tls).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(started.elapsed() >= Duration::from_millis(400), "cut before the handshake timeout");
    assert!(started.elapsed() < Duration::from_secs(4), "never cut");
    let m = metrics(&relay);
    assert_eq!(sample(&m, "ws_relay_tls_failures_total{cause=\"plain_http\"}"), 1.0, "{m}");
    assert_eq!(sample(&m, "ws_relay_tls_failures_total{cause=\"handshake\"}"), 1.0, "{m}");
    assert_eq!(sample(&m, "ws_relay_tls_failures_total{cause=\"timeout\"}"), 1.0, "{m}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let dir = scratch("reload");
    let (cert, key, first) = certificate(&dir, "live");
    let mut relay = start(&cert, &key, &[]);
    let mut live = wss(relay.tls, client_config(&first, &[&rustls::version::TLS13]), "/ws-relay/r");
    assert_eq!(text(&mut live), "1 self");
    // A renewal writes the new pair over the old files, as an ACME client does.
    let (next_cert, next_key, second) = certificate(&dir, "next");
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    let hup = |relay: &Relay| Command::new("kill").args(["-HUP", &relay.child.id().to_string()]).status().unwrap();
    hup(&relay);
    std::thread::sleep(Duration::from_millis(300));
    let mut fresh = wss(relay.tls, client_config(&second, &[&rustls::version::TLS13]), "/ws-relay/r");
    assert_eq!([text(&mut fresh), text(&mut fresh)], ["2 self", "1 join"], "a new connection gets the new certificate");
    assert_eq!(text(&mut live), "2 join", "the live one goes on with its session");
    send(&mut live, "* still here");
    assert_eq!(text(&mut fresh), "1 still here");
    // A broken file on the next reload keeps the certificate in place.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup(&relay);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = wss(relay.tls, client_config(&second, &[&rustls::version::TLS13]), "/ws-relay/r");
    assert_eq!(text(&mut again), "3 self", "the certificate that was in place still serves");
    let _ = relay.child.kill();
    let _ = relay.child.wait();
    let mut log = String::new();
    relay.log.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("SIGHUP: TLS certificate reloaded"), "{log}");
    assert!(log.contains("SIGHUP: keeping the current TLS certificate"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_alone_on_the_public_port() {
    let dir = scratch("alone");
    let (cert, key, der) = certificate(&dir, "a");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ws-relay"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    let mut secure = wss(addr, client_config(&der, &[&rustls::version::TLS13]), "/ws-relay/alone");
    assert_eq!(text(&mut secure), "1 self");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// A takeover passes the TLS port on like the others. A TLS session cannot
/// leave its process, so a TLS client's connection ends (a resumable session
/// keeps its seat); plain clients notice nothing.
#[test]
fn a_takeover_keeps_the_tls_port_and_ends_tls_connections() {
    let dir = scratch("takeover");
    let (cert, key, der) = certificate(&dir, "a");
    let pid_file = dir.join("pid");
    let relay = start(&cert, &key, &["--pid-file", pid_file.to_str().unwrap()]);
    let old = relay.child.id();
    let mut plain = ws(relay.plain, "/ws-relay/t");
    assert_eq!(text(&mut plain), "1 self");
    let mut secure = wss(relay.tls, client_config(&der, &[&rustls::version::TLS13]), "/ws-relay/t");
    assert_eq!([text(&mut secure), text(&mut secure)], ["2 self", "1 join"]);
    assert_eq!(text(&mut plain), "2 join");
    let status = Command::new(env!("CARGO_BIN_EXE_ws-relay"))
        .args(["--takeover", &old.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(text(&mut plain), "2 quit", "the TLS client's session could not move");
    assert!(secure.read().is_err(), "its connection ended");
    let mut again = wss(relay.tls, client_config(&der, &[&rustls::version::TLS13]), "/ws-relay/t");
    assert_eq!([text(&mut again), text(&mut again)], ["3 self", "1 join"], "the new process serves TLS");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Messages far larger than what a TLS session buffers (64 KiB) reach a
/// reader that keeps up, in order and whole: when the socket takes all that
/// was encrypted without blocking, the relay goes on with what the core
/// still holds, with no writable edge to come. (Autobahn's 16 MiB cases over
/// wss:// stopped 200 KB short before.)
#[test]
fn messages_larger_than_the_tls_buffers_arrive_whole() {
    let dir = scratch("large");
    let (cert, key, der) = certificate(&dir, "a");
    let relay = start(&cert, &key, &["--max-message", "8388608", "--max-pending", "67108864", "--flood-messages", "0"]);
    let config = client_config(&der, &[&rustls::version::TLS13]);
    let mut a = wss(relay.tls, config.clone(), "/ws-relay/large");
    assert_eq!(text(&mut a), "1 self");
    let mut b = wss(relay.tls, config, "/ws-relay/large");
    assert_eq!([text(&mut b), text(&mut b)], ["2 self", "1 join"]);
    assert_eq!(text(&mut a), "2 join");
    // Sent back to back while the reader waits, so the relay's writes to it
    // block, then drain as it reads.
    let sizes = [300_000usize, 1 << 20, 4 << 20, 4 << 20, 8 << 20];
    let body = |round: usize, size: usize| -> String {
        (0..size - 2).map(|i| char::from(b'a' + ((i + round) % 26) as u8)).collect()
    };
    for (round, &size) in sizes.iter().enumerate() {
        send(&mut a, &format!("* {}", body(round, size)));
    }
    std::thread::sleep(Duration::from_millis(300));
    for (round, &size) in sizes.iter().enumerate() {
        let got = text(&mut b);
        assert_eq!(got.len(), size, "message {round}: {size} bytes arrived as {}", got.len());
        assert!(got == format!("1 {}", body(round, size)), "message {round} arrived changed");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Connections still in their TLS handshake count against
/// `--max-handshakes` like plain ones still sending their request: a crowd
/// of half-sent ClientHellos cannot keep a player out, and older ones are
/// closed as newer ones arrive.
#[test]
fn tls_handshakes_count_against_max_handshakes() {
    let dir = scratch("crowd");
    let (cert, key, der) = certificate(&dir, "a");
    let relay = start(&cert, &key, &["--max-handshakes", "4", "--handshake-timeout", "60s"]);
    let mut crowd: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut s = TcpStream::connect(relay.tls).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // A record header promising 512 bytes of ClientHello, and one of them.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            s
        })
        .collect();
    let mut player = wss(relay.tls, client_config(&der, &[&rustls::version::TLS13]), "/ws-relay/crowd");
    assert_eq!(text(&mut player), "1 self", "a player gets in past the crowd");
    // All but the cap's worth were closed, well before the 60 s handshake
    // timeout: with one shard the oldest, with several each shard's oldest.
    let mut closed = 0;
    for s in &mut crowd {
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut rest = Vec::new();
        closed += usize::from(s.read_to_end(&mut rest).is_ok());
    }
    assert!(closed >= 12 - 4, "only {closed} of 12 closed past a cap of 4");
    let m = metrics(&relay);
    assert!(sample(&m, "ws_relay_pending_handshakes") <= 4.0, "{m}");
    assert!(sample(&m, "ws_relay_handshakes_rejected_total{status=\"503\"}") >= 8.0, "{m}");
    let _ = std::fs::remove_dir_all(dir);
}
