//! TCP streams as Winsock servers use them, on the provider `PORTO_PROVIDER` names.

use std::io::Write;
use std::time::{Duration, Instant};

use porto_engine::completion::{Completion, OpKind};
use porto_engine::shard::Shard;

mod common;

fn poll_for(shard: &mut Shard, wait: Duration) -> Vec<Completion> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while out.is_empty() && Instant::now() < deadline {
        shard.poll_until(&mut out, 8, Duration::from_millis(10));
    }
    out
}

/// The zero-byte receive (Winsock's zero-byte `WSARecv`, how servers with many idle
/// connections wait without a buffer each): it completes `Ok(0)` only once data is waiting,
/// takes none of it and holds no frame; after the peer closes it completes too (EOF is
/// readable), and the receive that follows says which.
#[test]
fn a_zero_byte_receive_waits_for_data_without_taking_it() {
    let mut shard = Shard::new(&common::small_config(), None).unwrap();
    let (_lst, mut client, server) = common::accepted_pair(&mut shard);
    let free = shard.pool().free_frames();

    server.wait_readable(7, None).unwrap();
    assert!(
        poll_for(&mut shard, Duration::from_millis(150)).is_empty(),
        "nothing to read: it waits"
    );
    assert_eq!(shard.pool().free_frames(), free, "no frame is held while it waits");
    client.write_all(b"hello").unwrap();
    let c = poll_for(&mut shard, Duration::from_secs(5)).pop().expect("readable");
    assert_eq!(
        (c.op, c.token, c.result, c.more),
        (OpKind::Recv, 7, Ok(0), false),
        "{c:?}"
    );
    assert!(c.buffer.is_none());
    // The data is still there for the receive that follows.
    server.recv(8, Some(Duration::from_secs(5))).unwrap();
    let c = poll_for(&mut shard, Duration::from_secs(5)).pop().expect("the data");
    assert_eq!(c.result, Ok(5));
    assert_eq!(c.buffer.as_deref(), Some(&b"hello"[..]));

    // EOF is readable too; the receive after it says the peer closed.
    server.wait_readable(9, None).unwrap();
    drop(client);
    let c = poll_for(&mut shard, Duration::from_secs(5))
        .pop()
        .expect("readable at EOF");
    assert_eq!((c.token, c.result), (9, Ok(0)));
    server.recv(10, Some(Duration::from_secs(5))).unwrap();
    let c = poll_for(&mut shard, Duration::from_secs(5)).pop().expect("EOF");
    assert_eq!((c.token, c.result), (10, Ok(0)));
    assert!(c.buffer.is_none_or(|b| b.is_empty()));
}
