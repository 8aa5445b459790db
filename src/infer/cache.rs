//! The decoder's key/value cache between the calls of one generation: where it lives
//! ([`CacheDevice`]), how it grows (a new present per call, or buffers written in place), and the
//! row operations generation needs (finished rows leaving, beams following their parents, rows
//! prefilled one by one stacked into a batch).

use ndarray::{ArrayD, Axis, s};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::value::{DynTensorValueType, DynValue, Tensor};

use super::config::{ExecutionProviderKind, ProviderConfig};
use super::engine::{EngineError, run_error};

/// A decoder cache: every layer's key and value, as ONNX Runtime values
/// `[batch, kv_heads, entries, head_dim]`.
pub type Cache = Vec<(DynValue, DynValue)>;

/// The decoder's cache between the calls of one generation.
pub(super) enum KvCache {
    /// The last call's present outputs (past ++ new tokens, a new tensor per call), on the
    /// decoder's [`CacheDevice`].
    Grown(Cache),
    /// Host buffers `[batch, kv_heads, capacity, head_dim]` that a GroupQueryAttention decoder
    /// reads and writes in place; the entries in use are the attention mask's width.
    InPlace(Buffers),
}

/// Every layer's in-place key and value buffer `[batch, kv_heads, capacity, head_dim]`.
pub(super) type Buffers = Vec<(Tensor<f32>, Tensor<f32>)>;

/// Where the decoder's cache lives between calls: the memory of the provider that runs the
/// decoder first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheDevice {
    /// Host memory (the CPU provider).
    Host,
    /// The memory of CUDA device `n` (the CUDA and TensorRT providers).
    Cuda(i32),
}

impl CacheDevice {
    /// The device of a session whose first provider is `primary` (ONNX Runtime's name), with
    /// the device ordinal from the configured `providers` (0 when not given).
    pub fn for_provider(primary: &str, providers: &[ProviderConfig]) -> CacheDevice {
        let gpu = [ExecutionProviderKind::Cuda, ExecutionProviderKind::Tensorrt];
        match providers
            .iter()
            .find(|p| gpu.contains(&p.kind) && p.kind.ort_name() == primary)
        {
            Some(p) => CacheDevice::Cuda(p.device_id.unwrap_or(0) as i32),
            None => CacheDevice::Host,
        }
    }

    fn allocation(self) -> (AllocationDevice<'static>, i32) {
        match self {
            CacheDevice::Host => (AllocationDevice::CPU, 0),
            CacheDevice::Cuda(id) => (AllocationDevice::CUDA, id),
        }
    }

    pub(super) fn memory_info(self) -> ort::Result<MemoryInfo<'static>> {
        let (device, id) = self.allocation();
        MemoryInfo::new(device, id, AllocatorType::Device, MemoryType::Default)
    }
}

/// Binds every `(key, value)` output name to `device`'s memory (ONNX Runtime allocates them
/// there at their computed shapes).
pub(super) fn bind_cache_outputs(
    binding: &mut IoBinding,
    names: &[(String, String)],
    device: CacheDevice,
) -> ort::Result<()> {
    let memory = device.memory_info()?;
    for (k, v) in names {
        binding.bind_output_to_device(k, &memory)?;
        binding.bind_output_to_device(v, &memory)?;
    }
    Ok(())
}

/// Takes every `(key, value)` output of `names` out of a run's outputs.
pub(super) fn take_cache(
    outputs: &mut ort::session::SessionOutputs<'_>,
    names: &[(String, String)],
    graph: &'static str,
) -> Result<Cache, EngineError> {
    let mut take = |name: &str| {
        outputs.remove(name).ok_or_else(|| EngineError::Run {
            graph,
            reason: format!("no output {name}"),
        })
    };
    names
        .iter()
        .map(|(k, v)| Ok((take(k)?, take(v)?)))
        .collect()
}

impl KvCache {
    /// The grown cache; an in-place one is an error (the prompt's call always returns grown).
    pub(super) fn into_grown(self) -> Result<Cache, EngineError> {
        match self {
            KvCache::Grown(cache) => Ok(cache),
            KvCache::InPlace(_) => Err(EngineError::Run {
                graph: "decoder",
                reason: "an in-place cache where the call's present outputs were expected".into(),
            }),
        }
    }

