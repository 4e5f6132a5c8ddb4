//! The core embedded in tokio (examples/tokio_embed.rs) runs the seed's
//! three-client exchange: the core works in another event loop than mio.

#[allow(dead_code)] // The example's `main` is its own entry point, unused here.
#[path = "../examples/tokio_embed.rs"]
mod tokio_embed;

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::{Message, WebSocket};

fn connect(addr: std::net::SocketAddr) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tungstenite::client::client(format!("ws://{addr}/ws-relay/embed"), stream).unwrap().0
}

fn text(ws: &mut WebSocket<TcpStream>) -> String {
    match ws.read().unwrap() {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn seed_table_through_the_tokio_driver() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || runtime.block_on(tokio_embed::serve(listener)));

    let mut c1 = connect(addr);
    assert_eq!(text(&mut c1), "1 self");
    let mut c2 = connect(addr);
    assert_eq!([text(&mut c2), text(&mut c2)], ["2 self", "1 join"]);
    assert_eq!(text(&mut c1), "2 join");
    let mut c3 = connect(addr);
    assert_eq!([text(&mut c3), text(&mut c3), text(&mut c3)], ["3 self", "1 join", "2 join"]);
    assert_eq!(text(&mut c1), "3 join");
    assert_eq!(text(&mut c2), "3 join");
    c1.send(Message::text("2 hello")).unwrap();
    assert_eq!(text(&mut c2), "1 hello");
    c1.send(Message::text("* hello")).unwrap();
    assert_eq!(text(&mut c2), "1 hello");
    assert_eq!(text(&mut c3), "1 hello");
    // A close handshake: the core's answering close frame is written before the
    // writer shuts the socket down.
    c3.close(None).unwrap();
    assert!(matches!(c3.read(), Ok(Message::Close(_))));
    assert!(matches!(c3.read(), Err(tungstenite::Error::ConnectionClosed)));
    assert_eq!(text(&mut c1), "3 quit");
    assert_eq!(text(&mut c2), "3 quit");
    // No close handshake: the reader's EOF is the core's `handle_close`.
    drop(c2);
    assert_eq!(text(&mut c1), "2 quit");
    c1.close(None).unwrap();
    assert!(matches!(c1.read(), Ok(Message::Close(_))));
}

/// Admission that takes its time, as a call to a game's servers would: the
/// upgrade waits for the verdict while the core serves everyone else.
#[test]
fn an_async_verdict_admits_or_refuses() {
    use ws_relay::{Refusal, Verdict};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let admit = |admission: ws_relay::Admission| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match admission.token.as_deref() {
            Some("let-me-in") => Verdict::Accept { subject: Some("player".into()) },
            _ => Verdict::Refuse(Refusal::Denied),
        }
    };
    std::thread::spawn(move || runtime.block_on(tokio_embed::serve_admitting(listener, Some(admit))));
    let with_token = |token: &str| {
        use tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/ws-relay/admitted").into_client_request().unwrap();
        let offer = format!("ws-relay, ws-relay.token.{token}");
        request.headers_mut().insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tungstenite::client::client(request, stream).unwrap().0
    };
    let started = std::time::Instant::now();
    let mut member = with_token("let-me-in");
    assert_eq!(text(&mut member), "1 self");
    assert!(started.elapsed() >= Duration::from_millis(50), "the upgrade waited for the verdict");
    let mut stranger = with_token("guess");
    match stranger.read().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4403, "not admitted"))
        }
        other => panic!("a close frame, not {other:?}"),
    }
    // The member heard nothing of it.
    member.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(member.read().is_err());
}
