//! What a request must be before any route sees it: addressed to this
//! server by a name a web page cannot take over, sent by this server's own
//! pages (or by a program that is not a browser), and JSON when it has a
//! body.
//!
//! The dev server has no authentication, so the browser is the threat: a
//! page on another site can make the user's browser send requests to
//! `127.0.0.1`. Two checks stop it.
//!
//! - **DNS rebinding.** A page at `evil.example` re-points its own name to
//!   127.0.0.1; its requests then reach us as same-origin requests whose
//!   `Host` is `evil.example:PORT`. Only these `Host` names are accepted:
//!   IP literals (a page can only be at an IP literal if the user opened
//!   it there), `localhost` and names under `.localhost` (RFC 6761: they
//!   never resolve off the machine), and the names the operator allows
//!   ([`Options::allow_host`](super::Options::allow_host)). Anything else
//!   is 403, before routing.
//! - **Cross-site requests.** A page anywhere can POST a form or a
//!   `text/plain` body to us without a CORS preflight. Requests whose
//!   `Origin` is not `http(s)://` + their own `Host` are 403, and a request
//!   with a body on an `/api/` route must be `application/json` (415
//!   otherwise), which no cross-site page can send without a preflight we
//!   never grant.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::api_error;

/// The `Host` names accepted besides IP literals and `localhost`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hosts {
    /// Lowercase names, without port.
    pub extra: Vec<String>,
}

impl Hosts {
    /// Whether a `Host` header value names this server.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        literal.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.extra.contains(&name)
    }
}

/// The name part of a `Host` value: `[::1]:80` -> `[::1]`, `a:80` -> `a`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        // An unclosed bracket names nothing.
        return host.find(']').map_or("", |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The checks of the module docs, as axum middleware.
pub(crate) async fn check(State(hosts): State<Hosts>, request: Request, next: Next) -> Response {
    if let Some(refused) = refusal(
        &hosts,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        return refused;
    }
    next.run(request).await
}

/// The answer to a request the checks refuse; `None` lets it through.
fn refusal(hosts: &Hosts, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !hosts.allows(host) {
        return Some(api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "Host `{}` does not name this server; use http://127.0.0.1 or http://localhost \
                 (a remote name must be allowed with --allow-host)",
                host.chars().take(100).collect::<String>()
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = |scheme: &str| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host.trim()))
        };
        // The server speaks plain HTTP: its own pages send `http://`. An
        // `https://` origin can only come through a TLS proxy, which only a
        // name allowed with --allow-host can be behind.
        let proxied = hosts
            .extra
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host_name(host)));
        if !(own("http://") || (proxied && own("https://"))) {
            return Some(api_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "cross-site request refused: Origin `{}` is not this server's own",
                    origin.chars().take(100).collect::<String>()
                ),
            ));
        }
    }
    // The routes that take a body are POST /api/render, /api/diff and
    // /api/test; any other method gets the router's 405, whatever its body.
    if path.starts_with("/api/") && *method == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Some(api_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported media type",
                "the request body must be JSON, sent with `Content-Type: application/json`".into(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn status(hosts: &Hosts, method: Method, path: &str, pairs: &[(&str, &str)]) -> u16 {
        refusal(hosts, &method, path, &headers(pairs)).map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn hosts_a_web_page_cannot_take_over_are_accepted() {
        let hosts = Hosts {
            extra: vec!["devbox.internal".into()],
        };
        for ok in [
            "127.0.0.1:7878",
            "127.0.0.1",
            "localhost:7878",
            "LOCALHOST",
            "app.localhost:1",
            "[::1]:7878",
            "[::1]",
            "10.0.0.5:7878",
            "devbox.internal:7878",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example:7878",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io:7878",
            "devbox.internal.evil:1",
            "[::1",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }

    #[test]
    fn rebinding_cross_site_and_non_json_requests_are_refused() {
        let h = Hosts::default();
        let host = ("host", "127.0.0.1:7878");
        assert_eq!(status(&h, Method::GET, "/api/templates", &[host]), 200);
        assert_eq!(
            status(
                &h,
                Method::GET,
                "/api/templates",
                &[("host", "evil.example:7878")]
            ),
            403
        );
        assert_eq!(status(&h, Method::GET, "/", &[]), 403, "no Host");
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(status(&h, Method::POST, "/api/render", &[host, json]), 200);
        assert_eq!(
            status(
                &h,
                Method::POST,
                "/api/render",
                &[host, json, ("origin", "http://127.0.0.1:7878")]
            ),
            200
        );
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:7878",
        ] {
            assert_eq!(
                status(
                    &h,
                    Method::POST,
                    "/api/render",
                    &[host, json, ("origin", origin)]
                ),
                403,
                "{origin}"
            );
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                status(
                    &h,
                    Method::POST,
                    "/api/render",
                    &[host, ("content-type", ct)]
                ),
                415,
                "{ct}"
            );
        }
        assert_eq!(status(&h, Method::POST, "/api/render", &[host]), 415);
    }
}
