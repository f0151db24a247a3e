//! Example messages covering every variant, for round-trip tests here and in
//! peers (gateway, hollow nodes) and as fuzzing seeds.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::*;

fn s(v: &str) -> String {
    v.to_string()
}

/// A pod exercising most spec fields.
pub fn pod(uid: &str, name: &str) -> PodSpec {
    let probe = Probe {
        handler: ProbeHandler::HttpGet {
            port: 8080,
            path: s("/healthz"),
            scheme: HttpScheme::Http,
            headers: vec![(s("X-Probe"), s("1"))],
        },
        initial_delay_secs: 0,
        period_secs: 10,
        timeout_secs: 1,
        success_threshold: 1,
        failure_threshold: 3,
        termination_grace_period_secs: None,
    };
    PodSpec {
        uid: s(uid),
        namespace: s("default"),
        name: s(name),
        labels: vec![(s("app"), s(name))],
        annotations: vec![],
        service_account_name: s("default"),
        init_containers: vec![],
        containers: vec![Container {
            name: s("main"),
            image: ImageRef {
                reference: s("registry.local/hello:1.0"),
                pull: ImagePull::Ready {
                    artifact_digest: s("sha256:00ff"),
                    artifact_size: 4096,
                    image_id: s("registry.local/hello@sha256:11ee"),
                },
            },
            command: vec![],
            args: vec![s("--port=8080")],
            working_dir: None,
            env: vec![
                EnvVar {
                    name: s("MODE"),
                    value: EnvValue::Literal(s("prod")),
                },
                EnvVar {
                    name: s("LEVEL"),
                    value: EnvValue::ConfigMapKey {
                        name: s("cfg"),
                        key: s("level"),
                        optional: true,
                    },
                },
                EnvVar {
                    name: s("TOKEN"),
                    value: EnvValue::SecretKey {
                        name: s("sec"),
                        key: s("token"),
                        optional: false,
                    },
                },
                EnvVar {
                    name: s("POD"),
                    value: EnvValue::Field(DownwardField::Name),
                },
                EnvVar {
                    name: s("MEM"),
                    value: EnvValue::Resource {
                        container: s("main"),
                        resource: ResourceField::LimitsMemory,
                        divisor: 1 << 20,
                    },
                },
            ],
            env_from: vec![EnvFromSource {
                kind: ConfigKind::ConfigMap,
                name: s("cfg"),
                prefix: s("CFG_"),
                optional: false,
            }],
            ports: vec![ContainerPort {
                name: Some(s("http")),
                container_port: 8080,
                protocol: Protocol::Tcp,
            }],
            resources: ResourceRequirements {
                requests: ResourceList {
                    cpu_millis: Some(100),
                    memory_bytes: Some(32 << 20),
                    ephemeral_storage_bytes: None,
                },
                limits: ResourceList {
                    cpu_millis: None,
                    memory_bytes: Some(64 << 20),
                    ephemeral_storage_bytes: None,
                },
            },
            volume_mounts: vec![VolumeMount {
                name: s("conf"),
                mount_path: s("/etc/conf"),
                read_only: true,
                sub_path: None,
            }],
            readiness_probe: Some(probe.clone()),
            liveness_probe: Some(Probe {
                handler: ProbeHandler::TcpSocket { port: 8080 },
                ..probe
            }),
            startup_probe: None,
        }],
        restart_policy: RestartPolicy::Always,
        termination_grace_period_secs: 30,
        active_deadline_secs: None,
        volumes: vec![
            Volume {
                name: s("conf"),
                source: VolumeSource::ConfigMap {
                    name: s("cfg"),
                    items: vec![KeyToPath {
                        key: s("a"),
                        path: s("a.conf"),
                        mode: Some(0o400),
                    }],
                    optional: false,
                    default_mode: 0o644,
                },
            },
            Volume {
                name: s("scratch"),
                source: VolumeSource::EmptyDir {
                    memory: true,
                    size_limit_bytes: None,
                },
            },
            Volume {
                name: s("info"),
                source: VolumeSource::DownwardApi {
                    items: vec![DownwardApiFile {
                        path: s("labels"),
                        field: DownwardField::Labels,
                    }],
                    default_mode: 0o644,
                },
            },
        ],
        deletion_grace_period_secs: None,
    }
}

