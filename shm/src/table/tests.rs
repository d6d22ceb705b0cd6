use std::time::Duration;

use corral_config::{DataType, KeyType, Table};

use super::*;
use crate::freq::now_ms;

fn table_def(size: u32, expire: Option<Duration>) -> Table {
    Table {
        name: "t".into(),
        key: KeyType::Ip,
        key_len: 0,
        size,
        expire,
        store: vec![
            DataType::ConnCnt,
            DataType::ConnCur,
            DataType::ConnRate(Duration::from_secs(10)),
            DataType::Gpc0,
        ],
    }
}

fn segment() -> &'static Segment {
    Box::leak(Box::new(Segment::create().unwrap()))
}

fn key(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

#[test]
fn insert_lookup_and_count() {
    let seg = segment();
    let t = StickTable::create(seg, &table_def(1000, None)).unwrap();
    let g = seg.epoch().pin(0);
    let now = now_ms();
    assert!(t.lookup(&g, &key(1), now).is_none());
    let e = t.get_or_create(&g, 0, &key(1), now).unwrap();
    e.add(DataTypeName::ConnCnt, 3);
    e.add_rate(DataTypeName::ConnRate, now, 2);
    let again = t.lookup(&g, &key(1), now).unwrap();
    assert_eq!(again.value(DataTypeName::ConnCnt, now), Some(3));
    assert_eq!(again.value(DataTypeName::ConnRate, now), Some(2));
    assert_eq!(
        again.value(DataTypeName::HttpReqCnt, now),
        None,
        "not stored"
    );
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.get_or_create(&g, 0, &key(1), now).unwrap().id(),
        e.id(),
        "same entry"
    );
    assert!(t.check().0.is_empty());
}

#[test]
fn a_full_table_keeps_the_most_recent_keys() {
    let seg = segment();
    let t = StickTable::create(seg, &table_def(1000, None)).unwrap();
    let base = now_ms();
    for n in 0..10_000u32 {
        // One ms per key: "recent" is well defined. One pin per operation, as
        // callers do: a pin held across inserts keeps retired slots from reuse.
        let now = base.wrapping_add(n);
        let g = seg.epoch().pin(0);
        t.get_or_create(&g, 0, &key(n), now)
            .expect("eviction makes room");
        assert!(t.len() <= 1000);
    }
    let g = seg.epoch().pin(0);
    let now = base.wrapping_add(10_000);
    assert_eq!(t.len(), 1000);
    let recent = (9_900..10_000)
        .filter(|&n| t.lookup(&g, &key(n), now).is_some())
        .count();
    assert_eq!(recent, 100, "the last 100 keys are all kept");
    let old = (0..1_000)
        .filter(|&n| t.lookup(&g, &key(n), now).is_some())
        .count();
    assert!(old < 50, "old keys were evicted ({old} left)");
    let (bad, total) = t.check();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(total, 1000);
}

#[test]
fn entries_expire_and_expiry_is_budgeted() {
    let seg = segment();
    let t = StickTable::create(seg, &table_def(1000, Some(Duration::from_millis(100)))).unwrap();
    let g = seg.epoch().pin(0);
    let now = now_ms();
    for n in 0..500 {
        t.get_or_create(&g, 0, &key(n), now).unwrap();
    }
    let kept = t.get_or_create(&g, 0, &key(9999), now).unwrap();
    kept.acquire(); // in use: never expires
    let later = now.wrapping_add(150);
    assert!(
        t.lookup(&g, &key(1), later).is_none(),
        "expired entries are invisible at once"
    );
    drop(g);
    let removed = t.expire_step(0, later, 64);
    assert!(
        removed > 0 && removed <= 64 + 64,
        "bounded by the budget per call: {removed}"
    );
    let mut total = removed;
    for _ in 0..100 {
        total += t.expire_step(0, later, 64);
    }
    assert_eq!(total, 500);
    assert_eq!(t.len(), 1, "the entry in use stays");
    let g = seg.epoch().pin(0);
    assert!(t.lookup(&g, &key(9999), now).is_some());
}

#[test]
fn entries_in_use_are_not_evicted() {
    let seg = segment();
    let t = StickTable::create(seg, &table_def(8, None)).unwrap();
    let g = seg.epoch().pin(0);
    let now = now_ms();
    for n in 0..8 {
        t.get_or_create(&g, 0, &key(n), now).unwrap().acquire();
    }
    assert!(
        t.get_or_create(&g, 0, &key(100), now).is_none(),
        "full of entries in use: refuse, never crash"
    );
    t.lookup(&g, &key(3), now).unwrap().release();
    assert!(t.get_or_create(&g, 0, &key(100), now).is_some());
    assert!(
        t.lookup(&g, &key(3), now).is_none(),
        "the released one was evicted"
    );
}

