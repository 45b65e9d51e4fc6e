//! ANN candidates for the semantic cache's vector index, measured against exact search.
//!
//! Data: 384-d L2-normalised clustered vectors (`tollgate_cache_service::index::synth`):
//! topic centroids sharing one common direction, points = centroid + noise. Queries: 90%
//! paraphrases (a dataset point + small noise, cos ≈ 0.93 to it), 10% far queries (no close
//! neighbour). Ground truth: exact f32 top-10 (cached under `target/ann-cache/`).
//!
//! Each (candidate, size, repetition) runs in its own child process so RSS deltas are clean.
//! Per run: build time (1 thread, sequential adds), RSS delta and the crate's own memory
//! accounting, search latency p50/p99 (1 thread, k = 10, after a warm-up pass), recall@1 and
//! recall@10 vs exact, similarity error of the returned top-1, then churn: remove 10% of the
//! entries, add as many new ones, and check recall on the changed set and that no removed id is
//! ever returned.
//!
//! Usage:
//!   ann [--sizes 10000,100000] [--candidates a,b] [--queries 1000] [--reps 3] [--seed 42]
//!   ann --crossover            brute force vs usearch on small partitions
//! Candidates: brute-f32, brute-f16, usearch-{f16,f32}-{ip,cos}[@ef], tollgate-ann[@ef],
//! hnsw_rs[@ef] (needs `--features hnsw_rs`); ef = search beam width, default 128 as in
//! `AnnConfig`; M = 16 and ef_construction = 128 everywhere. Build with `--release`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use tollgate_cache_service::index::synth::{Rng, Synth};
use tollgate_cache_service::index::{
    AnnConfig, AnnIndex, BruteForceIndex, Quantization, VectorIndex, dot,
};

const DIM: usize = 384;
const K: usize = 10;

// ---------------------------------------------------------------------------------------------
// Candidates

trait Cand {
    fn add(&mut self, id: u64, v: &[f32]);
    fn search(&self, q: &[f32], k: usize) -> Vec<(u64, f32)>;
    /// `false`: removal not supported.
    fn remove(&mut self, id: u64) -> bool;
    fn own_memory(&self) -> Option<usize>;
    /// Changes the search beam width; `false`: not supported.
    fn set_ef(&self, _ef: usize) -> bool {
        false
    }
}

struct Brute32(BruteForceIndex);
impl Cand for Brute32 {
    fn add(&mut self, id: u64, v: &[f32]) {
        self.0.try_add(id, v).unwrap();
    }
    fn search(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        self.0.search(q, k)
    }
    fn remove(&mut self, id: u64) -> bool {
        self.0.remove(id);
        true
    }
    fn own_memory(&self) -> Option<usize> {
        Some(self.0.memory_bytes())
    }
}

/// f32 -> IEEE half bits, round to nearest even (F. Giesen's float_to_half_fast3_rtne).
fn f32_to_f16(x: f32) -> u16 {
    let f32infty: u32 = 255 << 23;
    let f16max: u32 = (127 + 16) << 23;
    let denorm_magic = f32::from_bits(((127 - 15) + (23 - 10) + 1) << 23);
    let mut f = x.to_bits();
    let sign = f & 0x8000_0000;
    f ^= sign;
    let o: u32 = if f >= f16max {
        if f > f32infty { 0x7e00 } else { 0x7c00 }
    } else if f < (113 << 23) {
        (f32::from_bits(f) + denorm_magic).to_bits() - denorm_magic.to_bits()
    } else {
        let mant_odd = (f >> 13) & 1;
        let f = f
            .wrapping_add(((15u32).wrapping_sub(127) << 23).wrapping_add(0xfff))
            .wrapping_add(mant_odd);
        f >> 13
    };
    (o | (sign >> 16)) as u16
}

/// Half bits -> f32 for finite values: shift into place and rescale the exponent (handles
/// subnormals exactly); vectorises.
#[inline]
fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let mag = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits((254 - 15) << 23);
    f32::from_bits(mag.to_bits() | ((h & 0x8000) << 16))
}

