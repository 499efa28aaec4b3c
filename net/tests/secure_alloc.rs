//! The transport path of `parlo_net::secure` does not allocate: 10,000 media packets
//! sealed and opened, across key changes, with forged and replayed ones among them, make
//! no allocation at all. A counting global allocator counts this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use parlo_net::secure::{
    Config, Dropped, Kind, MAX_DATAGRAM, MAX_INNER, TRANSPORT, TRANSPORT_PHASE_1,
};

mod common;
use common::{ALICE, BOB, WALL};

struct Counting;

thread_local! {
    /// Allocations made by this thread (other test threads do not count).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread's storage may be gone while it exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn ten_thousand_packets_sealed_and_opened_allocate_nothing() {
    // Control: the counter sees an allocation.
    let before = allocations();
    let boxed = std::hint::black_box(Box::new(7u64));
    assert_eq!(allocations() - before, 1, "the counting allocator counts");
    drop(boxed);

    let config = Config {
        rekey_after: 1_000,
        ..Config::default()
    };
    let (mut alice, mut bob) = common::established(config);
    let (alice_public, bob_public) = (common::alice().public(), common::bob().public());
    let wall = WALL;
    let mut datagram = [0u8; MAX_DATAGRAM];
    let mut inner = [0u8; MAX_INNER];

    let mut packet = [0u8; 1036];
    packet[0] = 0x80;
    let mut replay = [0u8; MAX_DATAGRAM];
    let mut phases = [0u32; 2];
    let before = allocations();
    for i in 0..10_000u64 {
        let now = i * 20;
        packet[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        let (from, to, from_addr, to_addr, to_key) = if i % 2 == 0 {
            (&mut alice, &mut bob, ALICE, BOB, &bob_public)
        } else {
            (&mut bob, &mut alice, BOB, ALICE, &alice_public)
        };
        let n = from
            .seal(
                now,
                wall,
                to_addr,
                to_key,
                &packet,
                false,
                &mut datagram,
                &mut || [0; 32],
            )
            .expect("sealed");
        match datagram[0] {
            TRANSPORT => phases[0] += 1,
            TRANSPORT_PHASE_1 => phases[1] += 1,
            other => panic!("type 0x{other:02x}"),
        }
        let opened = to
            .open(
                now,
                wall,
                from_addr,
                &datagram[..n],
                &mut inner,
                &mut || [0; 32],
            )
            .expect("opened");
        assert_eq!(opened.kind, Kind::Transport);
        assert_eq!(&inner[..opened.len], &packet[..]);
        if i % 100 == 0 {
            // A replay and a forgery are dropped without allocating either.
            replay[..n].copy_from_slice(&datagram[..n]);
            let again = to.open(now, wall, from_addr, &replay[..n], &mut inner, &mut || {
                [0; 32]
            });
            assert_eq!(again.map(|_| ()), Err(Dropped::Replay));
            replay[n / 2] ^= 1;
            let forged = to.open(now, wall, from_addr, &replay[..n], &mut inner, &mut || {
                [0; 32]
            });
            assert_eq!(forged.map(|_| ()), Err(Dropped::Auth));
        }
    }
    let made = allocations() - before;
    assert_eq!(made, 0, "allocations on the transport path");
    assert!(
        phases[0] > 1000 && phases[1] > 1000,
        "both key phases used: {phases:?}"
    );
    assert!(alice.session(BOB).expect("session").rekeys > 100);
}
