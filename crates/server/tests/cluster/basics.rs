//! A healthy cluster: reads and writes through every node, hostile bytes on both ports, and
//! the stock Redis tools.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chorus_resp::Frame;
use serde::Serialize;

use crate::harness::{CLUSTER_ID, Resp, TestCluster, resp_get, resp_set};

const STARTUP: Duration = Duration::from_secs(10);

// Proves that a write accepted by any node (leader or follower, which forwards it) is
// replicated and is then read back, linearizably, from every node.
#[test]
fn a_write_through_any_node_is_read_back_from_every_node() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP);
    for node in cluster.ids() {
        resp_set(
            cluster.redis(node),
            &format!("key-{node}"),
            &format!("value-{node}"),
        );
    }
    for writer in cluster.ids() {
        for reader in cluster.ids() {
            assert_eq!(
                resp_get(cluster.redis(reader), &format!("key-{writer}")).as_deref(),
                Some(format!("value-{writer}").as_str()),
                "key-{writer} read through node {reader}"
            );
        }
    }
    assert_eq!(resp_get(cluster.redis(2), "never-written"), None);
}

// Proves that one connection's pipelined commands take effect in the order sent, reads
// included, on the leader and on followers: `SET k a; GET k; SET k b; GET k` in one pipeline
// must read `a` then `b`. Before reads waited for the writes ahead of them (and writes for
// the reads), a GET could see the later SET on the leader, and nothing or the old value on a
// follower. Plain RESP connection, no client retries.
#[test]
fn pipelined_commands_take_effect_in_the_order_sent_on_every_node() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP);
    resp_set(cluster.redis(1), "warm-up", "x");
    for node in cluster.ids() {
        let mut connection = Resp::connect(cluster.redis(node));
        for round in 0..200 {
            let key = format!("pipeline-{node}-{round}");
            let mut batch = bytes::BytesMut::new();
            for arguments in [
                ["SET", key.as_str(), "a"].as_slice(),
                &["GET", &key],
                &["SET", &key, "b"],
                &["GET", &key],
            ] {
                chorus_resp::encode_request(arguments, &mut batch);
            }
            connection.send_raw(&batch);
            let replies: Vec<Frame> = (0..4)
                .map(|_| connection.reply().expect("a reply"))
                .collect();
            assert_eq!(
                replies,
                vec![
                    Frame::ok(),
                    Frame::bulk(bytes::Bytes::from_static(b"a")),
                    Frame::ok(),
                    Frame::bulk(bytes::Bytes::from_static(b"b")),
                ],
                "round {round} through node {node}"
            );
        }
    }
}

