//! What the routes share with the listener and with each other: the client's address the
//! listener hands the routes, and library responses and request bodies in warp's types.

use std::net::SocketAddr;

use bytes::Bytes;
use grasp_lib::web::WebResponse;
use warp::reply::Response;

/// The TCP peer of a request, for routes that need the client address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A library response as a warp response.
pub fn reply(response: WebResponse) -> Response {
    response.map(Into::into)
}

/// Bytes of a body chunk, whatever buffer type warp hands out.
pub fn chunk_bytes(mut chunk: impl warp::Buf) -> Bytes {
    chunk.copy_to_bytes(chunk.remaining())
}
