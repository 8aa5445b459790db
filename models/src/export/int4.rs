//! 4-bit blockwise quantisation in the layout of ONNX Runtime's com.microsoft `MatMulNBits`.
//!
//! A weight `W [N, K]` (`y = x W^T`) is cut along K into blocks of `block_size` values (32). Each
//! block gets an asymmetric range that always contains 0: `scale = (max - min) / 15`,
//! `zero_point = round(-min / scale)`, `q = clamp(round(w / scale) + zero_point, 0, 15)`, and
//! dequantises to `(q - zero_point) * scale`. When K is not a multiple of the block (the tiny
//! model's SwiGLU width 344), the last block is padded with its zero point, which dequantises to
//! exactly 0.
//!
//! Layout (ONNX Runtime's contrib-op documentation): `B` uint8 `[N, blocks, block_size / 2]`,
//! two values a byte, the first in the low nibble; `scales` float `[N * blocks]`; `zero_points`
//! uint8 `[N * ceil(blocks / 2)]`, two a byte per row, the first in the low nibble.
//!
//! [`ZeroPoints::Float`] is the other layout `MatMulNBits` takes: one float zero point per block
//! (`[N * blocks]`, the type of A). The range is then each block's own `[min, max]` (0 need not
//! be inside it), so a block quantised by llama.cpp's Q4_1 (`d * q + m`, float `d` and `m`, the
//! SmolLM2 base) is reproduced exactly: `scale = d`, `zero_point = -m / d`.

/// How zero points are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroPoints {
    /// 4-bit integers, packed two a byte; each block's range includes 0.
    #[default]
    Packed,
    /// One float per block; each block's range is its own `[min, max]`.
    Float,
}

/// A quantised weight ready to become `MatMulNBits` initializers.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// Output features N.
    pub n: usize,
    /// Input features K.
    pub k: usize,
    /// Values per block along K.
    pub block_size: usize,
    /// Packed 4-bit values, `[N, blocks, block_size / 2]`.
    pub packed: Vec<u8>,
    /// One scale per block, `[N * blocks]`.
    pub scales: Vec<f32>,
    /// Packed zero points, `[N * ceil(blocks / 2)]` (empty with float zero points).
    pub zero_points: Vec<u8>,
    /// Float zero points, `[N * blocks]` (empty with packed zero points).
    pub float_zero_points: Vec<f32>,
}

impl QuantizedWeight {
    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.k.div_ceil(self.block_size)
    }

    /// The weight the quantised values stand for, `[N, K]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let blocks = self.blocks();
        let zp_row = blocks.div_ceil(2);
        let half = self.block_size / 2;
        let mut out = Vec::with_capacity(self.n * self.k);
        for row in 0..self.n {
            for col in 0..self.k {
                let block = col / self.block_size;
                let within = col % self.block_size;
                let byte = self.packed[(row * blocks + block) * half + within / 2];
                let q = if within.is_multiple_of(2) {
                    byte & 0x0f
                } else {
                    byte >> 4
                };
                let zp = match self.float_zero_points.get(row * blocks + block) {
                    Some(&zp) => zp,
                    None => {
                        let byte = self.zero_points[row * zp_row + block / 2];
                        f32::from(if block.is_multiple_of(2) {
                            byte & 0x0f
                        } else {
                            byte >> 4
                        })
                    }
                };
                let scale = self.scales[row * blocks + block];
                out.push((f32::from(q) - zp) * scale);
            }
        }
        out
    }
}