/// One of each [`NodeToPlane`] variant.
pub fn node_to_plane() -> Vec<NodeToPlane> {
    let res = Resources {
        cpu_millis: 2000,
        memory_bytes: 1 << 30,
        pods: 110,
        ephemeral_storage_bytes: 0,
    };
    vec![
        NodeToPlane::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            node_name: s("node-1"),
            capabilities: Capabilities::LOG_FOLLOW.union(Capabilities::POD_DELTA),
            software: s("skiff-kernel 0.1.0"),
        }),
        NodeToPlane::Bootstrap {
            node_name: s("node-1"),
            token: s("abcdef.0123456789abcdef"),
            csr_der: vec![0x30, 0x82, 1, 2],
        },
        NodeToPlane::Register(NodeInfo {
            name: s("node-1"),
            boot_id: [7; 16],
            addresses: vec![NodeAddress {
                kind: AddressKind::InternalIP,
                address: s("10.0.2.15"),
            }],
            capacity: res,
            allocatable: res,
            kernel_version: s("skiff-kernel 0.1.0"),
            runtime_version: s("wasmtime://48.0.8"),
            os_image: s("Skiff unikernel"),
            architecture: s("amd64"),
            labels: vec![(s("kubernetes.io/os"), s("skiff"))],
        }),
        NodeToPlane::LeaseRenew {
            seq: 3,
            renew_time: 1_700_000_000_000,
        },
        NodeToPlane::NodeStatus(NodeStatus {
            conditions: vec![NodeCondition {
                kind: NodeConditionType::Ready,
                status: ConditionStatus::True,
                reason: s("KubeletReady"),
                message: s("kubelet is posting ready status"),
                last_heartbeat: 5,
                last_transition: 1,
            }],
            capacity: res,
            allocatable: res,
        }),
        NodeToPlane::PodStatus(PodStatus {
            uid: s("u1"),
            namespace: s("default"),
            name: s("web"),
            phase: PodPhase::Running,
            conditions: vec![PodCondition {
                kind: PodConditionType::Ready,
                status: ConditionStatus::False,
                reason: Some(s("ContainersNotReady")),
                message: None,
                last_transition: 9,
            }],
            init_container_statuses: vec![],
            container_statuses: vec![ContainerStatus {
                name: s("main"),
                state: ContainerState::Waiting {
                    reason: s("CrashLoopBackOff"),
                    message: Some(s("back-off 10s")),
                },
                last_state: Some(ContainerState::Terminated {
                    exit_code: 1,
                    reason: s("Error"),
                    message: None,
                    started_at: Some(1),
                    finished_at: 2,
                }),
                ready: false,
                started: false,
                restart_count: 1,
                image: s("registry.local/hello:1.0"),
                image_id: s("sha256:00ff"),
                container_id: s("skiff://u1/main/1"),
            }],
            pod_ip: Some(s("10.244.1.2")),
            host_ip: Some(s("10.0.2.15")),
            start_time: Some(1),
            reason: None,
            message: None,
        }),
        NodeToPlane::Event(Event {
            object: ObjectRef::Pod {
                namespace: s("default"),
                name: s("web"),
                uid: s("u1"),
                field_path: Some(s("spec.containers{main}")),
            },
            kind: EventType::Warning,
            reason: s("BackOff"),
            message: s("Back-off restarting failed container"),
            count: 2,
            first_timestamp: 1,
            last_timestamp: 3,
        }),
        NodeToPlane::LogChunk {
            stream: 1,
            data: b"hello\n".to_vec(),
            eof: false,
            error: None,
        },
        NodeToPlane::SyncAck { generation: 4 },
        NodeToPlane::ResyncRequest { have: 3 },
        NodeToPlane::RenewCertificate {
            csr_der: vec![0x30, 0],
        },
        NodeToPlane::Ping { nonce: 1 },
        NodeToPlane::Pong { nonce: 2 },
        NodeToPlane::Goodbye {
            reason: s("shutdown"),
        },
        NodeToPlane::FetchArtifact {
            digest: s("sha256:00ff"),
            offset: 0,
            len: 4096,
        },
        NodeToPlane::ServiceResyncRequest { have: 4 },
        NodeToPlane::Usage(UsageReport {
            timestamp: 1_700_000_010_000,
            node: NodeUsage {
                cpu_ns: 12_000_000_000,
                memory_working_set_bytes: 40 << 20,
                net_rx_bytes: 1 << 20,
                net_tx_bytes: 2 << 20,
                net_rx_packets: 900,
                net_tx_packets: 1200,
                log_bytes: 4096,
            },
            pods: vec![PodUsage {
                uid: s("u1"),
                namespace: s("default"),
                name: s("web"),
                containers: vec![ContainerUsage {
                    name: s("app"),
                    started_at: 1_700_000_000_000,
                    cpu_ns: 5_000_000_000,
                    memory_working_set_bytes: 2 << 20,
                    log_bytes: 120,
                }],
            }],
            simulated: false,
        }),
        NodeToPlane::Tunnel {
            tunnel: 7,
            frame: TunnelFrame::Failed {
                error: TunnelError::Refused,
                message: s("nothing listens on 10.244.1.5:8080"),
            },
        },
    ]
}

