//! What machine a participant runs on: CPU model, RAM, GPU and VRAM, from `/proc` and
//! `nvidia-smi` / `lspci` on Linux, `sysctl` and `system_profiler` on macOS. Every probe is
//! optional: what cannot be found is left out.

use std::process::Command;

use serde_json::Number;

use crate::types::MachineSpecs;

/// Detect this machine's specs (blocking: runs a few short commands).
pub fn detect() -> MachineSpecs {
    let mut specs = MachineSpecs {
        cpu: cpu_model(),
        ram: ram_gb().map(Number::from),
        ..MachineSpecs::default()
    };
    if let Some((gpu, vram)) = gpu() {
        specs.gpu = Some(gpu);
        specs.vram = vram.map(Number::from);
    }
    specs
}

/// One line per known spec, for printing.
pub fn describe(specs: &MachineSpecs) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &specs.cpu {
        out.push(format!("CPU:  {c}"));
    }
    if let Some(r) = &specs.ram {
        out.push(format!("RAM:  {r} GB"));
    }
    match (&specs.gpu, &specs.vram) {
        (Some(g), Some(v)) => out.push(format!("GPU:  {g} ({v} GB VRAM)")),
        (Some(g), None) => out.push(format!("GPU:  {g}")),
        _ => {}
    }
    out
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn cpu_model() -> Option<String> {
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        for key in ["model name", "Hardware", "Model"] {
            if let Some(v) = info.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            }) {
                return Some(v);
            }
        }
    }
    run("sysctl", &["-n", "machdep.cpu.brand_string"])
}

/// Total RAM in whole GB.
fn ram_gb() -> Option<u64> {
    if let Ok(info) = std::fs::read_to_string("/proc/meminfo") {
        let kb: u64 = info
            .lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        return Some((kb as f64 / 1024.0 / 1024.0).round() as u64);
    }
    let bytes: u64 = run("sysctl", &["-n", "hw.memsize"])?.parse().ok()?;
    Some((bytes as f64 / 1e9).round() as u64)
}

/// GPU name and VRAM in GB where it can be told.
fn gpu() -> Option<(String, Option<u64>)> {
    if let Some(out) = run(
        "nvidia-smi",
        &[
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ],
    ) {
        let first = out.lines().next()?;
        let (name, mib) = first.split_once(',')?;
        let vram = mib
            .trim()
            .parse::<f64>()
            .ok()
            .map(|m| (m / 1024.0).round() as u64);
        return Some((name.trim().to_string(), vram));
    }
    if let Some(out) = run("lspci", &[])
        && let Some(line) = out.lines().find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("vga compatible")
                || l.contains("3d controller")
                || l.contains("display controller")
        })
    {
        let name = line
            .splitn(3, ':')
            .nth(2)
            .unwrap_or(line)
            .trim()
            .to_string();
        return Some((name, None));
    }
    if let Some(out) = run("system_profiler", &["SPDisplaysDataType"]) {
        let field = |key: &str| {
            out.lines().find_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let name = field("Chipset Model")?;
        let vram = field("VRAM (Total)")
            .or_else(|| field("VRAM (Dynamic, Max)"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|n| if n > 256 { n / 1024 } else { n });
        return Some((name, vram));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_something_here_and_describes_it() {
        let s = detect();
        // Every Linux machine that runs the tests has /proc.
        if cfg!(target_os = "linux") {
            assert!(s.cpu.is_some() || s.ram.is_some());
        }
        let lines = describe(&MachineSpecs {
            gpu: Some("RTX 4090".into()),
            vram: Some(Number::from(24)),
            ram: Some(Number::from(64)),
            cpu: Some("Ryzen".into()),
        });
        assert_eq!(
            lines,
            ["CPU:  Ryzen", "RAM:  64 GB", "GPU:  RTX 4090 (24 GB VRAM)"]
        );
    }
}
