//! `rosbackup probe`: a health check without curl.
//!
//! The runtime image is a slim Debian without curl or wget, yet every long-running service
//! needs a health check: docker-compose's `healthcheck` runs this against the service's
//! `/healthz`. It is a bare HTTP/1.1 GET over a TCP stream on purpose (`http://` only,
//! the status line printed, exit 0 on 2xx, 1 otherwise): no TLS or client library to
//! carry, and nothing that can hang past `--timeout`.

use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// e.g. http://127.0.0.1:8080/healthz
    url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

/// GET an http:// URL; 2xx → exit 0.
pub async fn run(ProbeArgs { url, timeout }: ProbeArgs) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("probe: only http:// URLs, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match tokio::time::timeout(Duration::from_secs(timeout), fetch).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("probe {url}: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(_) => {
            eprintln!("probe {url}: no answer within {timeout} s");
            return Ok(ExitCode::from(1));
        }
    };
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or("").to_string();
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    println!("{status}");
    Ok(if (200..300).contains(&code) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
