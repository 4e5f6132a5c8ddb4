//! The ws-relay core inside a tokio runtime instead of the mio driver: proof
//! that the core embeds in any event loop. One task owns the `Relay`; socket
//! tasks only move bytes to and from it, so the core needs no lock. It follows
//! the driver's contract in `Relay`'s documentation, as the mio server does.
//!
//! Admission shows why decisions that need I/O are actions out of the core:
//! given an `admit` function, every upgrade waits for its future (a database,
//! a call to the game's servers) while the core goes on serving everyone else.
//!
//! Run: `cargo run --no-default-features --example tokio_embed -- 127.0.0.1:7928`

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use ws_relay::{Action, Admission, CloseReason, Config, ConnId, Relay, Verdict};

/// How long a closed client has to take the last bytes queued for it.
const LINGER: Duration = Duration::from_secs(2);

/// What the socket tasks tell the core task.
enum Input {
    Accepted(TcpStream),
    Read(ConnId, Vec<u8>),
    /// The client ended its stream; it may still read.
    Eof(ConnId),
    /// Reading or writing failed: the transport is gone.
    Failed(ConnId),
    /// The writer put this many bytes on the socket.
    Written(ConnId, usize),
    /// A closed client's time to take its last bytes is up.
    Linger(ConnId),
    /// The verdict on an upgrade that waited for one.
    Verdict(ConnId, Verdict),
}

/// A connection as the core task holds it.
struct Peer {
    /// The writer's queue. One chunk at a time is in flight: the core holds
    /// every byte until the writer reports it written, so the core's output
    /// bound covers what waits here too.
    output: mpsc::Sender<Vec<u8>>,
    in_flight: bool,
    /// The core closed it: the writer finishes and shuts the socket down.
    closing: bool,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Serves the relay protocol on `listener`, forever, letting everyone in.
pub async fn serve(listener: TcpListener) {
    serve_admitting(listener, None::<fn(Admission) -> std::future::Ready<Verdict>>).await;
}

/// Serves the relay protocol on `listener`, forever; with `admit`, each
/// upgrade waits for the verdict of the future `admit` makes for it.
pub async fn serve_admitting<A, F>(listener: TcpListener, admit: Option<A>)
where
    A: Fn(Admission) -> F,
    F: Future<Output = Verdict> + Send + 'static,
{
    // Bounded, so a client flooding faster than the core keeps up stalls in its
    // own reader (and TCP pushes back on it) instead of growing this queue.
    let (inputs, mut input) = mpsc::channel(1024);
    let accept = inputs.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // Latency matters more than packet count for game reports.
                    let _ = stream.set_nodelay(true);
                    if accept.send(Input::Accepted(stream)).await.is_err() {
                        return;
                    }
                }
                // Out of descriptors or an aborted handshake: both pass, so wait, not quit.
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    let config = Config { admission: admit.is_some(), ..Config::default() };
    let mut relay = Relay::new(config).expect("the default configuration is valid");
    let mut peers: HashMap<ConnId, Peer> = HashMap::new();
    loop {
        let deadline = relay.poll_timeout().map(tokio::time::Instant::from_std);
        // `None` is the timer; the channel never closes because `inputs` lives here.
        let next = tokio::select! {
            next = input.recv() => next,
            () = sleep_until(deadline) => None,
        };
        // The core never reads a clock: the driver passes the time in.
        let now = Instant::now();
        // A connection whose writer may take more now, besides those the core names.
        let mut ready = None;
        match next {
            Some(Input::Accepted(stream)) => {
                // The id must come from the core before the tasks that tag bytes with it start.
                let conn = relay.handle_connect(now);
                peers.insert(conn, spawn_peer(conn, stream, &inputs));
            }
            Some(Input::Read(conn, bytes)) => relay.handle_read(conn, &bytes, now),
            Some(Input::Eof(conn)) => relay.handle_eof(conn, now),
            Some(Input::Failed(conn)) => {
                if let Some(peer) = peers.remove(&conn) {
                    peer.reader.abort();
                    peer.writer.abort();
                }
                relay.handle_close(conn, now);
            }
            Some(Input::Written(conn, n)) => {
                relay.handle_written(conn, n);
                if let Some(peer) = peers.get_mut(&conn) {
                    peer.in_flight = false;
                    ready = Some(conn);
                }
            }
            Some(Input::Linger(conn)) => {
                if let Some(peer) = peers.remove(&conn) {
                    peer.writer.abort();
                    // What it did not take is dropped with it.
                    relay.handle_close(conn, now);
                }
            }
            Some(Input::Verdict(conn, verdict)) => relay.handle_admission(conn, verdict, now),
            None => relay.handle_timeout(now),
        }
        apply(&mut relay, &mut peers, &inputs, ready, admit.as_ref());
    }
}

