//! RESP2, the Redis serialization protocol, as pure functions over byte buffers.
//!
//! This crate exists so that unmodified `redis-cli` and `redis-benchmark` can talk to Chorus,
//! and so that Chorus's own native client speaks the same protocol ([`parse_reply`] reads the
//! server's answers).
//! It is sans-IO: the runtime reads bytes from a socket into a [`BytesMut`], calls
//! [`parse_request`] until it returns `Ok(None)`, runs each request, and [`encode`]s each reply
//! [`Frame`] into its write buffer. Nothing here touches a socket, a clock or a thread.
//!
//! # The contract of [`parse_request`]
//! 1. A request is consumed from the front of the buffer only once all of its bytes are there;
//!    until then the buffer is left exactly as it was and `Ok(None)` is returned, so the runtime
//!    simply reads more and calls again. Pipelined requests are returned one call at a time.
//! 2. Requests come in two shapes, as in Redis: a RESP array of bulk strings
//!    (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), which is what every client library and `redis-cli`
//!    send, and an inline command (`GET k\r\n`), which is what a person types into `telnet`.
//! 3. Empty requests (`*0\r\n`, `*-1\r\n`, a blank inline line) are consumed and skipped, as
//!    Redis does.
//! 4. Any malformed input, or any length over a [`Limits`] bound, is a [`RespError`]. The
//!    runtime then sends [`RespError::to_frame`] (`-ERR Protocol error: ...`) and closes the
//!    connection, because after a framing error the byte stream cannot be resynchronized.
//!
//! # Invariants
//! - No input makes the parser panic.
//! - The parser allocates in proportion to bytes actually received, never to lengths a client
//!   merely announces: announced lengths are checked against [`Limits`] as soon as their
//!   header line arrives, before the payload does.
//! - Arguments of array requests are zero-copy slices of the consumed request bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// One RESP2 value, as sent from the server to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A simple string, `+OK\r\n`. It must not contain `\r` or `\n`; [`encode`] replaces them
    /// with spaces so that a reply can never break the framing.
    Simple(String),
    /// An error, `-ERR message\r\n`. The text starts with the error kind (`ERR`, `NOPROTO`,
    /// `WRONGTYPE`, ...); like [`Frame::Simple`] it is kept on one line by [`encode`].
    Error(String),
    /// A signed 64-bit integer, `:42\r\n`.
    Integer(i64),
    /// A binary-safe bulk string, `$3\r\nabc\r\n`; `None` is the null bulk string `$-1\r\n`.
    Bulk(Option<Bytes>),
    /// An array of frames, `*2\r\n...`; `None` is the null array `*-1\r\n`.
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// The `+OK` simple string.
    #[must_use]
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// A simple string.
    #[must_use]
    pub fn simple(text: impl Into<String>) -> Frame {
        Frame::Simple(text.into())
    }

    /// An error of the given `kind` (`ERR`, `NOPROTO`, ...): `-{kind} {message}`.
    #[must_use]
    pub fn error(kind: &str, message: &str) -> Frame {
        Frame::Error(format!("{kind} {message}"))
    }

    /// An integer.
    #[must_use]
    pub fn integer(value: i64) -> Frame {
        Frame::Integer(value)
    }

    /// A bulk string holding `value`.
    #[must_use]
    pub fn bulk(value: impl Into<Bytes>) -> Frame {
        Frame::Bulk(Some(value.into()))
    }

    /// The null bulk string, `$-1\r\n`: Redis 2's "no value" (a missing key for `GET`).
    #[must_use]
    pub fn null() -> Frame {
        Frame::Bulk(None)
    }

    /// The null array, `*-1\r\n`.
    #[must_use]
    pub fn null_array() -> Frame {
        Frame::Array(None)
    }

    /// An array of frames.
    #[must_use]
    pub fn array(items: Vec<Frame>) -> Frame {
        Frame::Array(Some(items))
    }

    /// Appends this frame's wire form to `out`; see [`encode`].
    pub fn encode(&self, out: &mut BytesMut) {
        encode(self, out);
    }
}

/// Appends the RESP2 wire form of `frame` to `out`, exactly as Redis writes it.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Simple(text) => put_line(out, b'+', text.as_bytes()),
        Frame::Error(text) => put_line(out, b'-', text.as_bytes()),
        Frame::Integer(value) => {
            out.put_u8(b':');
            put_decimal(out, *value);
            out.put_slice(b"\r\n");
        }
        Frame::Bulk(None) => out.put_slice(b"$-1\r\n"),
        Frame::Bulk(Some(value)) => {
            out.reserve(value.len() + 16);
            out.put_u8(b'$');
            put_length(out, value.len());
            out.put_slice(b"\r\n");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
        Frame::Array(None) => out.put_slice(b"*-1\r\n"),
        Frame::Array(Some(items)) => {
            out.put_u8(b'*');
            put_length(out, items.len());
            out.put_slice(b"\r\n");
            for item in items {
                encode(item, out);
            }
        }
    }
}