// Proves that a connection answers every request it took before it closes, in order: writes
// and reads pipelined ahead of a protocol error, ahead of QUIT, or ahead of the client's
// half-close (it stops sending and waits for its replies) are all answered, on the leader and
// on a follower (whose answers come from the driver after a round trip to the leader). Plain
// TCP, no client library, no retries.
#[test]
fn a_connection_answers_what_it_took_before_it_closes() {
    // Few replies in flight per connection, so that a long pipeline fills the outbox often.
    let mut cluster = TestCluster::configure(3, "[limits]\nconnection_inflight_max = 8\n");
    for node in cluster.ids() {
        cluster.restart(node);
    }
    let leader = cluster.wait_for_leader(STARTUP);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    for node in [leader, follower] {
        let key = format!("owed-{node}");
        let counter = format!("owed-counter-{node}");
        let pipeline = |commands: &[&[&str]], tail: &[u8]| {
            let mut bytes = bytes::BytesMut::new();
            for arguments in commands {
                chorus_resp::encode_request(arguments, &mut bytes);
            }
            bytes.extend_from_slice(tail);
            bytes
        };
        let ahead: [&[&str]; 3] = [&["SET", &key, "v"], &["GET", &key], &["INCR", &counter]];
        // A protocol error after them: their replies, the error, then the close.
        let replies = replies_until_closed(
            cluster.redis(node),
            &pipeline(&ahead, b"*1\r\n$-5\r\n"),
            false,
        );
        assert_eq!(replies.len(), 4, "node {node}: {replies:?}");
        assert_eq!(
            replies[..3],
            [Frame::ok(), Frame::bulk("v"), Frame::integer(1)],
            "node {node}"
        );
        assert!(
            matches!(&replies[3], Frame::Error(text) if text.starts_with("ERR Protocol error")),
            "node {node}: {replies:?}"
        );
        // QUIT after them.
        let mut quit = pipeline(&ahead, b"");
        chorus_resp::encode_request(&["QUIT"], &mut quit);
        let replies = replies_until_closed(cluster.redis(node), &quit, false);
        assert_eq!(
            replies,
            [
                Frame::ok(),
                Frame::bulk("v"),
                Frame::integer(2),
                Frame::ok()
            ],
            "node {node}"
        );
        // The client half-closes after them.
        let replies = replies_until_closed(cluster.redis(node), &pipeline(&ahead, b""), true);
        assert_eq!(
            replies,
            [Frame::ok(), Frame::bulk("v"), Frame::integer(3)],
            "node {node}"
        );
        // Many more requests than a connection may have in flight (8 here), then the
        // half-close: the connection reads on only once it has parsed what it holds, so the
        // end of input cannot cut off requests it read but had no room for yet.
        let reads: Vec<[&str; 2]> = (0..5_000).map(|_| ["GET", key.as_str()]).collect();
        let reads: Vec<&[&str]> = reads.iter().map(<[&str; 2]>::as_slice).collect();
        let replies = replies_until_closed(cluster.redis(node), &pipeline(&reads, b""), true);
        assert_eq!(replies.len(), 5_000, "node {node}");
        assert!(
            replies.iter().all(|reply| *reply == Frame::bulk("v")),
            "node {node}"
        );
    }
}

/// Sends `bytes` on a new RESP connection to `address` (then shuts its sending side if
/// `half_close`), reads until the server closes it, and returns the replies read.
fn replies_until_closed(
    address: std::net::SocketAddr,
    bytes: &[u8],
    half_close: bool,
) -> Vec<Frame> {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect to RESP");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    stream.write_all(bytes).expect("send the pipeline");
    if half_close {
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
    }
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("the server closes the connection");
    let mut buffer = bytes::BytesMut::from(received.as_slice());
    let mut replies = Vec::new();
    while let Some(frame) =
        chorus_resp::parse_reply(&mut buffer, &chorus_resp::Limits::default()).expect("a reply")
    {
        replies.push(frame);
    }
    assert!(buffer.is_empty(), "bytes after the last reply: {buffer:?}");
    replies
}

// Proves that COMMAND describes the commands Chorus serves, as client libraries read it:
// COMMAND COUNT matches COMMAND's length, and COMMAND INFO gives Redis's arity and key
// positions (or nil for a command Chorus does not serve).
#[test]
fn command_describes_what_chorus_serves() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(STARTUP);
    let mut connection = Resp::connect(cluster.redis(1));
    let Frame::Array(Some(all)) = connection.call(&["COMMAND"]) else {
        panic!("COMMAND answers an array");
    };
    assert!(all.len() >= 20, "{} commands", all.len());
    assert_eq!(
        connection.call(&["COMMAND", "COUNT"]),
        Frame::integer(all.len() as i64)
    );
    let Frame::Array(Some(info)) = connection.call(&["COMMAND", "INFO", "mset", "nosuch"]) else {
        panic!("COMMAND INFO answers an array");
    };
    let Frame::Array(Some(mset)) = &info[0] else {
        panic!("mset is described: {info:?}");
    };
    assert_eq!(mset[0], Frame::bulk("mset"));
    assert_eq!(
        mset[1..=1].to_vec(),
        vec![Frame::integer(-3)],
        "arity: at least three words"
    );
    assert_eq!(
        mset[3..6].to_vec(),
        vec![Frame::integer(1), Frame::integer(-1), Frame::integer(2)],
        "keys from 1 to the last, every second word"
    );
    assert_eq!(info[1], Frame::null_array());
}

