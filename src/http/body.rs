//! Reading request bodies: JSON content types and a hard size limit (413, never truncation).

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::{ApiProblem, ProblemKind};
use crate::serve::BodyTimeout;

/// Refuses anything but `application/json` (or `application/*+json`) in UTF-8.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiProblem> {
    let refuse = |got: &str| {
        ApiProblem::new(
            ProblemKind::UnsupportedMediaType,
            format!("send Content-Type: application/json (got {got})"),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(refuse("no Content-Type"));
    };
    let text = value
        .to_str()
        .map_err(|_| refuse("an unreadable Content-Type"))?;
    let mime: mime::Mime = text.parse().map_err(|_| refuse(text))?;
    let json = mime.type_() == mime::APPLICATION
        && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
    let utf8 = mime
        .get_param(mime::CHARSET)
        .is_none_or(|c| c.as_str().eq_ignore_ascii_case("utf-8"));
    if json && utf8 {
        Ok(())
    } else {
        Err(refuse(text))
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes (413), or when it
/// does not arrive within the server's body timeout (408).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiProblem> {
    let too_large = || {
        ApiProblem::new(
            ProblemKind::PayloadTooLarge,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let e = e.into_inner();
            match e.downcast_ref::<BodyTimeout>() {
                Some(timeout) => ApiProblem::new(ProblemKind::RequestTimeout, timeout.to_string()),
                None => ApiProblem::new(
                    ProblemKind::BadRequest,
                    format!("the body could not be read: {e}"),
                ),
            }
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The start of a body, as text, for the record of a refused request.
pub fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 2048;
    let cut = &body[..body.len().min(MAX)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > MAX {
        text.push('…');
    }
    text
}
