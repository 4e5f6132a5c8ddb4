//! `ws-relay`: the relay server. Every flag also reads from an environment variable.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use log::{error, info};
use ws_relay::server::{Server, ServerConfig, StartError, Successor, TlsFiles, TlsListen};
use ws_relay::token::Verifier;
use ws_relay::{Capacity, Config, Deflate, FloodLimits, HandshakeLimits, MessageLimits, Mode, Secret};

/// The defaults every flag starts from: the core's, so they are written once.
const D: Config = Config::DEFAULT;
const FLOOD: FloodLimits = FloodLimits::DEFAULT;

/// A low-latency WebSocket relay for multiplayer browser games.
///
/// Clients connect to ws://HOST/<room>; the request path and query name the
/// room. Each gets `<id> self`, hears `<id> join` and `<id> quit`, and sends
/// `<id|*> <msgtype> [data]`, delivered as `<sender-id> <msgtype> [data]`.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Clients connect to ws://HOST/<room>: the request path and query name the room.\n\
        Plain HTTP: / (demo game), /ws-relay.js, /ws-relay.d.ts, /metrics (Prometheus), /healthz.\n\
        Durations take ms, s or m (250ms, 10s, 2m) or plain seconds. Boolean variables take true or false.\n\
        RUST_LOG sets the log level (default info; debug logs every connection's room, id and close reason).\n\
        Stop with SIGTERM or SIGINT: clients get close 1001, then the relay exits 0."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "WS_RELAY_LISTEN", default_value = "127.0.0.1:7927")]
    listen: SocketAddr,

    /// Serve wss:// (and https://) with this certificate chain, in PEM, leaf first. With --tls-key.
    /// Reloaded from disk on SIGHUP for new connections.
    #[arg(long, env = "WS_RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The certificate's private key, in PEM.
    #[arg(long, env = "WS_RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve TLS on this address, beside the plain --listen. Without it, --listen itself serves TLS.
    #[arg(long, env = "WS_RELAY_TLS_LISTEN", requires = "tls_cert")]
    tls_listen: Option<SocketAddr>,

    /// Shards: threads, each with its own event loop and core, every room whole on one of them.
    /// Default: the number of cores the process may use.
    #[arg(long, env = "WS_RELAY_THREADS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    threads: Option<usize>,

    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the client's
    /// address, as HAProxy sends with send-proxy-v2; connections without one get 400.
    #[arg(long, env = "WS_RELAY_PROXY_PROTOCOL")]
    proxy_protocol: bool,

    /// The operator's port (e.g. 127.0.0.1:9107): /metrics, /healthz and the server API, and no longer /metrics
    /// on the public port. WS_RELAY_METRICS_LISTEN, its older name, is read too.
    #[arg(long, visible_alias = "metrics-listen", env = "WS_RELAY_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,

    /// Turns the server API on: the file holds the key its callers send as `Authorization: Bearer <key>`
    /// (one trailing newline ignored). Needs --admin-listen.
    #[arg(long, env = "WS_RELAY_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,

    /// Largest request body the server API reads, in bytes (larger: 413).
    #[arg(long, env = "WS_RELAY_MAX_API_BODY", default_value_t = D.max_api_body)]
    max_api_body: usize,

    /// Turns token checks on: the file holds the HS256 secret tokens are signed with (one trailing newline
    /// ignored). An upgrade without a valid token for its room is closed with 4401 or 4403.
    #[arg(long, env = "WS_RELAY_TOKEN_SECRET_FILE")]
    token_secret_file: Option<PathBuf>,

    /// A second secret accepted while secrets are rotated.
    #[arg(long, env = "WS_RELAY_TOKEN_PREVIOUS_SECRET_FILE", requires = "token_secret_file")]
    token_previous_secret_file: Option<PathBuf>,

    /// How much clock skew a token's exp and nbf are allowed.
    #[arg(long, env = "WS_RELAY_TOKEN_LEEWAY", default_value_t = Secs(Duration::from_secs(5)))]
    token_leeway: Secs,

    /// Do not serve the demo game (/) and ws-relay.js on the public port.
    #[arg(long, env = "WS_RELAY_NO_PAGES")]
    no_pages: bool,

    /// How long a client that opted in to a resumable session (ws-relay.js `resume: true`) keeps its seat
    /// after its connection drops without a close frame; 0 turns sessions off.
    #[arg(long, env = "WS_RELAY_RESUME_WINDOW", default_value_t = Window(D.resume_window))]
    resume_window: Window,

    /// The most sessions waiting to be resumed at once; past it a dropped client leaves its room at once.
    #[arg(long, env = "WS_RELAY_MAX_PARKED", default_value_t = D.max_parked)]
    max_parked: usize,

    /// Write the relay's process id to this file at start, and again from the
    /// new process after a takeover.
    #[arg(long, env = "WS_RELAY_PID_FILE")]
    pid_file: Option<PathBuf>,

    /// Do not start a relay: hand the running relay with this process id to
    /// the binary now at its path (as SIGUSR2 does) and wait. Exits 0 once the
    /// old process has handed over and exited, 1 if it is still serving after
    /// 20 s (the reason is in its log).
    #[arg(long, value_name = "PID")]
    takeover: Option<u32>,

    /// Serve an RFC 6455 echo service on every path instead of the relay (for conformance suites).
    #[arg(long, env = "WS_RELAY_ECHO")]
    echo: bool,

    /// Offer permessage-deflate (RFC 7692) to clients that ask, as browsers do: fewer bytes on the wire for
    /// some CPU and memory per client. Off by default: latency comes first.
    #[arg(long, env = "WS_RELAY_DEFLATE")]
    deflate: bool,

    /// With --deflate, messages smaller than this many bytes go out uncompressed.
    #[arg(long, env = "WS_RELAY_DEFLATE_MIN", default_value_t = Deflate::DEFAULT.min_size)]
    deflate_min: usize,

    /// Largest message a client may send, in bytes (larger: close 1009; compressed messages count as inflated).
    #[arg(long, env = "WS_RELAY_MAX_MESSAGE", default_value_t = D.message.max_message)]
    max_message: usize,

    /// Most frames one message may be split into (more: close 1009).
    #[arg(long, env = "WS_RELAY_MAX_FRAGMENTS", default_value_t = D.message.max_fragments)]
    max_fragments: usize,

    /// Largest HTTP upgrade request head, in bytes (larger: 431).
    #[arg(long, env = "WS_RELAY_MAX_REQUEST_HEAD", default_value_t = D.handshake.max_head)]
    max_request_head: usize,

    /// Most header fields in the upgrade request (more: 431).
    #[arg(long, env = "WS_RELAY_MAX_HEADERS", default_value_t = D.handshake.max_headers)]
    max_headers: usize,

    /// Longest request target, i.e. room name, in bytes (longer: 414).
    #[arg(long, env = "WS_RELAY_MAX_TARGET", default_value_t = D.handshake.max_target)]
    max_target: usize,

    /// Most clients in all rooms together (more: 503 before the upgrade).
    #[arg(long, env = "WS_RELAY_MAX_CLIENTS", default_value_t = D.capacity.max_clients)]
    max_clients: usize,

    /// Most clients in one room (more: 503 "room full" before the upgrade).
    #[arg(long, env = "WS_RELAY_MAX_ROOM_CLIENTS", default_value_t = D.capacity.max_room_clients)]
    max_room_clients: usize,

    /// Most clients from one address (the PROXY protocol's source behind a proxy); more: 503. Off by default.
    #[arg(long, env = "WS_RELAY_MAX_CLIENTS_PER_IP",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_clients_per_ip: Option<usize>,

    /// Most rooms at once (a new room past it: 503 before the upgrade).
    #[arg(long, env = "WS_RELAY_MAX_ROOMS", default_value_t = D.capacity.max_rooms)]
    max_rooms: usize,

    /// Most connections still sending their HTTP request; a new one past it pushes out the oldest (503).
    #[arg(long, env = "WS_RELAY_MAX_HANDSHAKES", default_value_t = D.capacity.max_handshakes,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_handshakes: usize,

    /// Accept browser upgrades only from these origins (e.g. https://game.example); repeat or comma-separate. Off by default.
    #[arg(long = "allow-origin", env = "WS_RELAY_ALLOW_ORIGIN", value_delimiter = ',')]
    allow_origin: Vec<String>,

    /// Flood control: messages per second one client may sustain (over: close 1008). 0 turns flood control off.
    #[arg(long, env = "WS_RELAY_FLOOD_MESSAGES", default_value_t = FLOOD.messages_per_second)]
    flood_messages: u32,

    /// Flood control: messages one client may send at once.
    #[arg(long, env = "WS_RELAY_FLOOD_BURST", default_value_t = FLOOD.message_burst)]
    flood_burst: u32,

    /// Flood control: payload bytes per second one client may sustain.
    #[arg(long, env = "WS_RELAY_FLOOD_BYTES", default_value_t = FLOOD.bytes_per_second)]
    flood_bytes: u64,

    /// Flood control: payload bytes one client may send at once.
    #[arg(long, env = "WS_RELAY_FLOOD_BYTE_BURST", default_value_t = FLOOD.byte_burst)]
    flood_byte_burst: u64,

    /// Time a client has to complete its upgrade request (then: 408 and close).
    #[arg(long, env = "WS_RELAY_HANDSHAKE_TIMEOUT", default_value_t = Secs(D.handshake_timeout))]
    handshake_timeout: Secs,

    /// A client silent this long is sent a ping.
    #[arg(long, env = "WS_RELAY_PING_INTERVAL", default_value_t = Secs(D.ping_interval))]
    ping_interval: Secs,

    /// A pinged client silent this much longer is closed (1011).
    #[arg(long, env = "WS_RELAY_PING_TIMEOUT", default_value_t = Secs(D.ping_timeout))]
    ping_timeout: Secs,

    /// How long the relay waits for a client to answer its close frame.
    #[arg(long, env = "WS_RELAY_CLOSE_TIMEOUT", default_value_t = Secs(D.close_timeout))]
    close_timeout: Secs,

    /// A client that stops reading is disconnected once this many bytes wait for it
    /// (at least a full room's join list plus one largest message; the relay says how much if not).
    #[arg(long, env = "WS_RELAY_MAX_PENDING", default_value_t = D.max_pending)]
    max_pending: usize,

    /// On SIGTERM or SIGINT, how long to wait for clients to close before exiting.
    #[arg(long, env = "WS_RELAY_DRAIN_TIMEOUT", default_value_t = Secs(Duration::from_secs(5)))]
    drain_timeout: Secs,
}