/// Writes a one-line frame; a `\r` or `\n` inside would end the frame early and desynchronize
/// the client, so each becomes a space, as Redis does for error replies.
fn put_line(out: &mut BytesMut, prefix: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(prefix);
    if text.iter().any(|&byte| byte == b'\r' || byte == b'\n') {
        for &byte in text {
            out.put_u8(if byte == b'\r' || byte == b'\n' {
                b' '
            } else {
                byte
            });
        }
    } else {
        out.put_slice(text);
    }
    out.put_slice(b"\r\n");
}

fn put_length(out: &mut BytesMut, length: usize) {
    put_unsigned(out, length as u64);
}

fn put_decimal(out: &mut BytesMut, value: i64) {
    if value < 0 {
        out.put_u8(b'-');
    }
    put_unsigned(out, value.unsigned_abs());
}

fn put_unsigned(out: &mut BytesMut, mut value: u64) {
    // u64::MAX has 20 decimal digits.
    let mut digits = [0_u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

/// Bounds on what one client request may announce or contain.
///
/// Every bound is checked as soon as the length that could exceed it is read, so a client
/// cannot make the server buffer or allocate past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string argument (Redis: `proto-max-bulk-len`).
    pub bulk_bytes_max: usize,
    /// The most arguments in one array request (Redis: 1024 * 1024 for unauthenticated clients).
    pub array_len_max: usize,
    /// The longest inline command line, and the longest `*N` / `$N` header line
    /// (Redis: `PROTO_INLINE_MAX_SIZE`).
    pub inline_bytes_max: usize,
    /// The most bytes one whole request may span on the wire, so that the runtime's read
    /// buffer stays bounded even when every argument is within `bulk_bytes_max`.
    pub request_bytes_max: usize,
}

impl Limits {
    /// 16 MiB per bulk string, 1 Mi arguments, 64 KiB inline lines, 64 MiB per request.
    pub const DEFAULT: Limits = Limits {
        bulk_bytes_max: 16 * 1024 * 1024,
        array_len_max: 1024 * 1024,
        inline_bytes_max: 64 * 1024,
        request_bytes_max: 64 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// Why the bytes a client sent are not a valid request.
///
/// `Display` gives Redis's own wording (`Protocol error: invalid bulk length`) so that clients
/// and people see what they would see from Redis; send it with [`RespError::to_frame`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// The `*N` count is not a canonical integer, or is over [`Limits::array_len_max`].
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// The `$N` length is not a canonical integer, is negative, or is over
    /// [`Limits::bulk_bytes_max`].
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An array element is not a bulk string.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.got))]
    ExpectedBulk {
        /// The type byte found instead of `$`.
        got: u8,
    },
    /// A bulk string's payload is not followed by `\r\n`.
    #[error("Protocol error: expected '\\r\\n' after bulk string")]
    MissingBulkTerminator,
    /// A `*N` header line grew past [`Limits::inline_bytes_max`] without ending.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$N` header line grew past [`Limits::inline_bytes_max`] without ending.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline command line is longer than [`Limits::inline_bytes_max`], or has more words
    /// than [`Limits::array_len_max`].
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// An inline command has a quote that is not closed, or is closed but not followed by a
    /// space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// The request's announced lengths add up to more than [`Limits::request_bytes_max`].
    #[error("Protocol error: request is larger than {request_bytes_max} bytes")]
    RequestTooBig {
        /// The bound that was exceeded.
        request_bytes_max: usize,
    },
}

impl RespError {
    /// The reply to send before closing the connection: `-ERR Protocol error: ...`.
    #[must_use]
    pub fn to_frame(&self) -> Frame {
        Frame::error("ERR", &self.to_string())
    }
}

