use std::time::Duration;

use super::*;

fn def(total: u64, object: u64) -> CacheDef {
    CacheDef {
        name: "c".into(),
        total_max_size: total,
        max_object_size: object,
        max_age: Duration::from_secs(60),
        process_vary: true,
    }
}

fn meta(now: u64) -> StoreMeta {
    StoreMeta {
        status: 200,
        stored_ms: now,
        expires_ms: now + 60_000,
        age: 0,
    }
}

fn body(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Stores `key` → `head` + `body` for slot 1 (chunks of 1000 bytes).
fn put(c: &Cache<'_>, key: &[u8], vary: &[u8], head: &[u8], body: &[u8]) -> bool {
    put_full(c, 1, key, vary, head, body)
}

/// Like `put`, for slot `slot`.
fn put_as(c: &Cache<'_>, slot: usize, key: &[u8], body: &[u8]) -> bool {
    put_full(c, slot, key, b"", b"h", body)
}

fn put_full(c: &Cache<'_>, slot: usize, key: &[u8], vary: &[u8], head: &[u8], body: &[u8]) -> bool {
    let now = unix_ms();
    let Some(mut st) = c.begin_store(
        slot,
        key,
        key_hash(key),
        vary,
        head,
        Some(body.len() as u64),
        1 << 30,
        meta(now),
    ) else {
        return false;
    };
    for chunk in body.chunks(1000) {
        if !c.append(slot, &mut st, chunk) {
            c.abandon(slot, st);
            return false;
        }
    }
    c.publish(slot, st)
}

/// Slot `slot` begins a store of 9000 bytes and dies: nothing ends it.
fn dies_mid_store(c: &Cache<'_>, slot: usize) {
    let mut st = c
        .begin_store(
            slot,
            b"half",
            key_hash(b"half"),
            b"",
            b"h",
            None,
            1 << 20,
            meta(unix_ms()),
        )
        .unwrap();
    assert!(c.append(slot, &mut st, &body(3, 9000)));
}

fn none(_: &[u8]) -> Vec<u8> {
    Vec::new()
}

/// The head and body stored under `key`, if a lookup finds it.
fn get(
    c: &Cache<'_>,
    key: &[u8],
    vary_of: &dyn Fn(&[u8]) -> Vec<u8>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let g = c.seg.epoch().pin(2);
    let f = c.lookup(&g, key, key_hash(key), vary_of, unix_ms())?;
    let head = c.head(&f);
    let mut b = Vec::new();
    let mut cur = c.cursor(&f, f.head_at() + f.head_len as u64, f.end());
    c.read(&f, &mut cur, &mut b, usize::MAX);
    Some((head, b))
}

#[test]
fn an_object_of_many_blocks_reads_back_exactly() {
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(1 << 20, 64 << 10)).unwrap();
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
    let b = body(7, 50_000);
    assert!(put(
        &c,
        b"be\0host\0/big",
        b"",
        b"HTTP/1.1 200 OK\r\n\r\n",
        &b
    ));
    let (head, got) = get(&c, b"be\0host\0/big", &none).expect("a hit");
    assert_eq!(head, b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(got == b, "body differs");
    assert!(get(&c, b"be\0host\0/bi", &none).is_none());
    let s = c.summary();
    assert_eq!(s.entries, 1);
    assert_eq!(s.get(Count::Stores), 1);
    assert_eq!(
        s.blocks - s.free_blocks,
        13,
        "50 KB + key + head in 4 KiB blocks"
    );
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
}

#[test]
fn a_hash_collision_never_serves_another_key() {
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(1 << 20, 64 << 10)).unwrap();
    let now = unix_ms();
    let h = 0xdead_beef;
    let st = c
        .begin_store(1, b"one", h, b"", b"H1", Some(0), 1 << 20, meta(now))
        .unwrap();
    assert!(c.publish(1, st));
    let g = seg.epoch().pin(2);
    assert!(
        c.lookup(&g, b"two", h, &none, now).is_none(),
        "same hash, other key"
    );
    assert!(c.lookup(&g, b"one", h, &none, now).is_some());
}

