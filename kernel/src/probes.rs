//! The node's prober: kubelet probes against a pod's own address. Every
//! pod of this node is reachable without the wire, so a probe is a
//! connection spliced in memory to the container's listener (`pods.rs`),
//! coming from the node's address as kube's probes do; the TCP and HTTP
//! semantics are `skiff_node_agent::probe`'s.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::ToString as _;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use skiff_kubelet::{ProbeId, ProbeResult, ProbeTarget, Prober};
use skiff_node_agent::probe;
use skiff_node_agent::splice::Splice;
use skiff_node_proto::{HttpScheme, ProbeHandler};
use skiff_wasm::NetError;

use crate::net;
use crate::pods::{self, Shared};

enum Live {
    Done(ProbeResult),
    Http { conn: Splice, response: Vec<u8> },
}

pub struct KernelProber {
    shared: Arc<spin::Mutex<Shared>>,
    live: BTreeMap<u64, Live>,
}

impl KernelProber {
    pub fn new(runtime: &pods::PodRuntime) -> Self {
        Self {
            shared: runtime.wasm.node().shared(),
            live: BTreeMap::new(),
        }
    }

    fn begin(&mut self, t: &ProbeTarget<'_>) -> Live {
        let ip = t
            .pod_ip
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .or_else(net::address);
        let Some(ip) = ip else {
            return Live::Done(ProbeResult::Failure("the pod has no address yet".into()));
        };
        let port = match t.handler {
            ProbeHandler::TcpSocket { port } | ProbeHandler::HttpGet { port, .. } => *port,
        };
        let to = SocketAddrV4::new(ip, port);
        let from = net::address().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let conn = match pods::connect_local(&self.shared, from, to) {
            Ok(c) => c,
            Err(NetError::Refused) => {
                return Live::Done(ProbeResult::Failure(format!(
                    "dial tcp {to}: connect: connection refused"
                )));
            }
            Err(_) => {
                return Live::Done(ProbeResult::Failure(format!(
                    "dial tcp {to}: no route to host (not an address of this node)"
                )));
            }
        };
        match t.handler {
            // Connected: done; the pod sees an orderly close, as from kube.
            ProbeHandler::TcpSocket { .. } => {
                conn.shutdown();
                Live::Done(ProbeResult::Success)
            }
            ProbeHandler::HttpGet {
                scheme: HttpScheme::Https,
                ..
            } => Live::Done(ProbeResult::Failure(
                "HTTPS probes are not supported on Skiff nodes yet".into(),
            )),
            ProbeHandler::HttpGet { path, headers, .. } => {
                let req = probe::http_request(&ip.to_string(), port, path, headers);
                // A request this small always fits the empty queue.
                match conn.send(&req) {
                    Ok(Some(n)) if n == req.len() => Live::Http {
                        conn,
                        response: Vec::new(),
                    },
                    _ => Live::Done(ProbeResult::Failure(format!(
                        "write to {to}: connection reset by peer"
                    ))),
                }
            }
        }
    }
}

impl Prober for KernelProber {
    fn start(&mut self, id: ProbeId, target: &ProbeTarget<'_>) {
        let live = self.begin(target);
        if matches!(live, Live::Http { .. }) {
            self.shared.lock().probes += 1;
        }
        self.live.insert(id.0, live);
    }

    fn poll(&mut self, id: ProbeId) -> Option<ProbeResult> {
        let result = match self.live.get_mut(&id.0)? {
            Live::Done(r) => r.clone(),
            Live::Http { conn, response } => {
                let mut buf = [0u8; 1024];
                let mut eof = false;
                loop {
                    match conn.recv(&mut buf) {
                        Ok(Some(0)) | Err(_) => {
                            eof = true;
                            break;
                        }
                        Ok(Some(n)) => response.extend_from_slice(&buf[..n]),
                        Ok(None) => break,
                    }
                }
                probe::http_result(response, eof)?
            }
        };
        self.cancel(id);
        Some(result)
    }

    fn cancel(&mut self, id: ProbeId) {
        if let Some(Live::Http { conn, .. }) = self.live.remove(&id.0) {
            conn.shutdown();
            self.shared.lock().probes -= 1;
            pods::spliced_activity();
        }
    }
}
