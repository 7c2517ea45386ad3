//! Wire code: parse and validate an Ethernet/IPv4/UDP frame (both checksums), and build one.

use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use porto_engine::wire::{emit_udp, parse_udp, MacAddr, UdpHeaders, UDP_HEADERS_LEN};

fn wire(c: &mut Criterion) {
    let h = UdpHeaders {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        src_ip: Ipv4Addr::new(198, 18, 0, 1).into(),
        dst_ip: Ipv4Addr::new(198, 18, 0, 2).into(),
        src_port: 4000,
        dst_port: 5000,
        tos: 0,
        ttl: 64,
    };
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    for payload in [64usize, 1024] {
        let mut frame = vec![0u8; UDP_HEADERS_LEN + payload];
        emit_udp(&mut frame, &h, payload).expect("room");
        g.bench_function(format!("parse_udp {payload}B"), |b| {
            b.iter(|| parse_udp(std::hint::black_box(&frame), 2048).expect("valid"))
        });
        g.bench_function(format!("emit_udp {payload}B"), |b| {
            b.iter(|| emit_udp(std::hint::black_box(&mut frame), &h, payload).expect("room"))
        });
    }
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