/// Parses one client request from the front of `buffer`: its arguments, command name first.
///
/// Returns `Ok(None)` when `buffer` does not yet hold a whole request; the bytes of a partial
/// request are left in place. Empty requests are consumed and skipped, so `Ok(None)` may come
/// back after some bytes were consumed. See the module docs for the full contract.
///
/// # Errors
/// [`RespError`] when the bytes are malformed or exceed `limits`. The buffer's contents are
/// then unspecified and the connection must be closed after sending
/// [`RespError::to_frame`].
pub fn parse_request(
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, RespError> {
    loop {
        let Some(&first) = buffer.first() else {
            return Ok(None);
        };
        let parsed = if first == b'*' {
            parse_array(buffer, limits)?
        } else {
            parse_inline(buffer, limits)?
        };
        match parsed {
            Parsed::Incomplete => return Ok(None),
            Parsed::Empty => {}
            Parsed::Request(arguments) => return Ok(Some(arguments)),
        }
    }
}

/// What one parsing step found at the front of the buffer.
enum Parsed {
    /// More bytes are needed; nothing was consumed.
    Incomplete,
    /// An empty request was consumed.
    Empty,
    /// A request was consumed.
    Request(Vec<Bytes>),
}

/// What a scan over an array request found, without consuming anything.
enum Scan {
    Incomplete,
    /// The request spans `buffer[..end]` and holds `count` arguments (0 for an empty request).
    Complete {
        end: usize,
        count: usize,
    },
}

fn parse_array(buffer: &mut BytesMut, limits: &Limits) -> Result<Parsed, RespError> {
    // First pass: validate and find the end without allocating, so that an incomplete request
    // costs nothing but the scan.
    let (end, count) = match scan_array(buffer, limits, |_, _| {})? {
        Scan::Incomplete => return Ok(Parsed::Incomplete),
        Scan::Complete { end, count } => (end, count),
    };
    let request = buffer.split_to(end).freeze();
    if count == 0 {
        return Ok(Parsed::Empty);
    }
    // Second pass over the same, now immutable, bytes: it finds the same `count` arguments.
    // The capacity is safe to reserve because all `count` arguments have arrived.
    let mut arguments = Vec::with_capacity(count);
    let rescan = scan_array(&request, limits, |start, stop| {
        arguments.push(request.slice(start..stop));
    })?;
    assert!(
        matches!(rescan, Scan::Complete { end: rescan_end, count: rescan_count }
            if rescan_end == end && rescan_count == count),
        "invariant: a rescan of a complete request finds the same request"
    );
    Ok(Parsed::Request(arguments))
}

/// Walks one array request at the front of `bytes`, calling `on_argument(start, stop)` for
/// each bulk string's payload range.
fn scan_array(
    bytes: &[u8],
    limits: &Limits,
    mut on_argument: impl FnMut(usize, usize),
) -> Result<Scan, RespError> {
    debug_assert_eq!(bytes.first(), Some(&b'*'));
    let Some(Header {
        number: count,
        end: mut position,
    }) = read_header(bytes, 0, limits)?
    else {
        return Ok(Scan::Incomplete);
    };
    let count = match count {
        None => return Err(RespError::InvalidMultibulkLength),
        // Redis treats `*0` and any negative count as an empty request.
        Some(count) if count <= 0 => {
            return Ok(Scan::Complete {
                end: position,
                count: 0,
            });
        }
        Some(count) => match usize::try_from(count) {
            Ok(count) if count <= limits.array_len_max => count,
            _ => return Err(RespError::InvalidMultibulkLength),
        },
    };
    for _ in 0..count {
        let Some(&kind) = bytes.get(position) else {
            return Ok(Scan::Incomplete);
        };
        if kind != b'$' {
            return Err(RespError::ExpectedBulk { got: kind });
        }
        let Some(Header {
            number: length,
            end: start,
        }) = read_header(bytes, position, limits)?
        else {
            return Ok(Scan::Incomplete);
        };
        let length = match length.map(usize::try_from) {
            Some(Ok(length)) if length <= limits.bulk_bytes_max => length,
            _ => return Err(RespError::InvalidBulkLength),
        };
        // Cannot overflow: `start` is within `bytes` and `length` is bounded by a limit.
        let stop = start + length;
        let next = stop + 2;
        if next > limits.request_bytes_max {
            return Err(RespError::RequestTooBig {
                request_bytes_max: limits.request_bytes_max,
            });
        }
        let Some(terminator) = bytes.get(stop..next) else {
            return Ok(Scan::Incomplete);
        };
        if terminator != b"\r\n" {
            return Err(RespError::MissingBulkTerminator);
        }
        on_argument(start, stop);
        position = next;
    }
    Ok(Scan::Complete {
        end: position,
        count,
    })
}

/// A `*N\r\n` or `$N\r\n` header line.
struct Header {
    /// The number, or `None` if it is not a canonical integer.
    number: Option<i64>,
    /// The position just past the line's `\r\n`.
    end: usize,
}

/// Reads the header line starting at `start`; `Ok(None)` if it has not fully arrived.
fn read_header(bytes: &[u8], start: usize, limits: &Limits) -> Result<Option<Header>, RespError> {
    let too_big = || {
        if bytes[start] == b'*' {
            RespError::TooBigMultibulkCount
        } else {
            RespError::TooBigBulkCount
        }
    };
    let rest = &bytes[start + 1..];
    let Some(carriage_return) = rest.iter().position(|&byte| byte == b'\r') else {
        if rest.len() > limits.inline_bytes_max {
            return Err(too_big());
        }
        return Ok(None);
    };
    if carriage_return > limits.inline_bytes_max {
        return Err(too_big());
    }
    let Some(&line_feed) = rest.get(carriage_return + 1) else {
        return Ok(None);
    };
    let number = if line_feed == b'\n' {
        parse_integer(&rest[..carriage_return])
    } else {
        None
    };
    Ok(Some(Header {
        number,
        end: start + 1 + carriage_return + 2,
    }))
}

/// Parses a canonical decimal `i64` the way Redis's `string2ll` does: an optional `-`, no `+`,
/// no leading zeros, no `-0`, no spaces, and no overflow. Redis uses the same rule for every
/// integer argument, so `command.rs` shares it.
#[must_use]
pub fn parse_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', digits @ ..] => (true, digits),
        digits => (false, digits),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut magnitude: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        0_i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn parse_inline(buffer: &mut BytesMut, limits: &Limits) -> Result<Parsed, RespError> {
    let Some(line_feed) = buffer.iter().position(|&byte| byte == b'\n') else {
        if buffer.len() > limits.inline_bytes_max {
            return Err(RespError::TooBigInlineRequest);
        }
        return Ok(Parsed::Incomplete);
    };
    if line_feed > limits.inline_bytes_max {
        return Err(RespError::TooBigInlineRequest);
    }
    let line = buffer.split_to(line_feed + 1);
    let words = split_words(&line[..line_feed], limits)?;
    if words.is_empty() {
        Ok(Parsed::Empty)
    } else {
        Ok(Parsed::Request(words))
    }
}

/// Splits an inline command into words with the quoting rules of Redis's `sdssplitargs`:
/// words are separated by whitespace; `"..."` understands `\n`, `\r`, `\t`, `\b`, `\a`,
/// `\xHH` and `\<any>`; `'...'` understands only `\'`; a closing quote must be followed by
/// whitespace or the end of the line.
fn split_words(line: &[u8], limits: &Limits) -> Result<Vec<Bytes>, RespError> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Double,
        Single,
    }
    let is_space = |byte: u8| matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut words = Vec::new();
    let mut position = 0;
    loop {
        while line.get(position).is_some_and(|&byte| is_space(byte)) {
            position += 1;
        }
        if position >= line.len() {
            return Ok(words);
        }
        if words.len() >= limits.array_len_max {
            return Err(RespError::TooBigInlineRequest);
        }
        let mut word = Vec::new();
        let mut quote = Quote::None;
        loop {
            let Some(&byte) = line.get(position) else {
                if quote != Quote::None {
                    return Err(RespError::UnbalancedQuotes);
                }
                break;
            };
            match quote {
                Quote::None => {
                    if is_space(byte) {
                        break;
                    }
                    match byte {
                        b'"' => quote = Quote::Double,
                        b'\'' => quote = Quote::Single,
                        _ => word.push(byte),
                    }
                    position += 1;
                }
                Quote::Double => match (byte, line.get(position + 1).copied()) {
                    (b'\\', Some(b'x')) => {
                        let high = line.get(position + 2).and_then(|&digit| hex_value(digit));
                        let low = line.get(position + 3).and_then(|&digit| hex_value(digit));
                        if let (Some(high), Some(low)) = (high, low) {
                            word.push(high * 16 + low);
                            position += 4;
                        } else {
                            word.push(b'x');
                            position += 2;
                        }
                    }
                    (b'\\', Some(escaped)) => {
                        word.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        position += 2;
                    }
                    (b'"', next) => {
                        if next.is_some_and(|next| !is_space(next)) {
                            return Err(RespError::UnbalancedQuotes);
                        }
                        position += 1;
                        break;
                    }
                    (other, _) => {
                        word.push(other);
                        position += 1;
                    }
                },
                Quote::Single => match (byte, line.get(position + 1).copied()) {
                    (b'\\', Some(b'\'')) => {
                        word.push(b'\'');
                        position += 2;
                    }
                    (b'\'', next) => {
                        if next.is_some_and(|next| !is_space(next)) {
                            return Err(RespError::UnbalancedQuotes);
                        }
                        position += 1;
                        break;
                    }
                    (other, _) => {
                        word.push(other);
                        position += 1;
                    }
                },
            }
        }
        words.push(Bytes::from(word));
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// How deeply reply arrays may nest; Chorus's replies nest at most twice.
const REPLY_DEPTH_MAX: usize = 8;

/// Parses ONE reply frame (as a server sends it) from the front of `buffer`, consuming it only
/// once it is complete. Returns `Ok(None)` while more bytes are needed.
///
/// # Errors
/// [`RespError`] on malformed input or a length over `limits`; the stream cannot be
/// resynchronized after that.
pub fn parse_reply(buffer: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, RespError> {
    match reply_at(buffer, 0, limits, 0)? {
        None => Ok(None),
        Some((frame, end)) => {
            let _ = buffer.split_to(end);
            Ok(Some(frame))
        }
    }
}

/// The line starting at `start` (without its CRLF) and the index after the CRLF.
fn reply_line<'a>(
    buffer: &'a [u8],
    start: usize,
    limits: &Limits,
) -> Result<Option<(&'a [u8], usize)>, RespError> {
    let rest = &buffer[start..];
    match rest.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], start + end + 2))),
        None if rest.len() > limits.inline_bytes_max => Err(RespError::TooBigInlineRequest),
        None => Ok(None),
    }
}

