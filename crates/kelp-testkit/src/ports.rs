//! Ports for servers that cannot take port 0 (SeaweedFS's `weed`, which
//! derives its gRPC port from the HTTP one).

use std::net::TcpListener;

/// A free TCP port whose +10000 neighbour (SeaweedFS's gRPC port) is free too.
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let p = addr.port();
        if p < 50_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}
