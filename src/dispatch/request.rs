//! One HTTP exchange with a provider: the request (headers, the key in its
//! header, the body), the answer's status classified into a
//! [`DispatchError`], and bodies read under their size bounds.
//!
//! Redirects are never followed (the client is built without them): a 3xx
//! is an error naming where it pointed. Error bodies are read only up to
//! [`SizeLimits::error_bytes`](super::SizeLimits), and what is shown of
//! them is redacted of the key (see [`super::secret`]).

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::config::Timeouts;
use super::error::{DispatchError, ErrorKind, TimeoutKind};
use super::response::Response;
use super::secret::{ApiKey, redact};
use super::{Inner, Prepared, Target, retry, wire};

/// Sends one request; a non-2xx answer becomes its classified error.
pub(crate) async fn post(
    client: &Inner,
    target: &Target,
    prepared: &Prepared,
) -> Result<reqwest::Response, DispatchError> {
    let config = &target.provider.config;
    let provider = &target.provider.name;
    let mut headers = HeaderMap::new();
    for (k, v) in &config.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            DispatchError::config(format!("provider `{provider}`: bad header name `{k}`"))
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            DispatchError::config(format!("provider `{provider}`: bad value for header `{k}`"))
        })?;
        headers.insert(name, value);
    }
    let format = wire::wire(config.kind);
    format.headers(&mut headers);
    if let Some(key) = &prepared.key {
        let (name, value) = match &config.auth_header {
            Some(h) => (h.clone(), key.expose().to_owned()),
            None => {
                let (name, value) = format.auth(key.expose());
                (name.to_owned(), value)
            }
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            DispatchError::config(format!("provider `{provider}`: bad auth_header name"))
        })?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            DispatchError::config(format!(
                "provider `{provider}`: the API key holds characters a header cannot carry"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let body = serde_json::to_vec(&prepared.body)
        .map_err(|e| DispatchError::config(format!("cannot encode the request: {e}")))?;
    let res = client
        .http
        .post(format.endpoint(&config.base_url))
        .query(&config.query)
        .headers(headers)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(provider, &e, prepared.key.as_ref(), &client.timeouts))?;
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    if status.is_redirection() {
        return Err(redirect_error(provider, &res, prepared.key.as_ref()));
    }
    let retry_after = retry::retry_after(res.headers(), SystemTime::now());
    // Only the start of an error body is read: its message is all we
    // keep, and a hostile endpoint may send gigabytes.
    let (body, cut) = read_capped(res, client.sizes.error_bytes)
        .await
        .unwrap_or_default();
    let message = redact(&wire::error_message(&body), prepared.key.as_ref(), cut);
    Err(classify(provider, status.as_u16(), retry_after, message))
}

/// One non-streamed attempt: the request and its whole answer, under the
/// whole-request timeout and the answer's size bound.
pub(crate) async fn whole(
    client: &Inner,
    target: &Target,
    prepared: &Prepared,
) -> Result<Response, DispatchError> {
    let provider = &target.provider.name;
    let timeout = client.timeouts.request;
    let work = async {
        let res = post(client, target, prepared).await?;
        let limit = client.sizes.response_bytes;
        let bytes = match read_capped(res, limit).await {
            Ok((bytes, false)) => bytes,
            Ok((_, true)) => {
                return Err(DispatchError::stream(
                    provider,
                    format!("the answer is over SizeLimits::response_bytes ({limit} bytes)"),
                    Response::default(),
                ));
            }
            Err(e) => {
                return Err(transport_error(
                    provider,
                    &e,
                    prepared.key.as_ref(),
                    &client.timeouts,
                ));
            }
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            DispatchError::stream(
                provider,
                format!("the response is not valid JSON: {e}"),
                Response::default(),
            )
        })?;
        wire::wire(target.provider.config.kind)
            .response(&value)
            .map_err(|message| DispatchError::stream(provider, message, Response::default()))
    };
    within_request(provider, timeout, work).await
}

