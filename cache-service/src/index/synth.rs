//! Synthetic sentence-embedding-like vectors for tests and benchmarks.
//!
//! Uniform random vectors are pathological in 384 dimensions (every pair is nearly orthogonal,
//! so nearest-neighbour structure is noise). Real sentence embeddings are clustered by topic
//! and anisotropic (they share a common direction). [`Synth`] models that:
//! - `clusters` topic centroids `normalize(a·u + z)` around one shared unit direction `u`
//!   (pairwise centroid cosine ≈ 0.2), picked with a skewed popularity (popular topics);
//! - dataset points: centroid + Gaussian noise, renormalised (cosine to centroid ≈ 0.7);
//! - [`Synth::paraphrase`]: a dataset point + small noise (cosine to the source ≈ 0.93), the
//!   typical semantic-cache lookup;
//! - [`Synth::far`]: a fresh direction tied to no centroid (a query with no close neighbour).
//!
//! Deterministic for a given seed; no external RNG crate.

/// xoshiro256++ seeded by splitmix64, with Box–Muller normals.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    spare: Option<f32>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f32 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some((r * s) as f32);
        (r * c) as f32
    }
}

/// Scales `v` to unit length in place (no-op for a zero vector).
pub fn normalize_in_place(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Generator of clustered, L2-normalised vectors (see the module docs).
#[derive(Clone, Debug)]
pub struct Synth {
    rng: Rng,
    dim: usize,
    /// Shared direction (anisotropy).
    common: Vec<f32>,
    /// `clusters × dim`, row-major, unit rows.
    centroids: Vec<f32>,
    clusters: usize,
    /// Per-dimension noise of a dataset point around its centroid.
    pub point_sigma: f32,
    /// Per-dimension noise of a paraphrase around its source.
    pub paraphrase_sigma: f32,
}

impl Synth {
    /// Weight of the shared direction in each centroid.
    const COMMON_WEIGHT: f32 = 0.5;

    pub fn new(dim: usize, clusters: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let dim = dim.max(1);
        let clusters = clusters.max(1);
        let common = random_unit(&mut rng, dim);
        let mut centroids = Vec::with_capacity(clusters * dim);
        for _ in 0..clusters {
            let z = random_unit(&mut rng, dim);
            let mut c: Vec<f32> = common
                .iter()
                .zip(&z)
                .map(|(u, z)| Self::COMMON_WEIGHT * u + z)
                .collect();
            normalize_in_place(&mut c);
            centroids.extend_from_slice(&c);
        }
        // Noise norms ≈ sigma·sqrt(dim): 0.05 → ≈0.98 (cos to centroid ≈ 0.71 at 384-d),
        // 0.02 → ≈0.39 (cos to source ≈ 0.93).
        let scale = (384.0 / dim as f32).sqrt();
        Synth {
            rng,
            dim,
            common,
            centroids,
            clusters,
            point_sigma: 0.05 * scale,
            paraphrase_sigma: 0.02 * scale,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// One dataset point: a (popularity-skewed) centroid plus noise, normalised.
    pub fn point(&mut self) -> Vec<f32> {
        // Quadratic skew: low cluster numbers are picked more often.
        let u = self.rng.uniform();
        let c = ((u * u) * self.clusters as f64) as usize;
        let c = c.min(self.clusters - 1);
        let sigma = self.point_sigma;
        let mut v: Vec<f32> = self.centroids[c * self.dim..(c + 1) * self.dim].to_vec();
        for x in &mut v {
            *x += sigma * self.rng.normal();
        }
        normalize_in_place(&mut v);
        v
    }

    /// `n` dataset points, row-major (`n × dim`).
    pub fn points(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let p = self.point();
            out.extend_from_slice(&p);
        }
        out
    }

    /// A rewording of `source`: small noise, normalised.
    pub fn paraphrase(&mut self, source: &[f32]) -> Vec<f32> {
        let sigma = self.paraphrase_sigma;
        let mut v: Vec<f32> = source
            .iter()
            .map(|x| x + sigma * self.rng.normal())
            .collect();
        normalize_in_place(&mut v);
        v
    }

    /// A query tied to no centroid (only the shared direction): no close neighbour exists.
    pub fn far(&mut self) -> Vec<f32> {
        let z = random_unit(&mut self.rng, self.dim);
        let mut v: Vec<f32> = self
            .common
            .iter()
            .zip(&z)
            .map(|(u, z)| Self::COMMON_WEIGHT * u + z)
            .collect();
        normalize_in_place(&mut v);
        v
    }
}

fn random_unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
    normalize_in_place(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::dot;

    #[test]
    fn geometry_matches_the_docs() {
        let mut s = Synth::new(384, 64, 7);
        let p = s.point();
        let q = s.paraphrase(&p);
        let f = s.far();
        let norm = |v: &[f32]| dot(v, v).sqrt();
        assert!((norm(&p) - 1.0).abs() < 1e-4);
        assert!((norm(&q) - 1.0).abs() < 1e-4);
        let pq = dot(&p, &q);
        assert!((0.85..0.98).contains(&pq), "paraphrase cos {pq}");
        let pf = dot(&p, &f);
        assert!(pf < 0.6, "far cos {pf}");
    }

    #[test]
    fn deterministic() {
        let a = Synth::new(16, 4, 1).points(3);
        let b = Synth::new(16, 4, 1).points(3);
        assert_eq!(a, b);
    }
}