/// Sends `bytes` as the first thing on a new RESP connection and expects a protocol error
/// followed by the server closing the connection.
fn expect_protocol_error(cluster: &TestCluster, node: u64, bytes: &[u8]) {
    let mut resp = Resp::connect(cluster.redis(node));
    resp.send_raw(bytes);
    match resp.reply() {
        Some(Frame::Error(text)) => assert!(
            text.starts_with("ERR Protocol error"),
            "{:?}: {text}",
            String::from_utf8_lossy(bytes)
        ),
        other => panic!(
            "{:?}: expected a protocol error, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
    assert!(
        resp.closed(),
        "{:?}: the connection stayed open",
        String::from_utf8_lossy(bytes)
    );
}

/// The body of a peer hello, as the transport encodes it (postcard; `NodeId` is a newtype
/// of `u64`).
#[derive(Serialize)]
struct Hello {
    cluster_id: String,
    from: u64,
    to: u64,
}

fn hello_frame(cluster_id: &str, from: u64, to: u64) -> Vec<u8> {
    let body = postcard::to_allocvec(&Hello {
        cluster_id: cluster_id.into(),
        from,
        to,
    })
    .expect("encode a hello");
    let mut frame = Vec::new();
    frame.extend_from_slice(&((body.len() + 2) as u32).to_be_bytes());
    frame.extend_from_slice(&[1, 1]);
    frame.extend_from_slice(&body);
    frame
}

/// Sends `bytes` on a new peer connection and expects the node to close it.
fn expect_peer_close(cluster: &TestCluster, node: u64, what: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect_timeout(&cluster.peer(node), Duration::from_secs(2))
        .expect("connect to the peer port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    // The node may close before reading everything; a failed write is then fine.
    let _ = stream.write_all(bytes);
    let mut chunk = [0u8; 64];
    let closed = match stream.read(&mut chunk) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "{what}: the peer connection stayed open");
}

// Proves that malformed client requests and hostile peer traffic are refused connection by
// connection, and that the node keeps serving and the cluster keeps committing.
#[test]
fn malformed_input_leaves_the_node_serving() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP);
    let target = 2;

    expect_protocol_error(&cluster, target, b"*abc\r\n");
    expect_protocol_error(&cluster, target, b"*1\r\n+PING\r\n");
    expect_protocol_error(&cluster, target, b"*2\r\n$3\r\nGET\r\n$999999999999\r\n");
    expect_protocol_error(&cluster, target, b"SET \"unbalanced value\r\n");
    expect_protocol_error(&cluster, target, b"*1\r\n$3\r\nGETXX\r\n");

    expect_peer_close(
        &cluster,
        target,
        "garbage",
        b"\x00\x00\x00\x08\xde\xad\xbe\xef\x00\xff\x13\x37",
    );
    expect_peer_close(
        &cluster,
        target,
        "an HTTP request",
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let mut oversized = ((64u32 << 20) + 1).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[1, 1, 0, 0]);
    expect_peer_close(&cluster, target, "a frame over the limit", &oversized);
    expect_peer_close(
        &cluster,
        target,
        "a hello from a foreign cluster",
        &hello_frame("someone-else", 1, target),
    );
    expect_peer_close(
        &cluster,
        target,
        "a hello from an unknown node",
        &hello_frame(CLUSTER_ID, 99, target),
    );
    expect_peer_close(
        &cluster,
        target,
        "a hello meant for another node",
        &hello_frame(CLUSTER_ID, 1, 3),
    );

    // The node still serves, and the cluster still commits through it and through the others.
    resp_set(cluster.redis(target), "after", "still-here");
    let mut resp = Resp::connect(cluster.redis(target));
    assert_eq!(resp.call(&["PING"]), Frame::Simple("PONG".into()));
    for node in cluster.ids() {
        assert_eq!(
            resp_get(cluster.redis(node), "after").as_deref(),
            Some("still-here")
        );
    }
    resp_set(cluster.redis(1), "after-2", "committed");
    assert_eq!(
        resp_get(cluster.redis(target), "after-2").as_deref(),
        Some("committed")
    );
    assert!(
        cluster.log(target).contains("closed a peer connection"),
        "the refused peer connections are logged"
    );
}

