//! The built-in web dashboard, served by the API server at `/ui/`.
//!
//! It is three static files compiled into the binary (`assets/`): an HTML
//! shell, one script and one stylesheet, no framework and nothing from a
//! CDN. They hold no cluster data, so the API server serves them before
//! authentication; the script then reads and changes the cluster only
//! through the Kubernetes API, as the signed-in user (the bearer token they
//! typed, kept in the tab's `sessionStorage`, or the browser's client
//! certificate), so RBAC applies to every page and every button exactly as
//! to kubectl. A token is sent only in the `Authorization` header, never in
//! a cookie, so another site cannot make the browser act with it.
//!
//! Everything the API returns is put on the page as text, never as markup,
//! and the Content-Security-Policy allows only these files' own script and
//! style: a pod's log line or an object's name cannot run script.

use http::{Method, Response, StatusCode, header};

/// Where the dashboard lives on the API server.
pub const PREFIX: &str = "/ui";

/// Only the dashboard's own files may run or style the page, it may talk
/// only to its own origin (the API), and no other site may frame it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../assets/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
];

/// The answer to a request for `path` if it is the dashboard's (`/ui`,
/// `/ui/...`), `None` for every other path. `/ui` redirects to `/ui/`; a
/// file that does not exist is 404 and a method other than GET or HEAD 405,
/// each with a plain-text reason.
pub fn serve(method: &Method, path: &str) -> Option<Response<&'static [u8]>> {
    let rest = path.strip_prefix(PREFIX)?;
    let file = match rest {
        "" => return Some(redirect(&format!("{PREFIX}/"))),
        r => r.strip_prefix('/')?,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            b"the dashboard's files are read-only: use GET\n",
        ));
    }
    // The page's own routes live after `#`, which browsers never send, so
    // every file is named here.
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return Some(plain(StatusCode::NOT_FOUND, b"no such dashboard file\n"));
    };
    let body = if method == Method::HEAD {
        b""
    } else {
        asset.body
    };
    Some(
        with_headers(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, asset.content_type),
        )
        .body(body)
        .expect("static headers are valid"),
    )
}

fn redirect(to: &str) -> Response<&'static [u8]> {
    with_headers(
        Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, to),
    )
    .body(&b""[..])
    .expect("static headers are valid")
}

fn plain(status: StatusCode, body: &'static [u8]) -> Response<&'static [u8]> {
    with_headers(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8"),
    )
    .body(body)
    .expect("static headers are valid")
}

fn with_headers(b: http::response::Builder) -> http::response::Builder {
    b.header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::REFERRER_POLICY, "no-referrer")
        // A new server version's files must not be mixed with cached ones.
        .header(header::CACHE_CONTROL, "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<Response<&'static [u8]>> {
        serve(&Method::GET, path)
    }

    #[test]
    fn other_paths_are_not_the_dashboards() {
        for p in ["/", "/api/v1/pods", "/uix", "/ui-x/", "/metrics"] {
            assert!(get(p).is_none(), "{p}");
        }
    }

    #[test]
    fn the_shell_script_and_style_are_served_with_their_types() {
        for (p, ty) in [
            ("/ui/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ] {
            let r = get(p).unwrap();
            assert_eq!(r.status(), 200, "{p}");
            let ct = r.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert!(ct.starts_with(ty), "{p}: {ct}");
            assert!(!r.body().is_empty(), "{p}");
        }
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        for p in ["/ui", "/ui/", "/ui/app.js", "/ui/nope", "/ui/../etc/passwd"] {
            let r = get(p).unwrap();
            let h = r.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        }
    }

    #[test]
    fn the_bare_prefix_redirects_and_unknown_files_are_404() {
        let r = get("/ui").unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()[header::LOCATION], "/ui/");
        for p in [
            "/ui/nope",
            "/ui/../etc/passwd",
            "/ui/app.js/",
            "/ui/index.html",
        ] {
            assert_eq!(get(p).unwrap().status(), 404, "{p}");
        }
    }

    #[test]
    fn writes_are_refused_and_head_has_no_body() {
        let r = serve(&Method::POST, "/ui/").unwrap();
        assert_eq!(r.status(), 405);
        let r = serve(&Method::HEAD, "/ui/app.js").unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.body().is_empty());
    }

    /// The policy is only worth something if the page obeys it: no inline
    /// script or style, and markup is never built from strings.
    #[test]
    fn the_page_has_no_inline_script_or_style_and_builds_no_markup_from_text() {
        let html = std::str::from_utf8(get("/ui/").unwrap().body()).unwrap();
        assert!(html.contains(r#"<script src="app.js" defer></script>"#));
        assert!(!html.contains("<script>") && !html.contains("style="));
        let handler = html.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "no inline event handlers");
        let js = std::str::from_utf8(get("/ui/app.js").unwrap().body()).unwrap();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
    }
}