fn dot_f16(q: &[f32], row: &[u16]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    for (x, y) in q.chunks_exact(L).zip(row.chunks_exact(L)) {
        for i in 0..L {
            acc[i] += x[i] * f16_to_f32(y[i]);
        }
    }
    let mut s = 0.0;
    let tail = q.len() / L * L;
    for (x, y) in q[tail..].iter().zip(&row[tail..]) {
        s += x * f16_to_f32(*y);
    }
    acc.iter().sum::<f32>() + s
}

#[derive(Default)]
struct Brute16 {
    ids: Vec<u64>,
    data: Vec<u16>,
    pos: HashMap<u64, usize>,
}
impl Cand for Brute16 {
    fn add(&mut self, id: u64, v: &[f32]) {
        self.pos.insert(id, self.ids.len());
        self.ids.push(id);
        self.data.extend(v.iter().map(|x| f32_to_f16(*x)));
    }
    fn search(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let mut best: Vec<(u64, f32)> = Vec::with_capacity(k + 1);
        for (id, row) in self.ids.iter().zip(self.data.chunks_exact(DIM)) {
            let s = dot_f16(q, row);
            if best.len() < k || s > best[best.len() - 1].1 {
                let at = best.partition_point(|h| h.1 >= s);
                best.insert(at, (*id, s));
                best.truncate(k);
            }
        }
        best
    }
    fn remove(&mut self, id: u64) -> bool {
        if let Some(i) = self.pos.remove(&id) {
            let last = self.ids.len() - 1;
            if i != last {
                let moved = self.ids[last];
                self.ids[i] = moved;
                self.data.copy_within(last * DIM..(last + 1) * DIM, i * DIM);
                self.pos.insert(moved, i);
            }
            self.ids.truncate(last);
            self.data.truncate(last * DIM);
        }
        true
    }
    fn own_memory(&self) -> Option<usize> {
        Some(self.ids.capacity() * 8 + self.data.capacity() * 2 + self.pos.capacity() * 17)
    }
}

struct Usearch(usearch::Index);
impl Usearch {
    fn new(q: Quantization, metric: usearch::MetricKind, ef: usize, n: usize) -> Self {
        let options = usearch::IndexOptions {
            dimensions: DIM,
            metric,
            quantization: match q {
                Quantization::F16 => usearch::ScalarKind::F16,
                Quantization::F32 => usearch::ScalarKind::F32,
            },
            connectivity: 16,
            expansion_add: 128,
            expansion_search: ef,
            multi: false,
        };
        let idx = usearch::Index::new(&options).unwrap();
        idx.reserve_capacity_and_threads(n, 2).unwrap();
        Usearch(idx)
    }
}
impl Cand for Usearch {
    fn set_ef(&self, ef: usize) -> bool {
        self.0.change_expansion_search(ef);
        true
    }
    fn add(&mut self, id: u64, v: &[f32]) {
        if self.0.size() >= self.0.capacity() {
            self.0.reserve(self.0.capacity() * 2).unwrap();
        }
        self.0.add(id, v).unwrap();
    }
    fn search(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let m = self.0.search(q, k).unwrap();
        m.keys
            .iter()
            .zip(&m.distances)
            .map(|(k, d)| (*k, 1.0 - d))
            .collect()
    }
    fn remove(&mut self, id: u64) -> bool {
        self.0.remove(id).unwrap();
        true
    }
    /// Bytes in use: usearch's `memory_usage` minus the unused rest of its arenas (as
    /// `AnnIndex::memory_bytes` does).
    fn own_memory(&self) -> Option<usize> {
        let st = self.0.memory_stats();
        Some(
            self.0
                .memory_usage()
                .saturating_sub(st.graph_reserved)
                .saturating_sub(st.vectors_reserved),
        )
    }
}

struct Tollgate(AnnIndex);
impl Cand for Tollgate {
    fn add(&mut self, id: u64, v: &[f32]) {
        self.0.try_add(id, v).unwrap();
    }
    fn search(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        self.0.search(q, k)
    }
    fn remove(&mut self, id: u64) -> bool {
        self.0.remove(id);
        true
    }
    fn own_memory(&self) -> Option<usize> {
        Some(self.0.memory_bytes())
    }
}