fn spawn_peer(conn: ConnId, stream: TcpStream, inputs: &mpsc::Sender<Input>) -> Peer {
    let (mut rd, mut wr) = stream.into_split();
    let (output, mut outgoing) = mpsc::channel::<Vec<u8>>(1);
    let events = inputs.clone();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            let reply = match wr.write_all(&bytes).await {
                Ok(()) => Input::Written(conn, bytes.len()),
                // The reader may never notice a dead peer; the core must hear it now.
                Err(_) => Input::Failed(conn),
            };
            if events.send(reply).await.is_err() {
                return;
            }
        }
        // The core closed the connection and all it queued is written: send FIN.
        let _ = wr.shutdown().await;
    });
    let events = inputs.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 16 * 1024];
        let end = loop {
            match rd.read(&mut buf).await {
                Ok(0) => break Input::Eof(conn),
                Ok(n) => {
                    if events.send(Input::Read(conn, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(_) => break Input::Failed(conn),
            }
        };
        let _ = events.send(end).await;
    });
    Peer { output, in_flight: false, closing: false, reader, writer }
}

/// Carries out the core's actions and hands each writer its next bytes, as
/// the core requires after every input.
fn apply<A, F>(
    relay: &mut Relay,
    peers: &mut HashMap<ConnId, Peer>,
    inputs: &mpsc::Sender<Input>,
    ready: Option<ConnId>,
    admit: Option<&A>,
) where
    A: Fn(Admission) -> F,
    F: Future<Output = Verdict> + Send + 'static,
{
    let mut ready: Vec<ConnId> = ready.into_iter().collect();
    while let Some(action) = relay.poll_action() {
        let (conn, reason) = match action {
            Action::Close { conn, reason } => (conn, reason),
            Action::Admit { conn, admission } => {
                // The decision runs as a task of its own; the verdict comes back as an input.
                let Some(admit) = admit else { continue };
                let (verdict, inputs) = (admit(admission), inputs.clone());
                tokio::spawn(async move {
                    let _ = inputs.send(Input::Verdict(conn, verdict.await)).await;
                });
                continue;
            }
            // One core alone: it hands nothing to others.
            _ => continue,
        };
        let Some(peer) = peers.get_mut(&conn) else { continue };
        ready.push(conn);
        peer.reader.abort();
        if reason == CloseReason::SlowConsumer {
            // It is not reading: nothing queued for it would get through.
            peer.writer.abort();
            peers.remove(&conn);
            continue;
        }
        peer.closing = true;
        let linger = inputs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            let _ = linger.send(Input::Linger(conn)).await;
        });
    }
    ready.extend(std::iter::from_fn(|| relay.poll_transmit()));
    for conn in ready {
        let Some(peer) = peers.get_mut(&conn) else { continue };
        if peer.in_flight {
            continue;
        }
        let pending = relay.pending(conn);
        if !pending.is_empty() {
            // The writer's queue holds one chunk and is empty now, so this never waits.
            if peer.output.try_send(pending.to_vec()).is_ok() {
                peer.in_flight = true;
            }
        } else if peer.closing {
            // All written: dropping the queue lets the writer send FIN.
            peers.remove(&conn);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    serve(listener).await;
    Ok(())
}
