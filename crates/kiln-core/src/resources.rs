//! Resource usage of the current process, for run metrics: peak resident memory and CPU time.
//! Read from `/proc` on Linux; `None` elsewhere.

use serde::Serialize;

/// Peak memory and CPU time of this process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// User CPU seconds.
    pub user_cpu_seconds: Option<f64>,
    /// System CPU seconds.
    pub system_cpu_seconds: Option<f64>,
}

/// Memory of one GPU, from NVIDIA's NVML.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuMemory {
    /// NVML device index.
    pub index: u32,
    /// Device name.
    pub name: String,
    /// Bytes in use (by every process).
    pub used_bytes: u64,
    /// Total bytes.
    pub total_bytes: u64,
}

/// Memory of every NVIDIA GPU, or why it cannot be read (no `gpu` feature, no driver).
pub fn gpu_memory() -> Result<Vec<GpuMemory>, String> {
    #[cfg(feature = "gpu")]
    {
        let nvml = nvml_wrapper::Nvml::init()
            .map_err(|e| format!("NVML is not available ({e}); is the NVIDIA driver installed?"))?;
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        (0..count)
            .map(|index| {
                let d = nvml.device_by_index(index).map_err(|e| e.to_string())?;
                let m = d.memory_info().map_err(|e| e.to_string())?;
                Ok(GpuMemory {
                    index,
                    name: d.name().unwrap_or_default(),
                    used_bytes: m.used,
                    total_bytes: m.total,
                })
            })
            .collect()
    }
    #[cfg(not(feature = "gpu"))]
    Err("this kiln was built without the `gpu` feature (GPU memory through NVML)".into())
}

/// Current resident set size (VmRSS) in bytes, when the OS reports it.
pub fn current_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Reads the current process's usage.
pub fn usage() -> Usage {
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        });
    // Fields 14 and 15 of /proc/self/stat (after the parenthesised command name) are user and
    // system time in clock ticks; Linux reports them at 100 ticks per second.
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((
                f.get(11)?.parse::<f64>().ok()? / 100.0,
                f.get(12)?.parse::<f64>().ok()? / 100.0,
            ))
        });
    Usage {
        peak_rss_bytes: peak,
        user_cpu_seconds: cpu.map(|c| c.0),
        system_cpu_seconds: cpu.map(|c| c.1),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gpu_memory_is_read_or_says_why_not() {
        match super::gpu_memory() {
            Ok(gpus) => assert!(gpus.iter().all(|g| g.total_bytes >= g.used_bytes)),
            Err(why) => assert!(
                why.contains("gpu") || why.contains("NVML") || why.contains("NVIDIA"),
                "{why}"
            ),
        }
    }

    #[test]
    fn usage_is_plausible_on_linux() {
        let u = super::usage();
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(u.peak_rss_bytes.is_some_and(|b| b > 1024 * 1024), "{u:?}");
            assert!(u.user_cpu_seconds.is_some_and(|s| s >= 0.0));
        }
    }
}
