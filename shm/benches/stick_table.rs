//! Hot paths of the stick table on one core: lookups and counter updates in
//! an ip table of 1 M entries, and updates of one hot key while a second
//! process updates it too. Prints memory per entry. Run with
//! `cargo bench -p corral-shm` (targets: ≥ 10 M lookups/s, ≥ 3 M updates/s).

use std::hint::black_box;
use std::time::Duration;

use corral_config::{DataType, KeyType, Table};
use corral_shm::freq::now_ms;
use corral_shm::{DataTypeName, Segment, StickTable};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ENTRIES: u32 = 1_000_000;

fn setup() -> &'static StickTable<'static> {
    let def = Table {
        name: "per_ip".into(),
        key: KeyType::Ip,
        key_len: 0,
        size: ENTRIES,
        expire: Some(Duration::from_secs(600)),
        store: vec![
            DataType::ConnCur,
            DataType::ConnCnt,
            DataType::ConnRate(Duration::from_secs(10)),
            DataType::Gpc0,
        ],
    };
    let seg: &'static Segment = Box::leak(Box::new(Segment::create().unwrap()));
    let t: &'static StickTable<'static> =
        Box::leak(Box::new(StickTable::create(seg, &def).unwrap()));
    let now = now_ms();
    for i in 0..ENTRIES {
        let g = seg.epoch().pin(0);
        t.get_or_create(&g, 0, &(0x0A00_0000 + i).to_be_bytes(), now)
            .unwrap();
    }
    let l = t.layout();
    eprintln!(
        "memory per entry: {} B entry + {:.1} B of buckets, slack and headers = {:.1} B per configured entry ({} MiB region)",
        l.entry_size,
        l.region_len() as f64 / ENTRIES as f64 - l.entry_size as f64,
        l.region_len() as f64 / ENTRIES as f64,
        l.region_len() >> 20
    );
    t
}

fn bench(c: &mut Criterion) {
    let t = setup();
    let seg = t.segment();
    let mut g = c.benchmark_group("stick_table_1M_ip");
    g.throughput(Throughput::Elements(1));
    let mut k = 0u32;
    g.bench_function("lookup (pin per lookup)", |b| {
        b.iter(|| {
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % ENTRIES;
            let guard = seg.epoch().pin(0);
            black_box(
                t.lookup(&guard, &(0x0A00_0000 + k).to_be_bytes(), now_ms())
                    .is_some(),
            );
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("lookup x64 (one pin)", |b| {
        b.iter(|| {
            let guard = seg.epoch().pin(0);
            let now = now_ms();
            for _ in 0..64 {
                k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % ENTRIES;
                black_box(
                    t.lookup(&guard, &(0x0A00_0000 + k).to_be_bytes(), now)
                        .is_some(),
                );
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("update conn_cnt+conn_rate of a random entry", |b| {
        b.iter(|| {
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % ENTRIES;
            let guard = seg.epoch().pin(0);
            let now = now_ms();
            let e = t
                .lookup(&guard, &(0x0A00_0000 + k).to_be_bytes(), now)
                .unwrap();
            e.add(DataTypeName::ConnCnt, 1);
            e.add_rate(DataTypeName::ConnRate, now, 1);
        })
    });
    let hot = t.entry_at(0, 0);
    g.bench_function("update gpc0 of one hot entry", |b| {
        b.iter(|| hot.add(DataTypeName::Gpc0, 1))
    });
    // A second process updating the same entry: cross-process contention.
    // SAFETY: criterion runs single-threaded here; the child only loops on atomics.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            hot.add(DataTypeName::Gpc0, 1);
            hot.add_rate(DataTypeName::ConnRate, now_ms(), 1);
        }
    }
    g.bench_function("update gpc0+conn_rate of one hot entry, 2 processes", |b| {
        b.iter(|| {
            hot.add(DataTypeName::Gpc0, 1);
            hot.add_rate(DataTypeName::ConnRate, now_ms(), 1);
        })
    });
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
