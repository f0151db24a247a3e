//! Probes over a connection to the pod, as the kubelet's prober does them
//! (`pkg/probe/{tcp,http}`): a TCP probe succeeds once a connection is
//! established; an HTTP probe sends one `GET` and succeeds on a status in
//! 200..400. The caller moves the bytes (on a node, over a [`Splice`] to
//! the pod's own address) and enforces the probe's timeout.
//!
//! [`Splice`]: crate::splice::Splice

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use skiff_kubelet::ProbeResult;

/// kube's probe User-Agent (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.33";
/// The most of a response head the prober reads (kube reads at most 10 KiB
/// of body; the status line comes first).
const MAX_HEAD: usize = 10 << 10;

/// The request an HTTP probe sends to `host:port` (`host` is the pod's
/// address unless a `Host` header overrides it, as in kube).
pub fn http_request(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let path = if path.starts_with('/') {
        String::from(path)
    } else {
        format!("/{path}")
    };
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("user-agent") {
        req.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        // A header the spec carries cannot break the request's framing.
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

/// Reads an HTTP probe's answer: `None` while the status line is not all
/// there; `eof`: the pod closed the connection.
pub fn http_result(response: &[u8], eof: bool) -> Option<ProbeResult> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(response) {
        Ok(_) if r.code.is_some() => {
            let code = r.code.unwrap_or(0);
            Some(if (200..400).contains(&code) {
                ProbeResult::Success
            } else {
                ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}"))
            })
        }
        // Too many headers for our array: the status line is what counts.
        Err(httparse::Error::TooManyHeaders) => {
            let line = response.split(|&b| b == b'\n').next().unwrap_or(&[]);
            let code = core::str::from_utf8(line)
                .ok()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|c| c.parse::<u16>().ok());
            Some(match code {
                Some(c) if (200..400).contains(&c) => ProbeResult::Success,
                Some(c) => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {c}")),
                None => ProbeResult::Failure("malformed HTTP response".into()),
            })
        }
        Err(e) => Some(ProbeResult::Failure(format!(
            "malformed HTTP response: {e}"
        ))),
        Ok(_) if eof => Some(ProbeResult::Failure(
            "the pod closed the connection before answering (EOF)".into(),
        )),
        Ok(_) if response.len() >= MAX_HEAD => {
            Some(ProbeResult::Failure("HTTP response head too long".into()))
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn the_request_is_kubes_with_the_specs_headers() {
        let req = http_request("10.244.0.2", 8080, "healthz", &[]);
        assert_eq!(
            core::str::from_utf8(&req).unwrap(),
            "GET /healthz HTTP/1.1\r\nHost: 10.244.0.2:8080\r\nUser-Agent: kube-probe/1.33\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        let req = http_request(
            "10.244.0.2",
            80,
            "/ready?x=1",
            &[
                ("Host".into(), "app.example".into()),
                ("X-Evil".into(), "a\r\nInjected: yes".into()),
                ("X-Ok".into(), "1".into()),
            ],
        );
        let text = core::str::from_utf8(&req).unwrap();
        assert!(text.starts_with("GET /ready?x=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nHost: app.example\r\n"), "{text}");
        assert!(!text.contains("10.244.0.2"), "{text}");
        assert!(!text.contains("Injected"), "{text}");
        assert!(text.contains("\r\nX-Ok: 1\r\n"), "{text}");
    }

    #[test]
    fn statuses_200_to_399_succeed_and_others_fail_with_kubes_message() {
        let ok = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(http_result(ok, false), Some(ProbeResult::Success));
        assert_eq!(
            http_result(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", false),
            Some(ProbeResult::Success)
        );
        assert_eq!(
            http_result(b"HTTP/1.0 500 Internal Server Error\r\n\r\nboom", true),
            Some(ProbeResult::Failure(
                "HTTP probe failed with statuscode: 500".into()
            ))
        );
        // Incomplete: wait, unless the pod closed.
        assert_eq!(http_result(b"HTTP/1.1 20", false), None);
        assert!(matches!(
            http_result(b"HTTP/1.1 20", true),
            Some(ProbeResult::Failure(m)) if m.contains("EOF")
        ));
        assert!(matches!(
            http_result(b"SSH-2.0-OpenSSH\r\n", false),
            Some(ProbeResult::Failure(m)) if m.contains("malformed")
        ));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(http_result(&many, false), Some(ProbeResult::Success));
        // Once the status line is in, the rest of the head does not matter.
        let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        head.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        assert_eq!(http_result(&head, false), Some(ProbeResult::Success));
        // A head that never completes decides instead of waiting forever.
        let mut head = b"HTTP/1.1 ".to_vec();
        head.extend_from_slice(&vec![b' '; MAX_HEAD]);
        assert!(http_result(&head, false).is_some());
    }
}