    /// The cache with its first `entries` entries: a grown cache is cut to them (the entries
    /// of lookup drafts greedy decoding did not confirm go); in-place buffers stay as they are
    /// (the next call's mask says which entries are in use; entries past it are never read and
    /// the next calls write over them). A device cache would be cut on the host (a round trip:
    /// the engine drafts only with a host cache).
    pub(super) fn keep_entries(
        self,
        entries: usize,
        device: CacheDevice,
    ) -> Result<KvCache, EngineError> {
        let KvCache::Grown(cache) = self else {
            return Ok(self);
        };
        let longer = |v: &DynValue| {
            v.dtype()
                .tensor_shape()
                .and_then(|shape| shape.get(2).copied())
                .is_some_and(|n| n > entries as i64)
        };
        if !cache.first().is_some_and(|(k, _)| longer(k)) {
            return Ok(KvCache::Grown(cache));
        }
        let fail = run_error("decoder");
        let cut = |v: &DynValue| -> Result<DynValue, EngineError> {
            let first = |a: ndarray::ArrayViewD<'_, f32>| {
                a.slice(s![.., .., ..entries, ..]).to_owned().into_dyn()
            };
            let array = match device {
                CacheDevice::Host => first(v.try_extract_array::<f32>().map_err(&fail)?),
                CacheDevice::Cuda(_) => first(host_array(v, device)?.view()),
            };
            on_device(array, device)
        };
        let cut = cache
            .iter()
            .map(|(k, v)| Ok((cut(k)?, cut(v)?)))
            .collect::<Result<_, EngineError>>()?;
        Ok(KvCache::Grown(cut))
    }

    /// The cache with only the batch rows `keep`, in that order (finished rows leave, beams
    /// follow their parents). Of an in-place cache only the `entries` in use are copied.
    pub(super) fn select_rows(
        self,
        keep: &[usize],
        entries: usize,
        device: CacheDevice,
    ) -> Result<KvCache, EngineError> {
        match self {
            KvCache::Grown(cache) => Ok(KvCache::Grown(select_rows(&cache, keep, device)?)),
            KvCache::InPlace(buffers) if keep.iter().copied().eq(0..buffers_rows(&buffers)) => {
                // Every row in its place (a beam step whose parents are its own rows).
                Ok(KvCache::InPlace(buffers))
            }
            KvCache::InPlace(buffers) => {
                let fail = run_error("decoder");
                let select = |buffer: &Tensor<f32>| -> Result<Tensor<f32>, EngineError> {
                    let from = buffer.try_extract_array::<f32>().map_err(&fail)?;
                    let mut shape = from.shape().to_vec();
                    shape[0] = keep.len();
                    let mut to = Tensor::<f32>::new(&Allocator::default(), shape).map_err(&fail)?;
                    let mut view = to.try_extract_array_mut::<f32>().map_err(&fail)?;
                    for (row, &r) in keep.iter().enumerate() {
                        view.slice_mut(s![row, .., ..entries, ..])
                            .assign(&from.slice(s![r, .., ..entries, ..]));
                    }
                    Ok(to)
                };
                let selected = buffers
                    .iter()
                    .map(|(k, v)| Ok((select(k)?, select(v)?)))
                    .collect::<Result<_, EngineError>>()?;
                Ok(KvCache::InPlace(selected))
            }
        }
    }
}

/// Puts a NaN in the last entry of `buffer` when a call with `entries` entries in use leaves it
/// unused; returns its index.
pub(super) fn set_sentinel(
    buffer: &mut Tensor<f32>,
    entries: usize,
) -> ort::Result<Option<Vec<usize>>> {
    let mut view = buffer.try_extract_array_mut::<f32>()?;
    let shape = view.shape().to_vec();
    if shape.len() != 4 || shape.contains(&0) || entries >= shape[2] {
        return Ok(None);
    }
    let at = vec![0, 0, shape[2] - 1, 0];
    view[at.as_slice()] = f32::NAN;
    Ok(Some(at))
}

/// Batch rows of in-place buffers.
fn buffers_rows(buffers: &Buffers) -> usize {
    buffers
        .first()
        .and_then(|(k, _)| k.shape().first().copied())
        .map_or(0, |rows| rows as usize)
}

/// A cache value as a host array (copied over from a device cache).
fn host_array(value: &DynValue, device: CacheDevice) -> Result<ArrayD<f32>, EngineError> {
    let fail = run_error("decoder");
    match device {
        CacheDevice::Host => Ok(value.try_extract_array::<f32>().map_err(&fail)?.to_owned()),
        CacheDevice::Cuda(_) => value
            .view()
            .downcast::<DynTensorValueType>()
            .and_then(|t| t.to(AllocationDevice::CPU, 0))
            .and_then(|t| t.try_extract_array::<f32>().map(|a| a.to_owned()))
            .map_err(&fail),
    }
}

/// A host array as a cache value on `device`.
fn on_device(array: ArrayD<f32>, device: CacheDevice) -> Result<DynValue, EngineError> {
    let fail = run_error("decoder");
    let value = Tensor::from_array(array).map_err(&fail)?;
    match device {
        CacheDevice::Host => Ok(value.into_dyn()),
        CacheDevice::Cuda(_) => {
            let (to, id) = device.allocation();
            Ok(value.to(to, id).map_err(&fail)?.into_dyn())
        }
    }
}

