//! The settings blocks every service embeds: `[http]` and `[telemetry]`
//! here, `[redis]` from the bus ([`RedisSettings`](pulse_bus::RedisSettings)).

use serde::Deserialize;

/// Where a service's HTTP server listens. Every service has one (the API, or
/// just the ops endpoints); its defaults TOML sets both fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HttpSettings {
    /// Address to bind: `127.0.0.1` for local use, `0.0.0.0` in a container.
    pub host: String,
    /// Port to bind; 0 picks a free port (tests).
    pub port: u16,
    /// Proxies (addresses or CIDR networks) whose `forwarded_header` names
    /// the client; see [`client_addr`](crate::client_addr). Empty: none.
    #[serde(default)]
    pub trusted_proxies: crate::TrustedProxies,
    /// `x-forwarded-for` (default) or `forwarded` (RFC 7239).
    #[serde(default)]
    pub forwarded_header: crate::ForwardedHeader,
    /// HTTP worker threads (on the gateway and `pulse`, also the threads
    /// WebSocket sessions run on). Absent: one per core, as `actix-web`
    /// starts; the heartbeat checker, which serves only `/healthz`,
    /// `/readyz` and `/metrics`, one. Fewer than cores suits a host the
    /// service shares with Redis.
    #[serde(default)]
    pub workers: Option<std::num::NonZeroUsize>,
}

impl HttpSettings {
    /// The worker threads to start: `workers`, or one per core
    /// ([`std::thread::available_parallelism`]; 2 when it cannot tell).
    pub fn worker_threads(&self) -> usize {
        self.workers.or_else(|| std::thread::available_parallelism().ok()).map_or(2, std::num::NonZeroUsize::get)
    }

    /// The pair `HttpServer::bind` takes.
    pub fn bind_addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The client's address for a request from TCP peer `peer` with these
    /// `headers`: the peer itself unless it is a trusted proxy.
    pub fn client_ip(&self, peer: std::net::IpAddr, headers: &actix_web::http::header::HeaderMap) -> std::net::IpAddr {
        self.trusted_proxies.client_ip(peer, headers, self.forwarded_header)
    }
}

/// How log lines are written: `auto`, `pretty` or `json` (any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON otherwise (a container,
    /// a pipe): right by default both on a laptop and under Kubernetes.
    #[default]
    Auto,
    /// Human-readable, coloured lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "pretty" | "human" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}, expected auto, pretty or json")),
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Logging and tracing, the same block in every service (`[telemetry]`).
/// Every field has a default, so the block may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// Output format of log lines.
    pub log_format: LogFormat,
    /// `EnvFilter` directives, e.g. `info` or `info,pulse_gateway=debug`.
    /// `RUST_LOG`, when set, wins: it is what a developer reaches for first.
    #[serde(alias = "log_filter")]
    pub log_level: String,
    /// OTLP collector endpoint (base URL), e.g. `http://otel-collector:4317`
    /// for gRPC or `http://otel-collector:4318` for HTTP (`/v1/traces` is
    /// appended). When unset, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; traces are exported only when one of
    /// them is set (and not empty).
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; when unset, `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else `grpc`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `service.name` reported to the collector; defaults to the binary's name.
    pub service_name: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: None,
        }
    }
}

/// How spans travel to the collector (the values of
/// `OTEL_EXPORTER_OTLP_PROTOCOL` Pulse supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP over gRPC, usually port 4317.
    #[default]
    Grpc,
    /// OTLP protobuf over HTTP, usually port 4318, path `/v1/traces`.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The name used in settings and `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(format!("unsupported OTLP protocol {other:?}: expected \"grpc\" or \"http/protobuf\"")),
        }
    }
}

impl<'de> Deserialize<'de> for OtlpProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}