fn reply_at(
    buffer: &[u8],
    start: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<(Frame, usize)>, RespError> {
    if depth > REPLY_DEPTH_MAX {
        return Err(RespError::TooBigMultibulkCount);
    }
    let Some(&kind) = buffer.get(start) else {
        return Ok(None);
    };
    let Some((line, after)) = reply_line(buffer, start + 1, limits)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    match kind {
        b'+' => Ok(Some((Frame::Simple(text()), after))),
        b'-' => Ok(Some((Frame::Error(text()), after))),
        b':' => {
            let value = parse_integer(line).ok_or(RespError::InvalidBulkLength)?;
            Ok(Some((Frame::Integer(value), after)))
        }
        b'$' => {
            let length = parse_integer(line).ok_or(RespError::InvalidBulkLength)?;
            if length < 0 {
                return Ok(Some((Frame::Bulk(None), after)));
            }
            let length = usize::try_from(length).map_err(|_| RespError::InvalidBulkLength)?;
            if length > limits.bulk_bytes_max {
                return Err(RespError::TooBigBulkCount);
            }
            let end = after + length;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            if &buffer[end..end + 2] != b"\r\n" {
                return Err(RespError::MissingBulkTerminator);
            }
            let value = Bytes::copy_from_slice(&buffer[after..end]);
            Ok(Some((Frame::Bulk(Some(value)), end + 2)))
        }
        b'*' => {
            let count = parse_integer(line).ok_or(RespError::InvalidMultibulkLength)?;
            if count < 0 {
                return Ok(Some((Frame::Array(None), after)));
            }
            let count = usize::try_from(count).map_err(|_| RespError::InvalidMultibulkLength)?;
            if count > limits.array_len_max {
                return Err(RespError::TooBigMultibulkCount);
            }
            // Elements are pushed as they are parsed, so memory follows the bytes received.
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..count {
                match reply_at(buffer, at, limits, depth + 1)? {
                    Some((item, next)) => {
                        items.push(item);
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Array(Some(items)), at)))
        }
        other => Err(RespError::ExpectedBulk { got: other }),
    }
}

/// Encodes a request (an array of bulk strings), as a client sends it.
pub fn encode_request<A: AsRef<[u8]>>(arguments: &[A], out: &mut BytesMut) {
    let frame = Frame::Array(Some(
        arguments
            .iter()
            .map(|a| Frame::Bulk(Some(Bytes::copy_from_slice(a.as_ref()))))
            .collect(),
    ));
    encode(&frame, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::Prng;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(frame, &mut out);
        out.to_vec()
    }

    fn words(request: &[&str]) -> Vec<Bytes> {
        request
            .iter()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect()
    }

    fn resp(request: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", request.len()).into_bytes();
        for argument in request {
            out.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
            out.extend_from_slice(argument);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Parses every request in `bytes` at once, as a pipelined read would deliver them.
    fn parse_all(bytes: &[u8]) -> Result<(Vec<Vec<Bytes>>, usize), RespError> {
        let mut buffer = BytesMut::from(bytes);
        let mut requests = Vec::new();
        while let Some(request) = parse_request(&mut buffer, &Limits::default())? {
            requests.push(request);
        }
        Ok((requests, buffer.len()))
    }

    fn parse_error(bytes: &[u8]) -> RespError {
        parse_all(bytes).expect_err("malformed input must be rejected")
    }

    #[test]
    fn every_frame_type_encodes_as_redis_does() {
        assert_eq!(encoded(&Frame::ok()), b"+OK\r\n");
        assert_eq!(encoded(&Frame::simple("PONG")), b"+PONG\r\n");
        assert_eq!(
            encoded(&Frame::error("ERR", "syntax error")),
            b"-ERR syntax error\r\n"
        );
        assert_eq!(encoded(&Frame::integer(0)), b":0\r\n");
        assert_eq!(encoded(&Frame::integer(42)), b":42\r\n");
        assert_eq!(encoded(&Frame::integer(-7)), b":-7\r\n");
        assert_eq!(
            encoded(&Frame::integer(i64::MIN)),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(
            encoded(&Frame::integer(i64::MAX)),
            b":9223372036854775807\r\n"
        );
        assert_eq!(encoded(&Frame::bulk("VXK")), b"$3\r\nVXK\r\n");
        assert_eq!(encoded(&Frame::bulk("")), b"$0\r\n\r\n");
        assert_eq!(encoded(&Frame::bulk(&b"a\r\nb"[..])), b"$4\r\na\r\nb\r\n");
        assert_eq!(encoded(&Frame::null()), b"$-1\r\n");
        assert_eq!(encoded(&Frame::null_array()), b"*-1\r\n");
        assert_eq!(encoded(&Frame::array(vec![])), b"*0\r\n");
        // The reply redis-benchmark gets to `CONFIG GET save`, byte for byte from Redis 7.0.
        assert_eq!(
            encoded(&Frame::array(vec![Frame::bulk("save"), Frame::bulk("")])),
            b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
        );
        assert_eq!(
            encoded(&Frame::array(vec![
                Frame::integer(1),
                Frame::null(),
                Frame::array(vec![Frame::ok()]),
            ])),
            b"*3\r\n:1\r\n$-1\r\n*1\r\n+OK\r\n"
        );
    }

    #[test]
    fn line_breaks_in_simple_strings_and_errors_cannot_break_framing() {
        assert_eq!(encoded(&Frame::simple("a\r\nb")), b"+a  b\r\n");
        assert_eq!(encoded(&Frame::Error("ERR x\ny".into())), b"-ERR x y\r\n");
    }

    #[test]
    fn an_array_request_is_parsed_and_consumed() {
        let mut buffer = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..]);
        let request = parse_request(&mut buffer, &Limits::default()).expect("valid");
        assert_eq!(request, Some(words(&["GET", "k"])));
        assert!(buffer.is_empty());
    }

    #[test]
    fn bulk_strings_are_binary_safe() {
        let bytes = resp(&[b"SET", b"k", b"a\r\n\0\xffb"]);
        let (requests, left) = parse_all(&bytes).expect("valid");
        assert_eq!(left, 0);
        assert_eq!(&requests[0][2][..], b"a\r\n\0\xffb");
        let (requests, _) = parse_all(b"*1\r\n$0\r\n\r\n").expect("valid");
        assert_eq!(requests, vec![vec![Bytes::new()]]);
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_requests_and_consumes_nothing_early() {
        let mut stream = resp(&[b"SET", b"key:1", b"value"]);
        stream.extend_from_slice(b"GET  \"key:1\"\r\n");
        stream.extend_from_slice(&resp(&[b"MGET", b"a", b"", b"c"]));
        stream.extend_from_slice(b"*0\r\n\r\nPING\n");
        let (expected, _) = parse_all(&stream).expect("valid");
        assert_eq!(expected.len(), 4);

        let mut buffer = BytesMut::new();
        let mut requests = Vec::new();
        for &byte in &stream {
            buffer.put_u8(byte);
            let before = buffer.len();
            match parse_request(&mut buffer, &Limits::default()).expect("valid") {
                Some(request) => requests.push(request),
                // Only empty requests may be consumed without yielding one.
                None => assert!(buffer.len() == before || buffer.is_empty()),
            }
        }
        assert_eq!(requests, expected);
        assert!(buffer.is_empty());
    }

    #[test]
    fn pipelined_requests_in_one_buffer_come_out_in_order() {
        // What redis-benchmark -P 16 sends: many requests in one write.
        let mut stream = Vec::new();
        for index in 0..16 {
            stream.extend_from_slice(&resp(&[b"SET", format!("key:{index}").as_bytes(), b"VXK"]));
        }
        stream.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$5\r\nke"); // a partial request
        let (requests, left) = parse_all(&stream).expect("valid");
        assert_eq!(requests.len(), 16);
        for (index, request) in requests.iter().enumerate() {
            assert_eq!(request, &words(&["SET", &format!("key:{index}"), "VXK"]));
        }
        assert_eq!(left, b"*2\r\n$3\r\nGET\r\n$5\r\nke".len());
    }

    #[test]
    fn redis_benchmark_startup_is_two_config_gets_in_one_write() {
        let bytes = b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n\
                      *3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nappendonly\r\n";
        let (requests, left) = parse_all(bytes).expect("valid");
        assert_eq!(
            requests,
            vec![
                words(&["CONFIG", "GET", "save"]),
                words(&["CONFIG", "GET", "appendonly"])
            ]
        );
        assert_eq!(left, 0);
    }

    #[test]
    fn inline_commands_split_on_whitespace_and_understand_quotes() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"PING\r\n", &["PING"]),
            (b"PING\n", &["PING"]),
            (b"  set  k   v \t\r\n", &["set", "k", "v"]),
            (b"set k \"hello world\"\r\n", &["set", "k", "hello world"]),
            (b"echo \"a\\x41\\n\\t\\\"\"\r\n", &["echo", "aA\n\t\""]),
            (b"echo 'it\\'s'\r\n", &["echo", "it's"]),
            (b"echo 'no \\n escape'\r\n", &["echo", "no \\n escape"]),
            (b"echo \"\"\r\n", &["echo", ""]),
            (b"echo a\"b c\"\r\n", &["echo", "ab c"]),
            (b"echo \"\\xZZ\"\r\n", &["echo", "xZZ"]),
        ];
        for (line, expected) in cases {
            let (requests, left) = parse_all(line).expect("valid inline command");
            assert_eq!(requests, vec![words(expected)], "{line:?}");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn empty_requests_are_skipped() {
        let (requests, left) =
            parse_all(b"\r\n\n   \r\n*0\r\n*-1\r\n*-5\r\nPING\r\n").expect("valid");
        assert_eq!(requests, vec![words(&["PING"])]);
        assert_eq!(left, 0);
    }

    #[test]
    fn an_incomplete_request_leaves_the_buffer_untouched() {
        for partial in [
            &b"*"[..],
            b"*2",
            b"*2\r",
            b"*2\r\n",
            b"*2\r\n$",
            b"*2\r\n$3\r\nGE",
            b"*2\r\n$3\r\nGET\r",
            b"*2\r\n$3\r\nGET\r\n$1\r\nk",
            b"GET k",
            b"GET \"k",
        ] {
            let mut buffer = BytesMut::from(partial);
            assert_eq!(
                parse_request(&mut buffer, &Limits::default()),
                Ok(None),
                "{partial:?}"
            );
            assert_eq!(&buffer[..], partial);
        }
    }

    #[test]
    fn malformed_array_requests_are_protocol_errors_with_redis_wording() {
        let cases: &[(&[u8], &str)] = &[
            (b"*abc\r\n", "Protocol error: invalid multibulk length"),
            (b"*\r\n", "Protocol error: invalid multibulk length"),
            (b"*+1\r\n", "Protocol error: invalid multibulk length"),
            (b"*01\r\n", "Protocol error: invalid multibulk length"),
            (b"*1 \r\n", "Protocol error: invalid multibulk length"),
            (b"*1\rx", "Protocol error: invalid multibulk length"),
            (
                b"*99999999999999999999\r\n",
                "Protocol error: invalid multibulk length",
            ),
            (b"*1048577\r\n", "Protocol error: invalid multibulk length"),
            (b"*1\r\n+foo\r\n", "Protocol error: expected '$', got '+'"),
            (b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
            (b"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n$\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n$-2\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n$+4\r\n", "Protocol error: invalid bulk length"),
            (b"*1\r\n$04\r\n", "Protocol error: invalid bulk length"),
            (
                b"*1\r\n$16777217\r\n",
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$3\r\nfooXX",
                "Protocol error: expected '\\r\\n' after bulk string",
            ),
        ];
        for (bytes, message) in cases {
            let error = parse_error(bytes);
            assert_eq!(error.to_string(), *message, "{bytes:?}");
        }
    }

    #[test]
    fn malformed_inline_requests_are_protocol_errors_with_redis_wording() {
        for line in [
            &b"ping \"a b\r\n"[..],
            b"ping \"a\"b\r\n",
            b"ping 'a'b\r\n",
            b"ping 'a\r\n",
        ] {
            assert_eq!(parse_error(line), RespError::UnbalancedQuotes, "{line:?}");
        }
    }

    #[test]
    fn the_error_reply_is_err_protocol_error() {
        let mut out = BytesMut::new();
        encode(&RespError::InvalidBulkLength.to_frame(), &mut out);
        assert_eq!(&out[..], b"-ERR Protocol error: invalid bulk length\r\n");
    }

    #[test]
    fn announced_lengths_over_the_limits_are_rejected_before_the_payload_arrives() {
        let limits = Limits {
            bulk_bytes_max: 8,
            array_len_max: 2,
            inline_bytes_max: 16,
            request_bytes_max: 31,
        };
        let check = |bytes: &[u8], expected: RespError| {
            let mut buffer = BytesMut::from(bytes);
            assert_eq!(
                parse_request(&mut buffer, &limits),
                Err(expected),
                "{bytes:?}"
            );
        };
        check(b"*3\r\n", RespError::InvalidMultibulkLength);
        check(b"*1\r\n$9\r\n", RespError::InvalidBulkLength);
        check(
            b"*2\r\n$8\r\n12345678\r\n$8\r\n",
            RespError::RequestTooBig {
                request_bytes_max: 31,
            },
        );
        check(b"*11111111111111111", RespError::TooBigMultibulkCount);
        check(b"*1\r\n$11111111111111111", RespError::TooBigBulkCount);
        check(
            b"GET aaaaaaaaaaaaaaaaaaaaaaaa",
            RespError::TooBigInlineRequest,
        );
        check(
            b"GET aaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            RespError::TooBigInlineRequest,
        );
        check(b"a b c\r\n", RespError::TooBigInlineRequest);
        // At the limits exactly, requests are accepted.
        let mut buffer = BytesMut::from(&b"*2\r\n$8\r\n12345678\r\n$1\r\nx\r\n"[..]);
        assert!(matches!(parse_request(&mut buffer, &limits), Ok(Some(_))));
        let mut buffer = BytesMut::from(&b"a b\r\n"[..]);
        assert!(matches!(parse_request(&mut buffer, &limits), Ok(Some(_))));
    }

    #[test]
    fn default_limits_match_the_documented_values() {
        let limits = Limits::default();
        assert_eq!(limits.bulk_bytes_max, 16 << 20);
        assert_eq!(limits.array_len_max, 1 << 20);
        assert_eq!(limits.inline_bytes_max, 64 << 10);
        assert_eq!(limits.request_bytes_max, 64 << 20);
    }

    #[test]
    fn a_huge_announced_array_does_not_allocate_before_its_arguments_arrive() {
        // One header asking for the maximum number of arguments: nothing is allocated for
        // them, the parser just waits.
        let mut buffer = BytesMut::from(&b"*1048576\r\n$1\r\nx\r\n"[..]);
        assert_eq!(parse_request(&mut buffer, &Limits::default()), Ok(None));
    }

    #[test]
    fn integers_follow_redis_string2ll() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-1"), Some(-1));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"01",
            b"-0",
            b"-01",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_never_consume_a_request_twice() {
        let mut prng = Prng::new(0x5EED_4E5D);
        let limits = Limits {
            bulk_bytes_max: 64,
            array_len_max: 8,
            inline_bytes_max: 64,
            request_bytes_max: 256,
        };
        // Bytes that steer the parser into its interesting states more often than uniform
        // noise would.
        let alphabet = b"*$+-:\r\n0123456789 \"'\\xaZ";
        for _ in 0..20_000 {
            let length = prng.index(64);
            let mut bytes = Vec::with_capacity(length);
            for _ in 0..length {
                bytes.push(if prng.chance(0.8) {
                    alphabet[prng.index(alphabet.len())]
                } else {
                    (prng.next_u64() & 0xff) as u8
                });
            }
            let mut buffer = BytesMut::from(&bytes[..]);
            for _ in 0..=length {
                let before = buffer.len();
                match parse_request(&mut buffer, &limits) {
                    Ok(Some(request)) => {
                        assert!(!request.is_empty());
                        assert!(request.len() <= limits.array_len_max);
                        assert!(buffer.len() < before);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn random_valid_requests_round_trip_in_random_chunks() {
        let mut prng = Prng::new(7);
        for _ in 0..500 {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..prng.range(1, 6) {
                let request: Vec<Bytes> = (0..prng.range(1, 5))
                    .map(|_| {
                        let bytes: Vec<u8> = (0..prng.index(20))
                            .map(|_| (prng.next_u64() & 0xff) as u8)
                            .collect();
                        Bytes::from(bytes)
                    })
                    .collect();
                let slices: Vec<&[u8]> = request.iter().map(|argument| &argument[..]).collect();
                stream.extend_from_slice(&resp(&slices));
                expected.push(request);
            }
            let mut buffer = BytesMut::new();
            let mut requests = Vec::new();
            let mut position = 0;
            while position < stream.len() {
                let chunk = (prng.range(1, 16) as usize).min(stream.len() - position);
                buffer.extend_from_slice(&stream[position..position + chunk]);
                position += chunk;
                while let Some(request) =
                    parse_request(&mut buffer, &Limits::default()).expect("valid")
                {
                    requests.push(request);
                }
            }
            assert_eq!(requests, expected);
        }
    }

    #[test]
    fn replies_round_trip_through_encode_and_parse_reply_in_any_chunking() {
        let frames = vec![
            Frame::ok(),
            Frame::error("ERR", "no"),
            Frame::integer(-42),
            Frame::bulk(Bytes::from_static(b"a\r\nb")),
            Frame::null(),
            Frame::null_array(),
            Frame::array(vec![
                Frame::integer(1),
                Frame::array(vec![Frame::bulk(Bytes::from_static(b"x"))]),
            ]),
        ];
        let mut wire = BytesMut::new();
        for frame in &frames {
            encode(frame, &mut wire);
        }
        let wire = wire.freeze();
        for chunk in [1, 2, 3, 7, wire.len()] {
            let mut buffer = BytesMut::new();
            let mut parsed = Vec::new();
            for piece in wire.chunks(chunk) {
                buffer.extend_from_slice(piece);
                while let Some(frame) = parse_reply(&mut buffer, &Limits::default()).unwrap() {
                    parsed.push(frame);
                }
            }
            assert_eq!(parsed, frames, "chunk {chunk}");
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn encoded_requests_parse_back_as_requests() {
        let mut wire = BytesMut::new();
        encode_request(&["SET", "k", "v"], &mut wire);
        let request = parse_request(&mut wire, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            request,
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from_static(b"k"),
                Bytes::from_static(b"v")
            ]
        );
    }

    #[test]
    fn garbage_replies_never_panic() {
        let mut prng = Prng::new(77);
        for _ in 0..20_000 {
            let length = prng.index(40);
            let alphabet = b"+-:$*0123456789\r\nabc";
            let bytes: Vec<u8> = (0..length)
                .map(|_| alphabet[prng.index(alphabet.len())])
                .collect();
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = parse_reply(&mut buffer, &Limits::default()) {}
        }
    }
}
