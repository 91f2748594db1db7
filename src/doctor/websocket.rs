//! `--websocket PATH`: the HTTP/1.1 WebSocket handshake (RFC 6455) on its own connection, as
//! hitless forwards it: `Upgrade: websocket` with a random `Sec-WebSocket-Key` (ring's system
//! RNG), and the answer must be `101` with the `Sec-WebSocket-Accept` that key implies
//! (SHA-1 from ring, base64). Nothing is sent after the handshake. hitless forwards upgrades
//! to HTTP/1.1 backends only, so an endpoint reached over HTTP/2 fails here.

use std::net::SocketAddr;

use base64::Engine;
use ring::rand::SecureRandom;

use super::connect::{self, Transport};
use super::exchange::{Ask, Conn};
use super::report::Finding;
use super::targets::Settings;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` for `key`.
pub(crate) fn accept(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The `websocket` line.
pub(crate) async fn check(
    settings: &Settings,
    addr: SocketAddr,
    transport: &Transport,
    path: &str,
) -> Finding {
    const CHECK: &str = "websocket";
    let what = format!("GET {path} with Upgrade: websocket");
    if transport.h2 {
        return Finding::fail(
            CHECK,
            format!("{what}: the endpoint is reached over HTTP/2, and hitless forwards upgrades to HTTP/1.1 backends only"),
            Some(if transport.tls {
                "(the app) offer ALPN http/1.1 only, on a port for WebSocket".to_string()
            } else {
                settings.setting("protocol: http")
            }),
        );
    }
    let mut nonce = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut nonce).is_err() {
        return Finding::fail(CHECK, "no randomness for a Sec-WebSocket-Key", None);
    }
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut conn = match connect::open(settings, addr, transport).await {
        Ok(Conn::H1(h1)) => Conn::H1(h1),
        Ok(Conn::H2(_)) => return Finding::fail(CHECK, format!("{what}: HTTP/2"), None),
        Err(e) => return Finding::fail(CHECK, format!("{what}: {e}"), None),
    };
    let ask = Ask::WebSocket {
        path: path.to_string(),
        key: key.clone(),
    };
    let answer = match conn.ask(settings, addr, &ask).await {
        Ok(answer) => answer,
        Err(e) => return Finding::fail(CHECK, format!("{what}: {e}"), None),
    };
    let upgraded = answer
        .upgrade
        .as_deref()
        .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"));
    match answer.status {
        101 if upgraded && answer.websocket_accept.as_deref() == Some(accept(&key).as_str()) => {
            Finding::ok(CHECK, format!("{what}: 101, Sec-WebSocket-Accept matches"))
        }
        101 => Finding::fail(
            CHECK,
            format!(
                "{what}: 101, but Upgrade {:?} / Sec-WebSocket-Accept {:?} do not match the key",
                answer.upgrade, answer.websocket_accept
            ),
            None,
        ),
        status => Finding::fail(
            CHECK,
            format!("{what}: {status}, not 101: the upgrade is refused"),
            Some(format!("(the app) accept WebSocket upgrades on {path}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_of_the_rfc_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            super::accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
