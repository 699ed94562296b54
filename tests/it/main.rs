//! One integration-test binary; its modules mirror the surfaces they exercise. Every test
//! runs a real server on 127.0.0.1 port 0 over a real SQLite file in a temp dir, or the real
//! `keyturn` binary, and speaks real HTTP.

mod support;

mod admin;

mod api;
mod architecture;
mod attacks;
mod badinput;
mod browser;
mod cli;
mod clientkeys;
mod cluster;
mod connections;
mod crash;
mod custody;
mod daemon;
mod dashboard;
mod dbfaults;
mod deploy;
mod docs;
mod dpop;
mod faults;
mod federation;
mod forward;
mod front;
mod gateways;
mod http2;
mod interop;
mod jwks;
mod lease;
mod libraries;
mod lifecycle;
mod logs;
mod metrics;
mod oauth;
mod operate;
mod pg;
mod proxies;
mod replay;
mod sessions;
mod shutdown;
mod startup;
mod tls;
mod webapp;
mod wellknown;