/// The error an HTTP status stands for: 401 and 403 authentication; 408
/// and 409 retryable; 429 rate limited; 5xx (and 529) unavailable; any
/// other status a rejected request.
fn classify(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    message: String,
) -> DispatchError {
    let kind = match status {
        401 | 403 => ErrorKind::Authentication,
        408 | 409 => ErrorKind::Retryable,
        429 => return DispatchError::rate_limited(provider, retry_after, message),
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::InvalidRequest,
    };
    DispatchError::from_provider(kind, provider, Some(status), message)
}

/// Reads a body, at most `limit` bytes of it: the bytes, and whether
/// there was more (the rest is not read).
pub(crate) async fn read_capped(
    mut res: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    if res.content_length().is_some_and(|n| n > limit as u64) {
        // Read what the cap allows of it anyway: an error body's start
        // holds its message.
        out.reserve(limit.min(1 << 20));
    }
    while let Some(chunk) = res.chunk().await? {
        let room = limit - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false))
}

/// A 3xx answer: where it pointed (scheme, host, port and path; no query,
/// fragment or credentials), as an error.
fn redirect_error(provider: &str, res: &reqwest::Response, key: Option<&ApiKey>) -> DispatchError {
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| res.url().join(l).ok())
        .map(|mut url| {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        });
    let to = location.map_or_else(
        || "nowhere (no Location)".to_owned(),
        |l| redact(&l, key, false),
    );
    DispatchError::from_provider(
        ErrorKind::InvalidRequest,
        provider,
        Some(status),
        format!(
            "the provider redirected to {to}; redirects are not followed (they would carry the \
             API key and the prompt elsewhere): set the provider's base_url to the new address"
        ),
    )
}

pub(crate) fn transport_error(
    provider: &str,
    e: &reqwest::Error,
    key: Option<&ApiKey>,
    timeouts: &Timeouts,
) -> DispatchError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let message = redact(&message, key, false);
    if e.is_timeout() {
        let (kind, after) = if e.is_connect() {
            (TimeoutKind::Connect, timeouts.connect)
        } else {
            (TimeoutKind::Request, timeouts.request)
        };
        return DispatchError::timed_out(provider, kind, after);
    }
    DispatchError::from_provider(ErrorKind::Retryable, provider, None, message)
}

/// `work` under the request timeout: running out of it is a classified
/// [`ErrorKind::Timeout`] error.
pub(crate) async fn within_request<T>(
    provider: &str,
    after: Duration,
    work: impl std::future::Future<Output = Result<T, DispatchError>>,
) -> Result<T, DispatchError> {
    tokio::time::timeout(after, work).await.unwrap_or_else(|_| {
        Err(DispatchError::timed_out(
            provider,
            TimeoutKind::Request,
            after,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status classes the retry loop and callers act on (OpenAI's and
    /// Anthropic's error code tables: 401/403 auth, 408/409 transient,
    /// 429 rate limits, 5xx and Anthropic's 529 overloaded).
    #[test]
    fn statuses_are_classified_as_documented() {
        for (status, kind) in [
            (400, ErrorKind::InvalidRequest),
            (401, ErrorKind::Authentication),
            (403, ErrorKind::Authentication),
            (404, ErrorKind::InvalidRequest),
            (408, ErrorKind::Retryable),
            (409, ErrorKind::Retryable),
            (413, ErrorKind::InvalidRequest),
            (422, ErrorKind::InvalidRequest),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Unavailable),
            (503, ErrorKind::Unavailable),
            (529, ErrorKind::Unavailable),
        ] {
            let e = classify("p", status, None, "m".into());
            assert_eq!(e.kind(), kind, "{status}");
            assert_eq!(e.status(), Some(status), "{status}");
        }
        let e = classify("p", 429, Some(Duration::from_secs(7)), "slow down".into());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }
}