#[test]
fn retired_slots_are_reused_only_after_two_epochs() {
    let seg = segment();
    let t = StickTable::create(seg, &table_def(8, None)).unwrap();
    let now = now_ms();
    {
        let g = seg.epoch().pin(0);
        for n in 0..8 {
            t.get_or_create(&g, 0, &key(n), now).unwrap();
        }
    }
    let reader = seg.epoch().pin(1); // a slow reader somewhere
    let held = t.lookup(&reader, &key(0), now).unwrap();
    assert_eq!(t.clear(0), 8);
    let g = seg.epoch().pin(0);
    // Fill every never-used slot, then more: slots retired while `reader` is
    // pinned must not be handed out.
    let slots = t.layout().slots;
    let mut made = 0;
    while t.get_or_create(&g, 0, &key(1000 + made), now).is_some() && made < slots * 2 {
        made += 1;
    }
    assert!(made <= slots - 8 + 8, "made {made}");
    assert_eq!(
        held.key_copy().unwrap(),
        key(0),
        "the reader's entry is intact"
    );
    drop(reader);
    drop(g);
}

#[test]
fn a_writer_killed_mid_insert_leaves_an_orphan_that_repair_retires() {
    let seg = segment();
    let t = StickTable::create(seg, &table_def(100, None)).unwrap();
    let now = now_ms();
    let g = seg.epoch().pin(0);
    for n in 0..50 {
        t.get_or_create(&g, 0, &key(n), now).unwrap();
    }
    // Simulate a writer (slot 3) that popped a slot and died before publishing it.
    let s = 0;
    let held = t.shard(s).lock.lock(3);
    let orphan = t.alloc(s).unwrap();
    std::mem::forget(held);
    let (bad, _) = t.check();
    assert_eq!(bad.iter().map(|r| r.orphans).sum::<u32>(), 1);
    assert_eq!(t.recover_from(3, 0), 1, "the master repairs the one shard");
    let (bad, total) = t.check();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(total, 50, "no committed entry lost");
    assert_eq!(t.shard(s).lock.owner(), None);
    let _ = orphan;
}

#[test]
fn a_region_describes_itself_and_migrates() {
    let seg = segment();
    let old_def = table_def(100, None);
    let t = StickTable::create(seg, &old_def).unwrap();
    let now = now_ms();
    for n in 0..10 {
        let g = seg.epoch().pin(0);
        t.get_or_create(&g, 0, &key(n), now)
            .unwrap()
            .add(DataTypeName::ConnCnt, n as i64);
    }
    // SAFETY: dup of the region's fd, as an exec would hand it over.
    let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(libc::dup(t.region().fd())) };
    let again =
        StickTable::open(seg, Region::open(fd).unwrap()).expect("layout stored in the region");
    assert_eq!(again.layout(), t.layout());
    assert!(again.matches(&old_def));
    let mut new_def = table_def(200, None);
    new_def.store = vec![DataType::ConnCnt, DataType::HttpReqCnt];
    let new = StickTable::create(seg, &new_def).unwrap();
    assert!(!again.matches(&new_def));
    assert_eq!(new.migrate_from(&again, 0), 10);
    let g = seg.epoch().pin(0);
    assert_eq!(
        new.lookup(&g, &key(7), now)
            .unwrap()
            .value(DataTypeName::ConnCnt, now),
        Some(7)
    );
}

#[test]
fn conn_cur_is_not_migrated() {
    let seg = segment();
    let def = table_def(100, None);
    let t = StickTable::create(seg, &def).unwrap();
    let now = now_ms();
    {
        let g = seg.epoch().pin(0);
        let e = t.get_or_create(&g, 0, &key(1), now).unwrap();
        e.add(DataTypeName::ConnCur, 3);
        e.add(DataTypeName::ConnCnt, 5);
    }
    let new = StickTable::create(seg, &table_def(200, None)).unwrap();
    assert_eq!(new.migrate_from(&t, 0), 1);
    let g = seg.epoch().pin(0);
    let e = new.lookup(&g, &key(1), now).unwrap();
    assert_eq!(e.value(DataTypeName::ConnCnt, now), Some(5));
    assert_eq!(
        e.value(DataTypeName::ConnCur, now),
        Some(0),
        "the old workers' connections end on the old table"
    );
}

#[test]
fn an_entry_held_under_the_lock_survives_eviction_and_clear() {
    let seg = segment();
    let t = StickTable::create(seg, &table_def(8, None)).unwrap();
    let now = now_ms();
    let g = seg.epoch().pin(0);
    let held = t
        .get_or_create_held(&g, 0, &key(1), now, |e| e.acquire())
        .unwrap();
    for n in 100..200 {
        t.get_or_create(&g, 0, &key(n), now);
    }
    let before = t.len();
    assert!(before > 1);
    assert_eq!(t.clear(0), before - 1, "everything but the held entry");
    assert_eq!(held.key_copy().unwrap(), key(1));
    assert!(held.is_live());
    assert_eq!(t.lookup(&g, &key(1), now).map(|e| e.id()), Some(held.id()));
}