#[cfg(feature = "hnsw_rs")]
struct HnswRs {
    h: hnsw_rs::hnsw::Hnsw<'static, f32, hnsw_rs::prelude::DistDot>,
    ef: usize,
}
#[cfg(feature = "hnsw_rs")]
impl Cand for HnswRs {
    fn add(&mut self, id: u64, v: &[f32]) {
        self.h.insert_slice((v, id as usize));
    }
    fn search(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        self.h
            .search(q, k, self.ef.max(k))
            .into_iter()
            .map(|n| (n.d_id as u64, 1.0 - n.distance))
            .collect()
    }
    fn remove(&mut self, _id: u64) -> bool {
        false
    }
    fn own_memory(&self) -> Option<usize> {
        None
    }
}

fn make(name: &str, n: usize) -> Box<dyn Cand> {
    let (base, ef) = match name.split_once('@') {
        Some((b, e)) => (b, e.parse::<usize>().expect("ef")),
        None => (name, 128),
    };
    match base {
        "brute-f32" => Box::new(Brute32(BruteForceIndex::new(DIM))),
        "brute-f16" => Box::new(Brute16::default()),
        "usearch-f16-ip" => Box::new(Usearch::new(
            Quantization::F16,
            usearch::MetricKind::IP,
            ef,
            n,
        )),
        "usearch-f16-cos" => Box::new(Usearch::new(
            Quantization::F16,
            usearch::MetricKind::Cos,
            ef,
            n,
        )),
        "usearch-f32-ip" => Box::new(Usearch::new(
            Quantization::F32,
            usearch::MetricKind::IP,
            ef,
            n,
        )),
        "usearch-f32-cos" => Box::new(Usearch::new(
            Quantization::F32,
            usearch::MetricKind::Cos,
            ef,
            n,
        )),
        "tollgate-ann" => {
            // Starts at the default capacity: the build includes every doubling.
            let config = AnnConfig {
                expansion_search: ef,
                ..AnnConfig::default()
            };
            Box::new(Tollgate(AnnIndex::new(DIM, config).unwrap()))
        }
        #[cfg(feature = "hnsw_rs")]
        "hnsw_rs" => Box::new(HnswRs {
            h: hnsw_rs::hnsw::Hnsw::new(16, n, 16, 128, hnsw_rs::prelude::DistDot),
            ef,
        }),
        other => panic!("unknown candidate {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Data and ground truth

struct Workload {
    data: Vec<f32>,
    queries: Vec<Vec<f32>>,
    /// `true`: paraphrase of a dataset point; `false`: far query.
    paraphrase: Vec<bool>,
}

fn workload(n: usize, nq: usize, seed: u64, clusters: usize) -> Workload {
    let mut s = Synth::new(DIM, clusters, seed);
    let data = s.points(n);
    let mut queries = Vec::with_capacity(nq);
    let mut paraphrase = Vec::with_capacity(nq);
    for i in 0..nq {
        if i % 10 == 9 {
            queries.push(s.far());
            paraphrase.push(false);
        } else {
            let src = s.rng().below(n);
            let q = s.paraphrase(&data[src * DIM..(src + 1) * DIM]);
            queries.push(q);
            paraphrase.push(true);
        }
    }
    Workload {
        data,
        queries,
        paraphrase,
    }
}

/// Exact top-K of each query over rows of `data` (ids = `ids[row]`), two threads, queries in
/// blocks so each data row is read once per block.
fn exact_topk(data: &[f32], ids: &[u64], queries: &[Vec<f32>]) -> Vec<Vec<(u64, f32)>> {
    let threads = 2;
    let chunk = queries.len().div_ceil(threads).max(1);
    let mut out: Vec<Vec<(u64, f32)>> = Vec::with_capacity(queries.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                scope.spawn(move || {
                    let mut res = Vec::with_capacity(qs.len());
                    for block in qs.chunks(32) {
                        let mut best: Vec<Vec<(u64, f32)>> =
                            vec![Vec::with_capacity(K + 1); block.len()];
                        for (row, id) in data.chunks_exact(DIM).zip(ids) {
                            for (q, b) in block.iter().zip(best.iter_mut()) {
                                let s = dot(q, row);
                                if b.len() < K || s > b[b.len() - 1].1 {
                                    let at = b.partition_point(|h| h.1 >= s);
                                    b.insert(at, (*id, s));
                                    b.truncate(K);
                                }
                            }
                        }
                        res.extend(best);
                    }
                    res
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().unwrap());
        }
    });
    out
}

fn ground_truth(w: &Workload, n: usize, seed: u64, clusters: usize) -> Vec<Vec<(u64, f32)>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ann-cache");
    let path = dir.join(format!(
        "gt-n{n}-q{}-s{seed}-c{clusters}.bin",
        w.queries.len()
    ));
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() == w.queries.len() * K * 12
    {
        return bytes
            .chunks_exact(K * 12)
            .map(|q| {
                q.chunks_exact(12)
                    .map(|e| {
                        let id = u64::from_le_bytes(e[..8].try_into().unwrap());
                        let s = f32::from_le_bytes(e[8..].try_into().unwrap());
                        (id, s)
                    })
                    .collect()
            })
            .collect();
    }
    let ids: Vec<u64> = (0..n as u64).collect();
    let gt = exact_topk(&w.data, &ids, &w.queries);
    let mut bytes = Vec::with_capacity(w.queries.len() * K * 12);
    for q in &gt {
        for (id, s) in q {
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&s.to_le_bytes());
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&path, bytes).unwrap();
    gt
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Recall {
    at1: f64,
    at1_para: f64,
    at1_far: f64,
    at10: f64,
}

fn recall(got: &[Vec<(u64, f32)>], truth: &[Vec<(u64, f32)>], para: &[bool]) -> Recall {
    let (mut h1, mut hp, mut np, mut hf, mut nf, mut h10, mut n10) = (0, 0, 0, 0, 0, 0, 0);
    for ((g, t), p) in got.iter().zip(truth).zip(para) {
        // A returned top-1 counts if it is the exact top-1, or exactly as similar (tie).
        let ok = match (g.first(), t.first()) {
            (Some(a), Some(b)) => a.0 == b.0 || t.iter().any(|x| x.0 == a.0 && x.1 >= b.1),
            (None, None) => true,
            _ => false,
        };
        h1 += ok as usize;
        if *p {
            np += 1;
            hp += ok as usize;
        } else {
            nf += 1;
            hf += ok as usize;
        }
        let want: HashSet<u64> = t.iter().map(|x| x.0).collect();
        h10 += g.iter().filter(|x| want.contains(&x.0)).count();
        n10 += t.len();
    }
    let r = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    Recall {
        at1: r(h1, got.len()),
        at1_para: r(hp, np),
        at1_far: r(hf, nf),
        at10: r(h10, n10),
    }
}

// ---------------------------------------------------------------------------------------------
// One run (child process)

/// Recall@1 (paraphrase / far) and latency for each ef in `efs`, on the first `nq` queries.
fn ef_sweep(
    c: &dyn Cand,
    efs: &[usize],
    queries: &[Vec<f32>],
    truth: &[Vec<(u64, f32)>],
    para: &[bool],
) -> Value {
    let mut rows = Vec::new();
    for &ef in efs {
        if !c.set_ef(ef) {
            break;
        }
        let mut lat = Vec::with_capacity(truth.len());
        let mut got = Vec::with_capacity(truth.len());
        for q in queries.iter().take(truth.len()) {
            let t = Instant::now();
            let r = c.search(q, K);
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            got.push(r);
        }
        lat.sort_by(f64::total_cmp);
        let r = recall(&got, truth, &para[..truth.len()]);
        rows.push(
            json!({"ef": ef, "recall1": r.at1, "recall1_para": r.at1_para,
            "recall1_far": r.at1_far, "recall10": r.at10,
            "p50_us": pct(&lat, 0.5), "p99_us": pct(&lat, 0.99)}),
        );
    }
    Value::Array(rows)
}

fn child(
    name: &str,
    n: usize,
    nq: usize,
    seed: u64,
    clusters: usize,
    churn: f64,
    efs: &[usize],
) -> Value {
    let t = Instant::now();
    let w = workload(n, nq, seed, clusters);
    let gen_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let gt = ground_truth(&w, n, seed, clusters);
    let gt_s = t.elapsed().as_secs_f64();

    let rss0 = rss_bytes();
    let mut c = make(name, n);
    let t = Instant::now();
    for (i, v) in w.data.chunks_exact(DIM).enumerate() {
        c.add(i as u64, v);
    }
    let build_s = t.elapsed().as_secs_f64();
    let rss1 = rss_bytes();
    let own = c.own_memory();

    // Exact scans are slow at 1M: time fewer queries (they are exact anyway).
    let timed = if name.starts_with("brute") {
        nq.min((200_000_000 / n).max(100))
    } else {
        nq
    };
    for q in w.queries.iter().take(100) {
        std::hint::black_box(c.search(q, K));
    }
    let mut lat = Vec::with_capacity(timed);
    let mut got = Vec::with_capacity(timed);
    for q in w.queries.iter().take(timed) {
        let t = Instant::now();
        let r = c.search(q, K);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        got.push(r);
    }
    lat.sort_by(f64::total_cmp);
    let rec = recall(&got, &gt[..timed], &w.paraphrase[..timed]);
    // Similarity error of the returned top-1 against the exact dot product.
    let mut sim_err = 0.0f32;
    for (q, r) in w.queries.iter().zip(&got) {
        if let Some(&(id, s)) = r.first() {
            let row = &w.data[id as usize * DIM..(id as usize + 1) * DIM];
            sim_err = sim_err.max((dot(q, row) - s).abs());
        }
    }

    let mut out = json!({
        "candidate": name, "n": n, "queries": timed,
        "gen_s": gen_s, "gt_s": gt_s,
        "build_s": build_s, "rss_delta": rss1 as i64 - rss0 as i64, "own_bytes": own,
        "p50_us": pct(&lat, 0.5), "p99_us": pct(&lat, 0.99),
        "recall1": rec.at1, "recall1_para": rec.at1_para, "recall1_far": rec.at1_far,
        "recall10": rec.at10, "sim_err": sim_err,
    });
    if !efs.is_empty() {
        out["sweep"] = ef_sweep(c.as_ref(), efs, &w.queries, &gt[..timed], &w.paraphrase);
    }

    // Churn: remove a random `churn` fraction, add as many new points, re-check.
    let m = (n as f64 * churn) as usize;
    if m > 0 && c.remove(u64::MAX - 1) {
        let mut rng = Rng::new(seed ^ 0xC0FFEE);
        let mut removed: HashSet<u64> = HashSet::with_capacity(m);
        while removed.len() < m {
            removed.insert(rng.below(n) as u64);
        }
        let removed_list: Vec<u64> = removed.iter().copied().collect();
        let t = Instant::now();
        for id in &removed_list {
            c.remove(*id);
        }
        let remove_us = t.elapsed().as_secs_f64() * 1e6 / m as f64;
        let mut s = Synth::new(DIM, clusters, seed);
        s.points(n); // same centroids and stream position as the dataset
        let fresh = s.points(m);
        let t = Instant::now();
        for (j, v) in fresh.chunks_exact(DIM).enumerate() {
            c.add((n + j) as u64, v);
        }
        let readd_us = t.elapsed().as_secs_f64() * 1e6 / m as f64;
        let rss2 = rss_bytes();

        // The changed set, for the exact answers.
        let mut ids = Vec::with_capacity(n);
        let mut data = Vec::with_capacity(n * DIM);
        for (i, v) in w.data.chunks_exact(DIM).enumerate() {
            if !removed.contains(&(i as u64)) {
                ids.push(i as u64);
                data.extend_from_slice(v);
            }
        }
        for (j, v) in fresh.chunks_exact(DIM).enumerate() {
            ids.push((n + j) as u64);
            data.extend_from_slice(v);
        }
        let cq = timed.min(if n >= 1_000_000 { 300 } else { nq });
        let truth = exact_topk(&data, &ids, &w.queries[..cq]);
        let got: Vec<_> = w.queries[..cq].iter().map(|q| c.search(q, K)).collect();
        let violations: usize = got
            .iter()
            .map(|r| r.iter().filter(|h| removed.contains(&h.0)).count())
            .sum();
        let rc = recall(&got, &truth, &w.paraphrase[..cq]);
        out["churn"] = json!({
            "removed": m, "remove_us": remove_us, "readd_us": readd_us,
            "rss_delta_after": rss2 as i64 - rss0 as i64, "own_bytes_after": c.own_memory(),
            "recall1": rc.at1, "recall10": rc.at10, "removed_returned": violations,
        });
        if !efs.is_empty() {
            out["churn"]["sweep"] = ef_sweep(c.as_ref(), efs, &w.queries, &truth, &w.paraphrase);
        }
    } else if m > 0 {
        out["churn"] = json!("remove unsupported");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Small partitions: where does the ANN index start to pay?

fn crossover(seed: u64) {
    println!(
        "| entries | brute p50 µs | brute p99 µs | ann p50 µs | ann p99 µs | ann recall@1 | ann build ms | brute bytes | ann bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let empty = AnnIndex::new(DIM, AnnConfig::default()).unwrap();
    for n in [64usize, 256, 512, 1024, 2048, 4096, 8192, 16384] {
        let clusters = (n / 8).clamp(8, 2048);
        let w = workload(n, 500, seed, clusters);
        let brute = BruteForceIndex::new(DIM);
        let ann_cfg = AnnConfig {
            initial_capacity: n.next_power_of_two(),
            ..AnnConfig::default()
        };
        let ann = AnnIndex::new(DIM, ann_cfg).unwrap();
        let t = Instant::now();
        for (i, v) in w.data.chunks_exact(DIM).enumerate() {
            ann.try_add(i as u64, v).unwrap();
        }
        let build_ms = t.elapsed().as_secs_f64() * 1e3;
        for (i, v) in w.data.chunks_exact(DIM).enumerate() {
            brute.try_add(i as u64, v).unwrap();
        }
        let measure = |idx: &dyn VectorIndex| {
            let mut p50s = Vec::new();
            let mut p99s = Vec::new();
            for _ in 0..3 {
                let mut lat: Vec<f64> = w
                    .queries
                    .iter()
                    .map(|q| {
                        let t = Instant::now();
                        std::hint::black_box(idx.search(q, 5));
                        t.elapsed().as_secs_f64() * 1e6
                    })
                    .collect();
                lat.sort_by(f64::total_cmp);
                p50s.push(pct(&lat, 0.5));
                p99s.push(pct(&lat, 0.99));
            }
            p50s.sort_by(f64::total_cmp);
            p99s.sort_by(f64::total_cmp);
            (p50s[1], p99s[1])
        };
        let (b50, b99) = measure(&brute);
        let (a50, a99) = measure(&ann);
        let hits = w
            .queries
            .iter()
            .filter(|q| {
                brute.search(q, 1).first().map(|h| h.0) == ann.search(q, 1).first().map(|h| h.0)
            })
            .count();
        println!(
            "| {n} | {b50:.1} | {b99:.1} | {a50:.1} | {a99:.1} | {:.3} | {build_ms:.1} | {} | {} |",
            hits as f64 / w.queries.len() as f64,
            brute.memory_bytes(),
            ann.memory_bytes()
        );
    }
    println!(
        "\nEmpty AnnIndex (default config, capacity {}): {} bytes; empty BruteForceIndex: {} bytes.",
        empty.capacity(),
        empty.memory_bytes(),
        BruteForceIndex::new(DIM).memory_bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// Driver

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed: u64 = arg(&args, "--seed").map_or(42, |s| s.parse().unwrap());
    let nq: usize = arg(&args, "--queries").map_or(1000, |s| s.parse().unwrap());
    let clusters: usize = arg(&args, "--clusters").map_or(2048, |s| s.parse().unwrap());
    let churn: f64 = arg(&args, "--churn").map_or(0.1, |s| s.parse().unwrap());

    if args.iter().any(|a| a == "--crossover") {
        crossover(seed);
        return;
    }
    if let Some(name) = arg(&args, "--child") {
        let n: usize = arg(&args, "--n").unwrap().parse().unwrap();
        let efs: Vec<usize> = arg(&args, "--ef-sweep")
            .map(|s| s.split(',').map(|e| e.parse().unwrap()).collect())
            .unwrap_or_default();
        let v = child(name, n, nq, seed, clusters, churn, &efs);
        println!("RESULT {v}");
        return;
    }

    let sizes: Vec<usize> = arg(&args, "--sizes")
        .unwrap_or("10000,100000")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let cands: Vec<String> = arg(&args, "--candidates")
        .unwrap_or("brute-f32,brute-f16,usearch-f16-ip,usearch-f16-cos,usearch-f32-ip,usearch-f32-cos,tollgate-ann")
        .split(',')
        .map(String::from)
        .collect();
    let reps: usize = arg(&args, "--reps").map_or(3, |s| s.parse().unwrap());
    let exe = std::env::current_exe().unwrap();
    eprintln!(
        "usearch acceleration: {}",
        usearch::hardware_acceleration_available()
    );
    println!(
        "| n | candidate | recall@1 (para / far) | recall@10 | p50 µs | p99 µs | build s | RSS B/entry | own B/entry | max sim err | churn: remove µs / re-add µs / recall@1 / removed returned |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for &n in &sizes {
        for c in &cands {
            let mut runs: Vec<Value> = Vec::new();
            for _ in 0..reps {
                let o = Command::new(&exe)
                    .args([
                        "--child",
                        c,
                        "--n",
                        &n.to_string(),
                        "--queries",
                        &nq.to_string(),
                    ])
                    .args([
                        "--seed",
                        &seed.to_string(),
                        "--clusters",
                        &clusters.to_string(),
                    ])
                    .args(["--churn", &churn.to_string()])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&o.stdout);
                match text.lines().find_map(|l| l.strip_prefix("RESULT ")) {
                    Some(j) => {
                        eprintln!("{j}");
                        runs.push(serde_json::from_str(j).unwrap());
                    }
                    None => eprintln!("{c} n={n} failed: {}", String::from_utf8_lossy(&o.stderr)),
                }
            }
            if runs.is_empty() {
                continue;
            }
            let med =
                |f: &dyn Fn(&Value) -> Option<f64>| median(runs.iter().filter_map(f).collect());
            let g = |k: &'static str| move |v: &Value| v[k].as_f64();
            let ch = |k: &'static str| move |v: &Value| v["churn"][k].as_f64();
            let churn_txt = if runs[0]["churn"].is_string() {
                "no removal API".to_string()
            } else {
                format!(
                    "{:.1} / {:.0} / {:.3} / {:.0}",
                    med(&ch("remove_us")),
                    med(&ch("readd_us")),
                    med(&ch("recall1")),
                    med(&ch("removed_returned"))
                )
            };
            let own = med(&g("own_bytes"));
            println!(
                "| {n} | {c} | {:.3} ({:.3} / {:.3}) | {:.3} | {:.0} | {:.0} | {:.2} | {:.0} | {} | {:.1e} | {churn_txt} |",
                med(&g("recall1")),
                med(&g("recall1_para")),
                med(&g("recall1_far")),
                med(&g("recall10")),
                med(&g("p50_us")),
                med(&g("p99_us")),
                med(&g("build_s")),
                med(&g("rss_delta")) / n as f64,
                if own.is_nan() {
                    "-".to_string()
                } else {
                    format!("{:.0}", own / n as f64)
                },
                med(&g("sim_err")),
            );
            std::io::stdout().flush().unwrap();
        }
    }
}
