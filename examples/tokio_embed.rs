//! The ws-relay core inside a tokio runtime instead of the mio driver: proof
//! that the core embeds in any event loop. One task owns the `Relay`; socket
//! tasks only move bytes to and from it.
//!
//! Run: `cargo run --example tokio_embed -- 127.0.0.1:7928`

use std::collections::HashMap;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinHandle;
use ws_relay::{Action, Config, ConnId, Relay};

/// What the socket tasks tell the core task.
enum Input {
    Accepted(TcpStream),
    Read(ConnId, Vec<u8>),
    Ended(ConnId),
}

/// A connection as the core task holds it: where its bytes go, and its reader
/// to stop when the core closes it.
struct Peer {
    output: UnboundedSender<Vec<u8>>,
    reader: JoinHandle<()>,
}

/// Serves the relay protocol on `listener` until the listener fails.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let (inputs, mut input) = unbounded_channel();
    let accept = inputs.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Latency matters more than packet count for game reports.
            let _ = stream.set_nodelay(true);
            if accept.send(Input::Accepted(stream)).is_err() {
                return;
            }
        }
    });

    let mut relay = Relay::new(Config::default());
    let mut peers: HashMap<ConnId, Peer> = HashMap::new();
    loop {
        let deadline = relay.poll_timeout().map(tokio::time::Instant::from_std);
        let next = tokio::select! {
            next = input.recv() => next,
            () = sleep_until(deadline) => None,
        };
        // The core never reads a clock: the driver passes the time in.
        let now = Instant::now();
        match next {
            Some(Input::Accepted(stream)) => {
                let conn = relay.handle_connect(now);
                let (mut rd, mut wr) = stream.into_split();
                let (output, mut outgoing) = unbounded_channel::<Vec<u8>>();
                tokio::spawn(async move {
                    while let Some(bytes) = outgoing.recv().await {
                        if wr.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    // The core closed this connection and everything queued is written.
                    let _ = wr.shutdown().await;
                });
                let events = inputs.clone();
                let reader = tokio::spawn(async move {
                    let mut buf = vec![0; 16 * 1024];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if events.send(Input::Read(conn, buf[..n].to_vec())).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = events.send(Input::Ended(conn));
                });
                peers.insert(conn, Peer { output, reader });
            }
            Some(Input::Read(conn, bytes)) => relay.handle_read(conn, &bytes, now),
            Some(Input::Ended(conn)) => relay.handle_close(conn, now),
            None if deadline.is_some() => relay.handle_timeout(now),
            None => return Ok(()),
        }
        // Drain after every input, as the core requires.
        while let Some(action) = relay.poll_action() {
            match action {
                Action::Send { to, bytes } => deliver(&peers, to, bytes),
                Action::Broadcast { to, bytes } => to.iter().for_each(|&c| deliver(&peers, c, bytes)),
                Action::Close { conn, .. } => {
                    if let Some(peer) = peers.remove(&conn) {
                        peer.reader.abort();
                    }
                }
            }
        }
    }
}

fn deliver(peers: &HashMap<ConnId, Peer>, conn: ConnId, bytes: &[u8]) {
    if let Some(peer) = peers.get(&conn) {
        let _ = peer.output.send(bytes.to_vec());
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    serve(listener).await
}