/// The batch rows `keep` of a grown cache, in that order, left on `device`. Rows are gathered
/// on the host: a device cache makes one round trip (compaction, beam steps and row-by-row
/// prefill only, never a plain greedy step).
pub(super) fn select_rows(
    past: &Cache,
    keep: &[usize],
    device: CacheDevice,
) -> Result<Cache, EngineError> {
    let fail = run_error("decoder");
    let select = |v: &DynValue| -> Result<DynValue, EngineError> {
        let rows = match device {
            CacheDevice::Host => v
                .try_extract_array::<f32>()
                .map_err(&fail)?
                .select(Axis(0), keep),
            CacheDevice::Cuda(_) => host_array(v, device)?.select(Axis(0), keep),
        };
        on_device(rows, device)
    };
    past.iter()
        .map(|(k, v)| Ok((select(k)?, select(v)?)))
        .collect()
}

/// The rows of `parts` (grown caches of the same entries), stacked in order into one.
pub(super) fn stack_rows(parts: &[Cache], device: CacheDevice) -> Result<Cache, EngineError> {
    let layers = parts.first().map_or(0, Vec::len);
    let stack = |pick: &dyn Fn(&(DynValue, DynValue)) -> &DynValue, layer: usize| {
        let arrays = parts
            .iter()
            .map(|part| host_array(pick(&part[layer]), device))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
        let stacked = ndarray::concatenate(Axis(0), &views).map_err(|e| EngineError::Run {
            graph: "decoder",
            reason: format!("stacking row caches: {e}"),
        })?;
        on_device(stacked, device)
    };
    (0..layers)
        .map(|layer| Ok((stack(&|kv| &kv.0, layer)?, stack(&|kv| &kv.1, layer)?)))
        .collect()
}

/// Host buffers `[rows, kv_heads, capacity, head_dim]` holding the rows of `parts` (grown host
/// caches of the same entries) in order, for in-place decoding (the entries past them zero:
/// `Tensor::new` zero-fills host memory, and the kernel reads only the entries in use).
pub(super) fn in_place_buffers(parts: &[Cache], capacity: usize) -> Result<Buffers, EngineError> {
    let fail = run_error("decoder");
    let layers = parts.first().map_or(0, Vec::len);
    let buffer = |pick: &dyn Fn(&(DynValue, DynValue)) -> &DynValue, layer: usize| {
        let arrays = parts
            .iter()
            .map(|part| pick(&part[layer]).try_extract_array::<f32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(&fail)?;
        let mut shape = arrays
            .first()
            .map(|a| a.shape().to_vec())
            .unwrap_or_default();
        let fits = |a: &ndarray::ArrayViewD<'_, f32>| {
            a.ndim() == 4 && a.shape()[1..] == shape[1..] && a.shape()[2] <= capacity
        };
        if shape.len() != 4 || !arrays.iter().all(fits) {
            return Err(EngineError::Run {
                graph: "decoder",
                reason: format!(
                    "row caches of shapes {:?} do not stack into {capacity} entries",
                    arrays
                        .iter()
                        .map(|a| a.shape().to_vec())
                        .collect::<Vec<_>>()
                ),
            });
        }
        let rows: usize = arrays.iter().map(|a| a.shape()[0]).sum();
        let entries = shape[2];
        shape[0] = rows;
        shape[2] = capacity;
        let mut tensor = Tensor::<f32>::new(&Allocator::default(), shape).map_err(&fail)?;
        let mut view = tensor.try_extract_array_mut::<f32>().map_err(&fail)?;
        let mut row = 0;
        for a in &arrays {
            let n = a.shape()[0];
            view.slice_mut(s![row..row + n, .., ..entries, ..])
                .assign(a);
            row += n;
        }
        Ok(tensor)
    };
    (0..layers)
        .map(|layer| Ok((buffer(&|kv| &kv.0, layer)?, buffer(&|kv| &kv.1, layer)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::config::ProviderPolicy;

    #[test]
    fn the_cache_stays_on_the_device_of_the_provider_that_runs_the_decoder() {
        use ExecutionProviderKind::{Cpu, Cuda, Tensorrt};
        let cuda1 = ProviderConfig {
            device_id: Some(1),
            ..ProviderConfig::new(Cuda, ProviderPolicy::Preferred)
        };
        let trt = ProviderConfig::new(Tensorrt, ProviderPolicy::Required);
        let cpu = ProviderConfig::new(Cpu, ProviderPolicy::Required);
        let configured = [trt, cuda1, cpu];
        assert_eq!(
            CacheDevice::for_provider(Cuda.ort_name(), &configured),
            CacheDevice::Cuda(1)
        );
        assert_eq!(
            CacheDevice::for_provider(Tensorrt.ort_name(), &configured),
            CacheDevice::Cuda(0)
        );
        // A preferred GPU that fell back: the decoder runs on the CPU, so does its cache.
        assert_eq!(
            CacheDevice::for_provider(Cpu.ort_name(), &configured),
            CacheDevice::Host
        );
        assert_eq!(
            CacheDevice::for_provider(Cpu.ort_name(), &[]),
            CacheDevice::Host
        );
    }
}
