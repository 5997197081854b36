//! Writing the answers the proxy makes itself (pages, NIP-11, refusals, push results) to a
//! pingora session, always with the CORS headers.

use bytes::Bytes;
use grasp_lib::web::{self, WebResponse};
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Adds the CORS headers every answer carries, forwarded ones included.
pub fn add_cors(header: &mut ResponseHeader) -> pingora::Result<()> {
    for (name, value) in web::CORS_HEADERS {
        header.insert_header(name, value)?;
    }
    Ok(())
}

/// The header of `response` with CORS added and, when the body is known, its length.
pub fn header(response: &http::response::Parts, length: Option<usize>) -> pingora::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 6))?;
    for (name, value) in &response.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    add_cors(&mut header)?;
    if let Some(length) = length.filter(|_| response.status != StatusCode::NO_CONTENT) {
        header.set_content_length(length)?;
    }
    Ok(header)
}

/// Sends `response` as the complete answer to the request.
pub async fn send(session: &mut Session, response: WebResponse) -> pingora::Result<()> {
    let (parts, body) = response.into_parts();
    let header = header(&parts, Some(body.len()))?;
    session.write_response_header(Box::new(header), false).await?;
    let body = if session.req_header().method == Method::HEAD { Bytes::new() } else { body };
    session.write_response_body(Some(body), true).await
}
