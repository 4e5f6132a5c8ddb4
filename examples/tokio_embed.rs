//! The ws-relay core inside a tokio runtime instead of the mio driver: proof
//! that the core embeds in any event loop. One task owns the `Relay`; socket
//! tasks only move bytes to and from it, so the core needs no lock.
//!
//! Run: `cargo run --no-default-features --example tokio_embed -- 127.0.0.1:7928`

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use ws_relay::{Action, CloseReason, Config, ConnId, Relay};

/// Writes queued for one client before it counts as a slow consumer. The core
/// never holds back its peers for it; the driver has to bound the queue.
const MAX_QUEUED: usize = 256;

/// What the socket tasks tell the core task.
enum Input {
    Accepted(TcpStream),
    Read(ConnId, Vec<u8>),
    Ended(ConnId),
}

/// A connection as the core task holds it.
struct Peer {
    /// Shared buffers: a broadcast is copied out of the core once, not per recipient.
    output: mpsc::Sender<Arc<[u8]>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Serves the relay protocol on `listener`, forever.
pub async fn serve(listener: TcpListener) {
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
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });

    let mut relay = Relay::new(Config::default());
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
        match next {
            Some(Input::Accepted(stream)) => {
                // The id must come from the core before the tasks that tag bytes with it start.
                let conn = relay.handle_connect(now);
                peers.insert(conn, spawn_peer(conn, stream, &inputs));
            }
            Some(Input::Read(conn, bytes)) => relay.handle_read(conn, &bytes, now),
            Some(Input::Ended(conn)) => relay.handle_close(conn, now),
            None => relay.handle_timeout(now),
        }
        apply(&mut relay, &mut peers, now);
    }
}

fn spawn_peer(conn: ConnId, stream: TcpStream, inputs: &mpsc::Sender<Input>) -> Peer {
    let (mut rd, mut wr) = stream.into_split();
    let (output, mut outgoing) = mpsc::channel::<Arc<[u8]>>(MAX_QUEUED);
    let events = inputs.clone();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                // The reader may never notice a dead peer; the core must hear it now.
                let _ = events.send(Input::Ended(conn)).await;
                return;
            }
        }
        // The core closed the connection and all it queued is written: send FIN.
        let _ = wr.shutdown().await;
    });
    let events = inputs.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 16 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            if events.send(Input::Read(conn, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
        let _ = events.send(Input::Ended(conn)).await;
    });
    Peer { output, reader, writer }
}

/// Drains the core's actions, as it requires after every input. Clients that
/// pass `MAX_QUEUED` are reported once the core no longer lends its buffers,
/// and what that makes the core do is drained in turn.
fn apply(relay: &mut Relay, peers: &mut HashMap<ConnId, Peer>, now: Instant) {
    loop {
        let mut slow = Vec::new();
        while let Some(action) = relay.poll_action() {
            match action {
                Action::Send { to, bytes } => deliver(peers, to, bytes.into(), &mut slow),
                Action::Broadcast { to, bytes } => {
                    let bytes: Arc<[u8]> = bytes.into();
                    to.iter().for_each(|&c| deliver(peers, c, bytes.clone(), &mut slow));
                }
                Action::Close { conn, reason } => {
                    let Some(Peer { output, reader, writer }) = peers.remove(&conn) else { continue };
                    // Ending the queue lets the writer flush what is in it, then send FIN.
                    drop(output);
                    reader.abort();
                    if reason == CloseReason::SlowConsumer {
                        // It is not reading: its backlog would never drain.
                        writer.abort();
                    } else {
                        // A client that stops reading gets as long as a close handshake.
                        let linger = relay.config().close_timeout;
                        tokio::spawn(async move {
                            tokio::time::sleep(linger).await;
                            writer.abort();
                        });
                    }
                }
            }
        }
        if slow.is_empty() {
            return;
        }
        slow.into_iter().for_each(|conn| relay.handle_slow_consumer(conn, now));
    }
}

fn deliver(peers: &HashMap<ConnId, Peer>, conn: ConnId, bytes: Arc<[u8]>, slow: &mut Vec<ConnId>) {
    let Some(peer) = peers.get(&conn) else { return };
    // Never await a client's queue here: one stalled client would stall everyone.
    if let Err(TrySendError::Full(_)) = peer.output.try_send(bytes) {
        if !slow.contains(&conn) {
            slow.push(conn);
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
