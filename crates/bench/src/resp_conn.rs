//! A minimal asynchronous RESP connection: one request, one reply, in order.
//!
//! The benchmark talks to Redis and to Chorus's RESP port the way a plain Redis client does,
//! with no session and no retry, so this is all it needs: encode a request with
//! `chorus_resp`, write it, read until one reply parses. Every read is bounded by the parser's
//! limits, and a closed or garbled connection is an error (the caller reconnects).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use chorus_resp::{Frame, Limits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RespConnError {
    /// Connecting, writing or reading failed.
    #[error("{address}: {source}")]
    Io {
        /// The server.
        address: SocketAddr,
        /// What the socket said.
        source: std::io::Error,
    },
    /// The server closed the connection before replying.
    #[error("{0} closed the connection")]
    Closed(SocketAddr),
    /// The server's reply is not RESP.
    #[error("{address} sent a malformed reply: {message}")]
    Malformed {
        /// The server.
        address: SocketAddr,
        /// The parser's complaint.
        message: String,
    },
}

/// One connection to a RESP server.
#[derive(Debug)]
pub struct RespConnection {
    address: SocketAddr,
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
    limits: Limits,
}

impl RespConnection {
    /// Connects to `address` (with `TCP_NODELAY`, as every Redis client does).
    ///
    /// # Errors
    /// [`RespConnError::Io`] if the connection cannot be made.
    pub async fn connect(address: SocketAddr) -> Result<RespConnection, RespConnError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| RespConnError::Io { address, source })?;
        let _ = stream.set_nodelay(true);
        Ok(RespConnection {
            address,
            stream,
            read: BytesMut::with_capacity(4096),
            write: BytesMut::with_capacity(4096),
            limits: Limits::default(),
        })
    }

    /// The server this connection talks to.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends one request and waits for its reply. An error reply (`-ERR ...`) is a reply,
    /// returned as [`Frame::Error`].
    ///
    /// # Errors
    /// [`RespConnError`] when the connection fails or the reply is malformed; the connection
    /// should then be dropped.
    pub async fn request(&mut self, arguments: &[Bytes]) -> Result<Frame, RespConnError> {
        let address = self.address;
        self.write.clear();
        encode_request(arguments, &mut self.write);
        self.stream
            .write_all(&self.write)
            .await
            .map_err(|source| RespConnError::Io { address, source })?;
        loop {
            match parse_reply(&mut self.read, &self.limits) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => {
                    return Err(RespConnError::Malformed {
                        address,
                        message: error.to_string(),
                    });
                }
            }
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => return Err(RespConnError::Closed(address)),
                Ok(_) => {}
                Err(source) => return Err(RespConnError::Io { address, source }),
            }
        }
    }
}
