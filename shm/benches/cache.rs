//! Hot paths of the HTTP cache on one core: a hit (lookup with full key
//! compare, head copy and a 2 KiB body copy) among 10 000 stored objects,
//! and a store of a 2 KiB object under constant eviction. Run with
//! `cargo bench -p corral-shm --bench cache`.

use std::hint::black_box;
use std::time::Duration;

use corral_config::Cache as CacheDef;
use corral_shm::cache::{key_hash, unix_ms, Cache, StoreMeta};
use corral_shm::Segment;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const OBJECTS: u32 = 10_000;

fn key(i: u32) -> Vec<u8> {
    format!("app\0www.example.com\0/static/asset-{i}.js?v=3").into_bytes()
}

fn put(c: &Cache<'_>, slot: usize, k: &[u8], body: &[u8]) {
    let now = unix_ms();
    let meta = StoreMeta {
        status: 200,
        stored_ms: now,
        expires_ms: now + 3_600_000,
        age: 0,
    };
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\nCache-Control: max-age=3600\r\n\r\n";
    if let Some(mut st) = c.begin_store(
        slot,
        k,
        key_hash(k),
        b"",
        head,
        Some(body.len() as u64),
        1 << 20,
        meta,
    ) {
        if c.append(slot, &mut st, body) {
            c.publish(slot, st);
        } else {
            c.abandon(slot, st);
        }
    }
}

fn bench(c: &mut Criterion) {
    let seg: &'static Segment = Box::leak(Box::new(Segment::create().unwrap()));
    let def = CacheDef {
        name: "static".into(),
        total_max_size: 256 << 20,
        max_object_size: 1 << 20,
        max_age: Duration::from_secs(3600),
        process_vary: false,
    };
    let cache: &'static Cache<'static> = Box::leak(Box::new(Cache::create(seg, &def).unwrap()));
    let body = vec![b'x'; 2048];
    for i in 0..OBJECTS {
        put(cache, 0, &key(i), &body);
    }
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    let mut out = Vec::with_capacity(4096);
    g.bench_function("hit_2k", |b| {
        b.iter(|| {
            i = (i + 7919) % OBJECTS;
            let k = key(i);
            let guard = seg.epoch().pin(0);
            let f = cache
                .lookup(&guard, &k, key_hash(&k), &|_| Vec::new(), unix_ms())
                .expect("stored");
            out.clear();
            out.extend_from_slice(&cache.head(&f));
            let mut cur = cache.cursor(&f, f.head_at() + f.head_len as u64, f.end());
            cache.read(&f, &mut cur, &mut out, usize::MAX);
            black_box(out.len())
        })
    });
    let small_def = CacheDef {
        total_max_size: 4 << 20,
        ..def.clone()
    };
    let small: &'static Cache<'static> =
        Box::leak(Box::new(Cache::create(seg, &small_def).unwrap()));
    let mut n = 0u32;
    g.bench_function("store_2k_evicting", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            put(small, 0, &key(n), &body);
            seg.epoch().try_advance();
            small.maintain(0, n, unix_ms());
        })
    });
    g.finish();
    let s = small.summary();
    eprintln!(
        "store_2k_evicting: {} stored, {} abandoned, {} evicted",
        s.get(corral_shm::cache::Count::Stores),
        s.get(corral_shm::cache::Count::Abandoned),
        s.get(corral_shm::cache::Count::Evictions)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