/// A duration flag: `250ms`, `10s`, `2m` or a bare number of seconds (`1.5`).
#[derive(Clone, Copy, Debug)]
struct Secs(Duration);

impl FromStr for Secs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
            (n, 0.001)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60.0)
        } else {
            (s, 1.0)
        };
        let value: f64 = number.trim().parse().map_err(|_| format!("`{s}` is not a duration like 250ms, 10s or 2m"))?;
        let d = Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{s}`: {e}"))?;
        if d.is_zero() || d > ws_relay::MAX_DURATION {
            return Err(format!("`{s}` must be more than 0 and at most {}s", ws_relay::MAX_DURATION.as_secs()));
        }
        Ok(Secs(d))
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A duration that may be 0, which turns what it times off.
#[derive(Clone, Copy, Debug)]
struct Window(Duration);

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "0" | "0s" | "0ms" => Ok(Window(Duration::ZERO)),
            other => other.parse::<Secs>().map(|s| Window(s.0)),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            f.write_str("0")
        } else {
            Secs(self.0).fmt(f)
        }
    }
}

/// A secret from a file: its bytes, less one trailing newline (editors add
/// one). A secret is never a flag's value, which `ps` would show.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty: a secret needs at least one byte", path.display()));
    }
    Ok(bytes)
}

/// `--takeover PID`: SIGUSR2 to the relay, then wait for it to exit.
fn take_over(pid: u32) -> ExitCode {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return ExitCode::from(2) };
    // SAFETY: kill(2) with a valid signal number; a wrong pid is reported by its result.
    if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
        error!("cannot signal pid {pid}: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        // Signal 0 checks that the process still exists; a zombie (exited,
        // not yet reaped by its parent) has handed over too.
        // SAFETY: as above.
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        if unsafe { libc::kill(pid, 0) } != 0 || zombie {
            info!("pid {pid} handed over and exited");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    error!("pid {pid} is still serving: the takeover failed, and its log says why");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(pid) = args.takeover {
        return take_over(pid);
    }
    // The operator's port under its older name, for deployments that set it.
    let admin_listen =
        args.admin_listen.or_else(|| std::env::var("WS_RELAY_METRICS_LISTEN").ok().and_then(|a| a.parse().ok()));
    let secrets = (|| -> Result<_, String> {
        let api_key = args.api_key_file.as_deref().map(read_secret).transpose()?.map(Secret);
        if api_key.is_some() && admin_listen.is_none() {
            return Err("the server API (--api-key-file) is served on --admin-listen, which is not set".into());
        }
        let tokens = match &args.token_secret_file {
            Some(path) => {
                let previous = args.token_previous_secret_file.as_deref().map(read_secret).transpose()?;
                Some(Verifier::new(read_secret(path)?, previous, args.token_leeway.0))
            }
            None => None,
        };
        Ok((api_key, tokens))
    })();
    let (api_key, tokens) = match secrets {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let api = api_key.is_some();
    let relay = Config {
        mode: if args.echo { Mode::Echo } else { Mode::Relay },
        handshake: HandshakeLimits {
            max_head: args.max_request_head,
            max_headers: args.max_headers,
            max_target: args.max_target,
        },
        message: MessageLimits { max_message: args.max_message, max_fragments: args.max_fragments },
        allowed_origins: (!args.allow_origin.is_empty()).then_some(args.allow_origin),
        serve_pages: !args.no_pages,
        serve_metrics: admin_listen.is_none(),
        proxy_protocol: args.proxy_protocol,
        admission: tokens.is_some(),
        api_key,
        max_api_body: args.max_api_body,
        deflate: args.deflate.then_some(Deflate { min_size: args.deflate_min }),
        flood: (args.flood_messages > 0).then_some(FloodLimits {
            messages_per_second: args.flood_messages,
            message_burst: args.flood_burst,
            bytes_per_second: args.flood_bytes,
            byte_burst: args.flood_byte_burst,
        }),
        capacity: Capacity {
            max_clients: args.max_clients,
            max_room_clients: args.max_room_clients,
            max_rooms: args.max_rooms,
            max_handshakes: args.max_handshakes,
            max_clients_per_ip: args.max_clients_per_ip,
        },
        handshake_timeout: args.handshake_timeout.0,
        ping_interval: args.ping_interval.0,
        ping_timeout: args.ping_timeout.0,
        close_timeout: args.close_timeout.0,
        max_pending: args.max_pending,
        resume_window: args.resume_window.0,
        max_parked: args.max_parked,
    };
    let config = ServerConfig {
        listen: args.listen,
        metrics_listen: admin_listen,
        relay,
        drain_timeout: args.drain_timeout.0,
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        tokens,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsListen { listen: args.tls_listen, files: TlsFiles { cert, key } }),
        // Read now: once the file is replaced, /proc/self/exe names a deleted one.
        successor: std::env::current_exe()
            .ok()
            .map(|program| Successor { program, args: std::env::args_os().skip(1).collect() }),
    };
    let inherited = ws_relay::server::takeover_link();
    let started = match inherited {
        Some(fd) => Server::take_over(config.clone(), fd),
        None => Server::bind(config.clone()),
    };
    let server = match started {
        Ok(s) => s,
        Err(StartError::Config(e)) => {
            error!("{e}");
            return ExitCode::from(2);
        }
        Err(StartError::Io(e)) => {
            error!("cannot listen on {} (metrics: {:?}): {e}", config.listen, config.metrics_listen);
            return ExitCode::FAILURE;
        }
        Err(e @ StartError::Tls(_)) => {
            error!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            error!("{e}; the old process serves on");
            return ExitCode::FAILURE;
        }
    };
    if inherited.is_some() {
        info!("took over: this is takeover {} of the relay", server.takeovers());
    } else {
        ws_relay::server::notify_ready();
    }
    if let Some(path) = &args.pid_file {
        // Written aside and renamed, so a reader never sees it empty or half written.
        let aside = path.with_extension("new");
        let written =
            std::fs::write(&aside, format!("{}\n", std::process::id())).and_then(|()| std::fs::rename(&aside, path));
        if let Err(e) = written {
            error!("cannot write {}: {e}", path.display());
        }
    }
    let addr = server.local_addr();
    let r = &config.relay;
    info!(
        "listening on {addr}: {} shards, {:?} mode, max clients {}, max per room {}, max rooms {}, max message {} B, \
         max pending {} B, flood {}, origins {}, handshake timeout {:?}, ping every {:?}, deflate {}{}",
        config.threads,
        r.mode,
        r.capacity.max_clients,
        r.capacity.max_room_clients,
        r.capacity.max_rooms,
        r.message.max_message,
        r.max_pending,
        r.flood.map_or("off".into(), |f| format!("{} msg/s burst {}", f.messages_per_second, f.message_burst)),
        r.allowed_origins.as_ref().map_or("any".into(), |o| o.join(",")),
        r.handshake_timeout,
        r.ping_interval,
        r.deflate.map_or("off".into(), |d| format!("from {} B", d.min_size)),
        if r.proxy_protocol { ", PROXY protocol required" } else { "" },
    );
    // Scripts and tests that bind port 0 read the real addresses from these lines,
    // once: a process that took over says nothing new. A closed stdout is no reason to stop.
    if inherited.is_none() {
        let _ = writeln!(std::io::stdout(), "listening on {addr}");
    }
    if let Some(metrics) = server.metrics_addr() {
        info!("operator's port on {metrics}: /metrics, /healthz{}", if api { ", /api/" } else { "" });
        if inherited.is_none() {
            let _ = writeln!(std::io::stdout(), "metrics on {metrics}");
        }
    }
    if let Some(tls) = server.tls_addr() {
        info!("TLS on {tls}: wss:// and https://");
        if inherited.is_none() && tls != addr {
            let _ = writeln!(std::io::stdout(), "tls on {tls}");
        }
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