/// Every tunnel step, as either side may send it.
pub fn tunnel_frames() -> Vec<TunnelFrame> {
    vec![
        TunnelFrame::Open {
            address: s("10.244.1.5"),
            port: 8080,
        },
        TunnelFrame::Opened,
        TunnelFrame::Failed {
            error: TunnelError::NotThisNode,
            message: s("10.244.2.9 is no pod of this node"),
        },
        TunnelFrame::Data(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        TunnelFrame::Ack { bytes: 4096 },
        TunnelFrame::Eof,
        TunnelFrame::Reset,
    ]
}

/// A Service exercising every field: two ports (one with a named target
/// port), client-IP affinity, two slices.
pub fn service(namespace: &str, name: &str) -> Service {
    let endpoint = |ip: &str, node: &str, ready: bool| Endpoint {
        addresses: vec![s(ip)],
        node_name: Some(s(node)),
        hostname: None,
        ready,
        serving: true,
        terminating: !ready,
        for_nodes: vec![s(node)],
    };
    Service {
        namespace: s(namespace),
        name: s(name),
        kind: ServiceKind::NodePort,
        cluster_ips: vec![s("10.96.0.10")],
        headless: false,
        ports: vec![
            ServicePort {
                name: s("http"),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30080),
                target_port: TargetPort::Name(s("web")),
            },
            ServicePort {
                name: s("dns"),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
                target_port: TargetPort::Number(5353),
            },
        ],
        affinity_timeout_secs: Some(10800),
        internal_local: false,
        external_local: true,
        external_name: None,
        slices: vec![
            EndpointSet {
                ports: vec![EndpointPort {
                    name: s("http"),
                    protocol: Protocol::Tcp,
                    port: 8080,
                }],
                endpoints: vec![endpoint("10.244.1.5", "n1", true)],
            },
            EndpointSet {
                ports: vec![EndpointPort {
                    name: s("http"),
                    protocol: Protocol::Tcp,
                    port: 9090,
                }],
                endpoints: vec![Endpoint {
                    hostname: Some(s("web-0")),
                    ..endpoint("10.244.2.7", "n2", false)
                }],
            },
        ],
    }
}