pub(crate) fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs a tool to completion within `within`, killing it on timeout; returns (success,
/// stdout + stderr).
pub(crate) fn run_tool(command: &mut Command, within: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).expect("create an output file");
    let err = out.try_clone().expect("share the output file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the tool");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.is_some(),
        "{command:?} did not finish within {within:?}:\n{text}"
    );
    (status.is_some_and(|s| s.success()), text)
}

// Proves that unmodified Redis tools work against Chorus: redis-cli writes through one node
// and reads through another, and redis-benchmark runs the command list that
// docs/redis-compatibility.md names (SET, GET, INCR, the list, set, hash and sorted-set
// commands, LRANGE, MSET) with no error reply, with and without pipelining, on the leader and
// on a follower.
#[test]
fn redis_cli_and_redis_benchmark_work_unmodified() {
    if !on_path("redis-cli") || !on_path("redis-benchmark") {
        // CI installs the tools and sets this, so there the test can never skip silently.
        assert!(
            std::env::var_os("CHORUS_REQUIRE_REDIS_TOOLS").is_none(),
            "CHORUS_REQUIRE_REDIS_TOOLS is set but redis-cli or redis-benchmark is missing"
        );
        println!("skipped: redis-tools not installed");
        return;
    }
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&n| n != leader)
        .unwrap_or(leader);
    let port = |node: u64| cluster.redis(node).port().to_string();

    let (ok, text) = run_tool(
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port(leader), "SET", "a", "1"]),
        Duration::from_secs(10),
    );
    assert!(ok && text.trim() == "OK", "redis-cli SET: {text}");
    let (ok, text) = run_tool(
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port(follower), "GET", "a"]),
        Duration::from_secs(10),
    );
    assert!(
        ok && text.trim() == "1",
        "redis-cli GET through a follower: {text}"
    );

    // On the leader (with and without pipelining) and on a follower (writes forwarded); `-e`
    // prints every error reply, and there must be none.
    let tests = "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange,mset";
    for (node, pipeline) in [(leader, "1"), (leader, "16"), (follower, "1")] {
        let (ok, text) = run_tool(
            Command::new("redis-benchmark").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port(node),
                "-t",
                tests,
                "-n",
                "2000",
                "-c",
                "10",
                "-P",
                pipeline,
                "-e",
                "-q",
            ]),
            Duration::from_secs(180),
        );
        let text = text.replace('\r', "\n");
        assert!(
            ok,
            "redis-benchmark on node {node} -P {pipeline} failed:\n{text}"
        );
        for test in [
            "SET:",
            "GET:",
            "INCR:",
            "LPUSH:",
            "RPUSH:",
            "LPOP:",
            "RPOP:",
            "SADD:",
            "HSET:",
            "SPOP:",
            "ZADD:",
            "LRANGE_100",
            "MSET",
        ] {
            assert!(
                text.contains(test),
                "redis-benchmark on node {node} -P {pipeline} printed no {test} line:\n{text}"
            );
        }
        assert!(
            !text.contains("Error") && !text.contains("ERR"),
            "redis-benchmark on node {node} -P {pipeline} got an error reply:\n{text}"
        );
        println!("redis-benchmark on node {node} -P {pipeline}:\n{text}");
    }
}