/// Quantises `weight` `[n, k]` (row-major) to 4 bits in blocks of `block_size` (even).
pub fn quantize(
    weight: &[f32],
    n: usize,
    k: usize,
    block_size: usize,
    zero_points_as: ZeroPoints,
) -> QuantizedWeight {
    assert_eq!(weight.len(), n * k, "weight is not [n, k]");
    assert!(block_size >= 2 && block_size.is_multiple_of(2));
    let blocks = k.div_ceil(block_size);
    let zp_row = blocks.div_ceil(2);
    let half = block_size / 2;
    let mut packed = vec![0u8; n * blocks * half];
    let mut scales = vec![0f32; n * blocks];
    let float = zero_points_as == ZeroPoints::Float;
    let mut zero_points = if float {
        Vec::new()
    } else {
        vec![0u8; n * zp_row]
    };
    let mut float_zero_points = if float {
        vec![0f32; n * blocks]
    } else {
        Vec::new()
    };
    for row in 0..n {
        for block in 0..blocks {
            let start = block * block_size;
            let end = (start + block_size).min(k);
            let values = &weight[row * k + start..row * k + end];
            if float {
                // The block's own range; a padded block keeps 0 inside it so padding is exact.
                let padded = end - start < block_size;
                let first = if padded { 0.0 } else { values[0] };
                let lo = values.iter().copied().fold(first, f32::min);
                let hi = values.iter().copied().fold(first, f32::max);
                let scale = if hi > lo { (hi - lo) / 15.0 } else { 1.0 };
                let zp = -lo / scale;
                scales[row * blocks + block] = scale;
                float_zero_points[row * blocks + block] = zp;
                for within in 0..block_size {
                    let w = values.get(within).copied().unwrap_or(0.0);
                    let q = ((w - lo) / scale).round().clamp(0.0, 15.0) as u8;
                    let index = (row * blocks + block) * half + within / 2;
                    packed[index] |= if within.is_multiple_of(2) { q } else { q << 4 };
                }
                continue;
            }
            let lo = values.iter().copied().fold(0f32, f32::min);
            let hi = values.iter().copied().fold(0f32, f32::max);
            let (scale, zp) = if hi > lo {
                let scale = (hi - lo) / 15.0;
                (scale, (-lo / scale).round().clamp(0.0, 15.0) as u8)
            } else {
                (1.0, 8)
            };
            scales[row * blocks + block] = scale;
            let zp_index = row * zp_row + block / 2;
            zero_points[zp_index] |= if block.is_multiple_of(2) { zp } else { zp << 4 };
            for within in 0..block_size {
                let q = match values.get(within) {
                    Some(&w) => ((w / scale).round() + f32::from(zp)).clamp(0.0, 15.0) as u8,
                    None => zp,
                };
                let index = (row * blocks + block) * half + within / 2;
                packed[index] |= if within.is_multiple_of(2) { q } else { q << 4 };
            }
        }
    }
    QuantizedWeight {
        n,
        k,
        block_size,
        packed,
        scales,
        zero_points,
        float_zero_points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn dequantized_values_are_within_half_a_step_of_the_weight() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // K = 44: one whole block and a padded one.
        let (n, k) = (5, 44);
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.3..0.2)).collect();
        let q = quantize(&w, n, k, 32, ZeroPoints::Packed);
        assert_eq!(q.packed.len(), n * 2 * 16);
        assert_eq!(q.zero_points.len(), n);
        let back = q.dequantize();
        for (i, (a, b)) in w.iter().zip(&back).enumerate() {
            let scale = q.scales[(i / k) * 2 + (i % k) / 32];
            assert!((a - b).abs() <= scale / 2.0 + 1e-6, "{i}: {a} vs {b}");
        }
        // The padding of the second block stands for zeros.
        let last_byte = q.packed[16 + 15];
        let zp = q.zero_points[0] >> 4;
        assert_eq!(last_byte, zp | (zp << 4));
    }

    #[test]
    fn float_zero_points_reproduce_a_q4_1_block_exactly() {
        // A block as llama.cpp's Q4_1 stores it: d * q + m with q spanning 0..=15.
        let (d, m) = (0.013f32, -0.071f32);
        let w: Vec<f32> = (0..32).map(|i| d * ((i * 7 % 16) as f32) + m).collect();
        let q = quantize(&w, 1, 32, 32, ZeroPoints::Float);
        assert!(q.zero_points.is_empty() && q.float_zero_points.len() == 1);
        for (a, b) in w.iter().zip(q.dequantize()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Packed zero points cannot: 0 must be on the grid.
        let packed = quantize(&w, 1, 32, 32, ZeroPoints::Packed).dequantize();
        let worst = w
            .iter()
            .zip(&packed)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst > 1e-4, "{worst}");
    }

    #[test]
    fn zero_is_exact_and_a_constant_block_is_kept() {
        let w = [0.0f32, 0.5, -0.25, 0.0, 0.0, 0.0, 0.0, 0.0];
        let q = quantize(&w, 1, 8, 4, ZeroPoints::Packed);
        let back = q.dequantize();
        assert_eq!(back[0], 0.0);
        assert_eq!(&back[4..], &[0.0; 4]);
        assert!((back[1] - 0.5).abs() < 0.03 && (back[2] + 0.25).abs() < 0.03);
    }
}