/// One of each [`PlaneToNode`] variant.
pub fn plane_to_node() -> Vec<PlaneToNode> {
    vec![
        PlaneToNode::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            capabilities: Capabilities::POD_DELTA,
            server_time: 1,
        }),
        PlaneToNode::Refused(Refusal {
            reason: RefusalReason::UnsupportedVersion { min: 1, max: 1 },
            message: s("no"),
        }),
        PlaneToNode::Certificate {
            chain_der: vec![vec![0x30, 1], vec![0x30, 2]],
            not_after: 99,
        },
        PlaneToNode::Registered(Registered {
            node_uid: s("n-uid"),
            lease_duration_secs: 40,
            renew_interval_ms: 10_000,
            node_status_report_ms: 300_000,
            pod_cidrs: vec![s("10.244.1.0/24")],
        }),
        PlaneToNode::DesiredPods {
            generation: 1,
            pods: vec![pod("u1", "web"), pod("u2", "db")],
        },
        PlaneToNode::PodDelta {
            from_generation: 1,
            generation: 2,
            upserts: vec![pod("u3", "cache")],
            removes: vec![s("u2")],
        },
        PlaneToNode::LogRequest(LogRequest {
            stream: 1,
            pod_uid: s("u1"),
            container: s("main"),
            follow: true,
            tail_lines: Some(10),
            since: None,
            limit_bytes: None,
            timestamps: false,
            previous: false,
        }),
        PlaneToNode::LogCancel { stream: 1 },
        PlaneToNode::ConfigData(ConfigObject {
            kind: ConfigKind::Secret,
            namespace: s("default"),
            name: s("sec"),
            resource_version: s("12"),
            data: vec![(s("token"), b"s3cret".to_vec())],
        }),
        PlaneToNode::ConfigRemove {
            kind: ConfigKind::ConfigMap,
            namespace: s("default"),
            name: s("cfg"),
        },
        PlaneToNode::Ping { nonce: 1 },
        PlaneToNode::Pong { nonce: 2 },
        PlaneToNode::Goodbye { reason: s("bye") },
        PlaneToNode::ArtifactChunk {
            digest: s("sha256:00ff"),
            offset: 0,
            total: 4096,
            data: vec![0x7f, b'E', b'L', b'F'],
            error: None,
        },
        PlaneToNode::Services {
            generation: 1,
            services: vec![
                service("default", "web"),
                Service {
                    kind: ServiceKind::ExternalName,
                    cluster_ips: vec![],
                    ports: vec![],
                    affinity_timeout_secs: None,
                    external_name: Some(s("example.com")),
                    slices: vec![],
                    ..service("default", "ext")
                },
            ],
            more: true,
        },
        PlaneToNode::ServiceDelta {
            from_generation: 1,
            generation: 2,
            upserts: vec![Service {
                headless: true,
                cluster_ips: vec![],
                ..service("kube-system", "db")
            }],
            removes: vec![ServiceRef {
                namespace: s("default"),
                name: s("ext"),
            }],
        },
        PlaneToNode::PodNetwork {
            pod_cidrs: vec![s("10.244.3.0/24")],
        },
        PlaneToNode::NetworkPolicies {
            pods: vec![PodPolicy {
                pod_uid: s("uid-1"),
                ingress: Some(vec![PolicyRule {
                    peers: Some(vec![IpBlock {
                        cidr: Cidr {
                            addr: [10, 244, 0, 0],
                            prefix: 16,
                        },
                        except: vec![Cidr {
                            addr: [10, 244, 9, 0],
                            prefix: 24,
                        }],
                    }]),
                    ports: Some(vec![PortRange {
                        protocol: Protocol::Tcp,
                        first: 8080,
                        last: 8090,
                    }]),
                }]),
                egress: Some(vec![]),
            }],
        },
        PlaneToNode::Tunnel {
            tunnel: 7,
            frame: TunnelFrame::Data(vec![0, 1, 2, 255]),
        },
    ]
}
