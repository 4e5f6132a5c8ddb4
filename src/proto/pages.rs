//! The files the relay serves over plain HTTP: the demo game at `/` and the
//! browser helper `ws-relay.js` with its TypeScript declarations. They are
//! compiled in, so a relay binary is all a game needs to try it.

/// A file served with a plain `GET`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Page {
    /// Its `Content-Type`.
    pub(crate) content_type: &'static str,
    /// Its bytes.
    pub(crate) body: &'static [u8],
}

static DEMO: Page = Page { content_type: "text/html; charset=utf-8", body: include_bytes!("../../web/index.html") };
static HELPER: Page =
    Page { content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../web/ws-relay.js") };
static TYPES: Page =
    Page { content_type: "application/typescript; charset=utf-8", body: include_bytes!("../../web/ws-relay.d.ts") };

/// The page at `path` (the request path without its query), if there is one.
pub(crate) fn find(path: &str) -> Option<&'static Page> {
    match path {
        "/" | "/index.html" => Some(&DEMO),
        "/ws-relay.js" => Some(&HELPER),
        "/ws-relay.d.ts" => Some(&TYPES),
        _ => None,
    }
}