#[test]
fn a_second_store_replaces_and_variants_are_kept_apart_and_bounded() {
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(1 << 20, 64 << 10)).unwrap();
    assert!(put(&c, b"k", b"", b"old", b"1"));
    assert!(put(&c, b"k", b"", b"new", b"2"));
    assert_eq!(
        get(&c, b"k", &none).unwrap(),
        (b"new".to_vec(), b"2".to_vec())
    );
    assert_eq!(c.summary().entries, 1);
    // Variants by accept-encoding replace the Vary-less object.
    let gz = read::vary_key(&[(b"accept-encoding".to_vec(), b"gzip".to_vec())]);
    let id = read::vary_key(&[(b"accept-encoding".to_vec(), b"".to_vec())]);
    assert!(put(&c, b"k", &gz, b"gz", b"zz"));
    assert!(put(&c, b"k", &id, b"id", b"plain"));
    let ae = |v: &'static [u8]| {
        move |n: &[u8]| {
            assert_eq!(n, b"accept-encoding");
            v.to_vec()
        }
    };
    assert_eq!(get(&c, b"k", &ae(b"gzip")).unwrap().1, b"zz");
    assert_eq!(get(&c, b"k", &ae(b"")).unwrap().1, b"plain");
    assert!(get(&c, b"k", &ae(b"br")).is_none());
    assert_eq!(c.summary().entries, 2);
    for i in 0..20u8 {
        let v = read::vary_key(&[(b"accept-encoding".to_vec(), vec![b'a' + i])]);
        assert!(put(&c, b"k", &v, b"h", &[i]));
    }
    assert_eq!(c.summary().entries as usize, MAX_VARIANTS);
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
}

#[test]
fn an_evicted_object_stays_readable_while_held_then_its_blocks_come_back() {
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(256 << 10, 32 << 10)).unwrap();
    let first = body(1, 30_000);
    assert!(put(&c, b"first", b"", b"h", &first));
    let held = {
        let g = seg.epoch().pin(2);
        let f = c
            .lookup(&g, b"first", key_hash(b"first"), &none, unix_ms())
            .unwrap();
        c.hold(2, f)
    };
    // Replaced while held (a refresh), then far more than fits: constant
    // eviction (which passes over held objects).
    assert!(put(&c, b"first", b"", b"h", b"new"));
    let mut stored = 0;
    for i in 0..200u32 {
        let k = format!("k{i}");
        if put(&c, k.as_bytes(), b"", b"h", &body(i as u8, 20_000)) {
            stored += 1;
        }
        seg.epoch().try_advance();
    }
    assert!(stored > 100, "stores go on under eviction: {stored}");
    assert!(
        get(&c, b"first", &none).is_none_or(|(_, b)| b == b"new"),
        "the held copy is out of the index"
    );
    let mut b = Vec::new();
    let mut cur = c.cursor(&held, held.head_at() + held.head_len as u64, held.end());
    c.read(&held, &mut cur, &mut b, usize::MAX);
    assert!(b == first, "a held object's bytes never change");
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
    let used_before = c.summary().blocks - c.summary().free_blocks;
    c.release(2, held);
    for _ in 0..4 {
        seg.epoch().try_advance();
        c.maintain(0, 0, unix_ms());
    }
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
    let s = c.summary();
    assert!(
        s.blocks - s.free_blocks < used_before,
        "released blocks are reclaimed"
    );
    assert!(s.get(Count::Evictions) > 100);
}

