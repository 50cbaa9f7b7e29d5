//! The client reports each outcome honestly: an answer, a definite refusal, or an unknown
//! outcome, against scripted fake nodes on 127.0.0.1. (The real cluster is exercised by the
//! server's end-to-end tests.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_client::{Client, ClientConfig, ClientError};
use chorus_kv::{ClientId, Response};
use chorus_resp::{Frame, Limits, parse_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A fake node that answers every request with the frame `answer` returns for it.
async fn fake_node(answer: fn(&[Bytes]) -> Frame) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = BytesMut::new();
                loop {
                    while let Ok(Some(request)) = parse_request(&mut buffer, &Limits::default()) {
                        let mut out = BytesMut::new();
                        answer(&request).encode(&mut out);
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    match stream.read_buf(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    address
}

fn quick(endpoints: Vec<SocketAddr>) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints);
    config.attempt_timeout = Duration::from_millis(200);
    config.call_timeout = Duration::from_millis(600);
    config.backoff_min = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(20);
    config
}

fn answer_register(request: &[Bytes]) -> Option<Frame> {
    (request[0].as_ref() == b"CHORUS.REGISTER")
        .then(|| Frame::Bulk(Some(Response::Registered(ClientId(7)).encode())))
}

#[tokio::test]
async fn an_answer_is_returned_and_the_session_is_opened_first() {
    let node = fake_node(|request| {
        answer_register(request).unwrap_or_else(|| Frame::Bulk(Some(Response::Ok.encode())))
    })
    .await;
    let mut client = Client::new(quick(vec![node])).unwrap();
    client.put("k", "v").await.unwrap();
    assert_eq!(client.session(), Some(ClientId(7)));
}

#[tokio::test]
async fn a_timeout_from_the_cluster_is_an_unknown_outcome_never_a_failure() {
    let node = fake_node(|request| {
        answer_register(request).unwrap_or_else(|| {
            Frame::error("TIMEOUT", "the request timed out; its outcome is unknown")
        })
    })
    .await;
    let mut client = Client::new(quick(vec![node])).unwrap();
    assert!(matches!(
        client.put("k", "v").await,
        Err(ClientError::Indefinite(_))
    ));
}

#[tokio::test]
async fn refusals_before_proposing_are_definite() {
    let node = fake_node(|request| {
        answer_register(request)
            .unwrap_or_else(|| Frame::error("UNAVAILABLE", "no leader is known; try again"))
    })
    .await;
    let mut client = Client::new(quick(vec![node])).unwrap();
    assert!(matches!(
        client.put("k", "v").await,
        Err(ClientError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_malformed_request_error_is_not_retried() {
    let node = fake_node(|request| {
        answer_register(request)
            .unwrap_or_else(|| Frame::error("ERR", "the command does not decode"))
    })
    .await;
    let mut client = Client::new(quick(vec![node])).unwrap();
    assert!(matches!(
        client.put("k", "v").await,
        Err(ClientError::Protocol(_))
    ));
}

#[tokio::test]
async fn unreachable_nodes_make_the_cluster_unavailable_and_an_empty_list_is_refused() {
    // A port that was just free: nothing listens there.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut client = Client::new(quick(vec![address])).unwrap();
    assert!(matches!(
        client.get("k").await,
        Err(ClientError::Unavailable(_))
    ));
    assert!(matches!(
        Client::new(quick(Vec::new())),
        Err(ClientError::NoEndpoints)
    ));
}

#[tokio::test]
async fn the_client_fails_over_to_a_node_that_answers() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let alive = fake_node(|request| {
        answer_register(request)
            .unwrap_or_else(|| Frame::Bulk(Some(Response::Value(None).encode())))
    })
    .await;
    let mut client = Client::new(quick(vec![dead, alive])).unwrap();
    assert_eq!(client.get("k").await.unwrap(), None);
}

/// The primary of the redirect test (a fake node's answer cannot capture it).
static PRIMARY: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

#[tokio::test]
async fn a_moved_redirect_is_followed_to_the_named_node_even_if_it_was_not_listed() {
    let primary = fake_node(|request| {
        answer_register(request).unwrap_or_else(|| Frame::Bulk(Some(Response::Ok.encode())))
    })
    .await;
    PRIMARY.set(primary).expect("set once");
    let backup = fake_node(|_| match PRIMARY.get() {
        Some(primary) => Frame::error("MOVED", &format!("0 {primary}")),
        None => Frame::error("UNAVAILABLE", "no primary yet"),
    })
    .await;
    let mut client = Client::new(quick(vec![backup])).unwrap();
    client.put("k", "v").await.unwrap();
    assert_eq!(client.session(), Some(ClientId(7)));
    client.put("k", "w").await.unwrap();
}
