//! The status page on the public API: an HTML document, its script and its style sheet.
//!
//! # Design
//! The page draws what it reads from the public routes and the event stream. No build step and
//! nothing from elsewhere: the files in `status/`, embedded in the binary, are served as
//! written. The page runs under a Content-Security-Policy that lets it load only its own script
//! and style sheet and talk only to this API (the event stream included), so nothing on it is
//! inline, and everything it shows from the API is written as text, never as markup. Every
//! answer says `no-cache`: a browser revalidates, so a new binary's page never runs an old
//! script.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Method and path of every route [`routes`] serves.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/status"),
    ("GET", "/status.js"),
    ("GET", "/status.css"),
];

/// What the page may load: its own script and style sheet, requests and WebSockets to this
/// API, and the empty icon written in the page (so the browser does not ask for
/// `/favicon.ico`); no inline script or style, no plugins, no forms, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The document.
const HTML: &str = include_str!("status/status.html");
/// Its script: polling, the event stream, the charts.
const SCRIPT: &str = include_str!("status/status.js");
/// Its style sheet.
const STYLE: &str = include_str!("status/status.css");

/// The page's routes; they read no state, so they fit any router's.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/status") }))
        .route(
            "/status",
            get(|| async { asset(HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/status.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/status.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

/// One embedded file with its content type and the page's headers.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower_service::Service;

    use super::*;

    /// Largest body read back in these tests, bytes.
    const MAX_BODY_BYTES: usize = 1 << 20;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::get(path).body(Body::empty()).expect("a request");
        let response = routes::<()>()
            .call(request)
            .await
            .expect("the router answers");
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, MAX_BODY_BYTES).await.expect("a body");
        let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
        (parts.status, parts.headers, text)
    }

    #[tokio::test]
    async fn each_file_is_served_with_its_type_no_cache_and_the_policy() {
        for (path, content_type, body) in [
            ("/status", "text/html; charset=utf-8", HTML),
            ("/status.js", "text/javascript; charset=utf-8", SCRIPT),
            ("/status.css", "text/css; charset=utf-8", STYLE),
        ] {
            let (status, headers, text) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(text, body, "{path}");
        }
    }

    #[tokio::test]
    async fn the_root_redirects_to_the_status_page() {
        let (status, headers, _) = get("/").await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/status");
    }

    #[test]
    fn the_policy_allows_only_this_origin_and_no_inline_code() {
        let directives: Vec<&str> = CONTENT_SECURITY_POLICY.split("; ").collect();
        for needed in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(directives.contains(&needed), "missing `{needed}`");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains("http"));
    }

    #[test]
    fn the_page_holds_nothing_the_policy_would_block_and_loads_nothing_from_elsewhere() {
        assert_eq!(
            HTML.matches("<script").count(),
            HTML.matches("<script type=\"module\" src=\"/status.js\"></script>")
                .count(),
            "every script is the page's own file, with no inline code"
        );
        assert!(HTML.contains("<link rel=\"stylesheet\" href=\"/status.css\">"));
        assert!(!HTML.contains("<style"), "no inline style sheet");
        assert!(!HTML.contains(" style="), "no inline style attribute");
        let handlers = HTML
            .split(" on")
            .skip(1)
            .filter(|rest| {
                let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
                name > 0 && rest[name..].starts_with('=')
            })
            .count();
        assert_eq!(handlers, 0, "no inline event handler");
        for (name, text) in [
            ("status.html", HTML),
            ("status.js", SCRIPT),
            ("status.css", STYLE),
        ] {
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{name} refers to another origin"
            );
        }
        assert!(
            !SCRIPT.contains("innerHTML"),
            "API text is never parsed as markup"
        );
        assert!(!SCRIPT.contains("eval("), "no code from strings");
    }

    #[test]
    fn every_element_the_script_looks_up_is_in_the_page() {
        let ids: Vec<&str> = SCRIPT
            .split("byId('")
            .skip(1)
            .filter_map(|rest| rest.split_once('\'').map(|(id, _)| id))
            .collect();
        assert!(ids.len() > 10, "the script looks up its elements by id");
        for id in ids {
            assert!(
                HTML.contains(&format!("id=\"{id}\"")),
                "the script looks up #{id}, which status.html lacks"
            );
        }
    }
}