#[test]
fn a_dead_writer_and_a_dead_holder_are_undone_by_the_master() {
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(1 << 20, 64 << 10)).unwrap();
    let free0 = c.summary().free_blocks;
    // Slot 5 dies mid-store.
    dies_mid_store(&c, 5);
    // Slot 6 dies holding a reference to an object then evicted.
    assert!(put(&c, b"obj", b"", b"h", &body(4, 5000)));
    let held = {
        let g = seg.epoch().pin(6);
        let f = c
            .lookup(&g, b"obj", key_hash(b"obj"), &none, unix_ms())
            .unwrap();
        c.hold(6, f)
    };
    let _dies_holding = held; // the bit stays set
    assert_eq!(c.purge(0, &|k| k == b"obj"), Ok(1));
    // Slot 7 dies holding a shard's lock.
    std::mem::forget(c.shard(0).lock.lock(7));
    assert!(
        get(&c, b"half", &none).is_none(),
        "a half store is never visible"
    );
    let r5 = c.recover_from(5, 0);
    assert_eq!(r5.stores, 1);
    let r6 = c.recover_from(6, 0);
    assert_eq!(r6.refs, 1);
    let r7 = c.recover_from(7, 0);
    assert_eq!(r7.shards, 1);
    for _ in 0..3 {
        seg.epoch().try_advance();
    }
    for t in 0..c.layout().shards {
        c.maintain(0, t, unix_ms());
    }
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
    assert_eq!(c.summary().free_blocks, free0, "every block came back");
}

#[test]
fn a_reopened_region_keeps_its_objects() {
    use std::os::fd::FromRawFd;
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(1 << 20, 64 << 10)).unwrap();
    assert!(put(&c, b"kept", b"", b"h", b"body"));
    // SAFETY: dup of our fd, as exec would hand it over.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(libc::dup(c.region().fd())) };
    let again = Cache::open(&seg, Region::open(fd).unwrap()).unwrap();
    assert!(again.matches(&def(1 << 20, 64 << 10)));
    assert!(!again.matches(&def(2 << 20, 64 << 10)));
    assert_eq!(get(&again, b"kept", &none).unwrap().1, b"body");
}

#[test]
fn the_master_never_waits_for_a_live_holder_of_a_dead_writers_shard() {
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(256 << 10, 32 << 10)).unwrap();
    assert_eq!(c.layout().shards, 1);
    let free0 = c.summary().free_blocks;
    dies_mid_store(&c, 5);
    // A live process (this one, slot 7) holds the shard's lock.
    seg.epoch().claim(7, std::process::id(), 1);
    let held = c.shard(0).lock.lock(7);
    let t = std::time::Instant::now();
    let r = c.recover_from(5, 0);
    assert!(t.elapsed() < Duration::from_millis(100), "no wait");
    assert_eq!((r.stores, r.shards), (1, 0));
    drop(held);
    c.maintain(3, 0, unix_ms());
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
    assert_eq!(
        c.summary().free_blocks,
        free0,
        "the orphan's blocks came back"
    );
    // `clear cache` against a lock held by a stopped (live) process gives up.
    let held = c.shard(0).lock.lock(7);
    assert_eq!(
        c.purge(0, &|_| true),
        Ok(0),
        "nothing stored: no lock needed"
    );
    drop(held);
    assert!(put_as(&c, 3, b"x", b"1"));
    let held = c.shard(0).lock.lock(7);
    let t = std::time::Instant::now();
    assert_eq!(
        c.purge(0, &|_| true),
        Err(0),
        "a stopped holder: busy, not a hang"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    drop(held);
    assert_eq!(c.purge(0, &|_| true), Ok(1));
}

#[test]
fn a_store_into_a_full_shard_evicts_only_what_it_needs() {
    let seg = Segment::create().unwrap();
    let c = Cache::create(&seg, &def(256 << 10, 32 << 10)).unwrap();
    // 64 blocks, one-block objects: fill it.
    for i in 0..200u32 {
        put(&c, format!("k{i}").as_bytes(), b"", b"h", b"small");
        seg.epoch().try_advance();
    }
    let before = c.summary().get(Count::Evictions);
    assert!(put(&c, b"one-more", b"", b"h", b"small"));
    let after = c.summary().get(Count::Evictions);
    assert!(
        after - before <= 2,
        "evicted {} for one block",
        after - before
    );
    assert!(c.check(0).is_empty(), "{:?}", c.check(0));
}
