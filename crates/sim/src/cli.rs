//! `rosbackup sim`: command-line flags and the run-until-signal loop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::{FaultSpec, SimConfig, SimError, Simulator};

/// Flags of `rosbackup sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Number of simulated devices.
    #[arg(long)]
    pub devices: usize,
    /// First listen address; device i listens on this address + i.
    #[arg(long, default_value = "127.0.1.1")]
    pub listen_base: Ipv4Addr,
    /// SSH port of every device (0 = ephemeral ports).
    #[arg(long, default_value_t = 2222)]
    pub port: u16,
    /// Put all devices on --listen-base with consecutive ports instead.
    #[arg(long)]
    pub one_address: bool,
    /// Faulty devices, e.g. "auth=2,hostkey=1,slow=3" (assigned from device 0 on).
    #[arg(long, default_value = "", long_help = faults_help())]
    pub faults: String,
    /// Write the device inventory CSV here.
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Write this host into the inventory instead of the listen addresses (e.g. the
    /// simulator's service name when it runs in a container: with --listen-base 0.0.0.0
    /// --one-address).
    #[arg(long)]
    pub inventory_host: Option<String>,
    /// Write this backup interval (seconds) for every device into the inventory, e.g.
    /// 60 for a demo whose changing devices should show new versions every minute.
    #[arg(long)]
    pub inventory_interval: Option<u32>,
    /// Copy each completed healthy export to DIR/<device_id>.rsc.
    #[arg(long)]
    pub export_dir: Option<PathBuf>,
    /// Serve the *.rsc files of this directory (cycled) instead of generated configs.
    #[arg(long)]
    pub configs: Option<PathBuf>,
    /// Generated config size in bytes (default: realistic per-device sizes).
    #[arg(long)]
    pub config_size: Option<usize>,
    /// Offer only RouterOS's SSH algorithms (RSA host keys; slow to start).
    #[arg(long)]
    pub routeros_algorithms: bool,
    /// Seconds every export waits before output starts.
    #[arg(long, default_value_t = 0.0)]
    pub export_delay: f64,
    /// Bytes streamed by the `huge` fault.
    #[arg(long, default_value_t = 40 * 1024 * 1024)]
    pub huge_bytes: u64,
    /// Seed for ids, credentials, host keys and configs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write per-device stats JSON here every second and at shutdown.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Append one JSON line per completed export here (device id, start/end time,
    /// bytes, SHA-256 of the bytes sent and of their normalized text; no config text).
    #[arg(long)]
    pub session_log: Option<PathBuf>,
}

impl SimArgs {
    pub fn into_config(self) -> Result<SimConfig, SimError> {
        let faults: FaultSpec = self.faults.parse()?;
        if !self.export_delay.is_finite() || self.export_delay < 0.0 {
            return Err(SimError::Config(format!(
                "--export-delay must be a non-negative number of seconds, got {}",
                self.export_delay
            )));
        }
        Ok(SimConfig {
            devices: self.devices,
            listen_base: self.listen_base,
            port: self.port,
            one_address: self.one_address,
            faults,
            configs_dir: self.configs,
            config_size: self.config_size,
            routeros_algorithms: self.routeros_algorithms,
            export_delay: Duration::from_secs_f64(self.export_delay),
            huge_bytes: self.huge_bytes,
            seed: self.seed,
            inventory: self.inventory,
            inventory_host: self.inventory_host,
            inventory_interval: self.inventory_interval,
            export_dir: self.export_dir,
            stats: self.stats,
            session_log: self.session_log,
            ..SimConfig::default()
        })
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Starts the fleet, prints a one-line summary to stderr, runs until Ctrl-C/SIGTERM.
pub async fn run_cli(args: SimArgs) -> Result<(), SimError> {
    let cfg = args.into_config()?;
    let sim = Simulator::start(cfg.clone()).await?;
    let devs = sim.devices();
    let (first, last) = match (devs.first(), devs.last()) {
        (Some(f), Some(l)) => (
            format!("{}:{}", f.host, f.port),
            format!("{}:{}", l.host, l.port),
        ),
        _ => (String::new(), String::new()),
    };
    let faults = if cfg.faults.0.is_empty() {
        "none".to_string()
    } else {
        cfg.faults.to_string()
    };
    let inventory = cfg
        .inventory
        .as_ref()
        .map(|p| format!("; inventory {}", p.display()))
        .unwrap_or_default();
    eprintln!(
        "rosbackup sim: {} devices {first} .. {last} (faults: {faults}; seed {}){inventory}; Ctrl-C to stop",
        devs.len(),
        cfg.seed
    );
    wait_for_signal().await;
    sim.shutdown().await;
    Ok(())
}

/// `--faults` in `--help`, with every mode there is (from the one list, `Fault::ALL`).
fn faults_help() -> String {
    let modes: Vec<&str> = crate::faults::Fault::ALL
        .iter()
        .map(|f| f.as_str())
        .collect();
    format!(
        "Faulty devices as MODE=COUNT,…, e.g. \"auth=2,hostkey=1,slow=3\" (assigned from \
         device 0 on). Modes: {}",
        modes.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SimArgs,
    }

    #[test]
    fn flags_to_config() {
        let w = Wrap::try_parse_from([
            "sim",
            "--devices",
            "5",
            "--faults",
            "auth=1,v6=2",
            "--export-delay",
            "0.25",
            "--one-address",
            "--port",
            "0",
            "--seed",
            "7",
        ])
        .expect("parse");
        let cfg = w.args.into_config().expect("config");
        assert_eq!(cfg.devices, 5);
        assert_eq!(cfg.faults.to_string(), "auth=1,v6=2");
        assert_eq!(cfg.export_delay, Duration::from_millis(250));
        assert!(cfg.one_address);
        assert_eq!(cfg.port, 0);
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.listen_base, Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(cfg.huge_bytes, 40 * 1024 * 1024);

        let w =
            Wrap::try_parse_from(["sim", "--devices", "1", "--faults", "bogus=1"]).expect("parse");
        let e = w.args.into_config().expect_err("bad spec");
        assert!(e.to_string().contains("unknown fault mode"), "{e}");
        assert!(
            Wrap::try_parse_from(["sim"]).is_err(),
            "--devices is required"
        );
    }
}
