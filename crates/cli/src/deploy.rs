//! `edge-node deploy`: the upload with a progress bar and a ticking
//! "compiling…", to one node or every member of its cluster, and the
//! function's `wasi:config` variables set after it.

use crate::cli::{NodeArg, check, endpoint};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::path::Path;

/// What `deploy` sends besides the component.
pub(crate) struct DeployPlan<'a> {
    pub(crate) name: &'a str,
    /// The upload route with its query.
    pub(crate) path: String,
    /// The variables to set after the upload (`None`: leave them as they are).
    pub(crate) config: Option<BTreeMap<String, String>>,
    /// To every member of the cluster.
    pub(crate) all: bool,
}

/// The variables given as `KEY=VALUE` flags and in `KEY=VALUE` files (one
/// per line; blank lines and `#` comments skipped), flags last; `None`
/// when neither is given.
pub(crate) fn config_from(
    pairs: &[String],
    files: &[std::path::PathBuf],
) -> Result<Option<BTreeMap<String, String>>> {
    if pairs.is_empty() && files.is_empty() {
        return Ok(None);
    }
    let mut vars = BTreeMap::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = split_pair(line)
                .with_context(|| format!("{}:{}", Path::new(file).display(), n + 1))?;
            vars.insert(k, v);
        }
    }
    for pair in pairs {
        let (k, v) = split_pair(pair)?;
        vars.insert(k, v);
    }
    Ok(Some(vars))
}

fn split_pair(pair: &str) -> Result<(String, String)> {
    match pair.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => bail!("expected KEY=VALUE, got {pair:?}"),
    }
}

/// The deploy route, with its options.
pub(crate) fn deploy_path(
    name: &str,
    flush_interval_ms: Option<u64>,
    allow_hosts: &[String],
) -> String {
    let mut query = Vec::new();
    if let Some(ms) = flush_interval_ms {
        query.push(format!("flush_interval_ms={ms}"));
    }
    if !allow_hosts.is_empty() {
        query.push(format!("allow_hosts={}", allow_hosts.join(",")));
    }
    match query.is_empty() {
        true => format!("/v1/functions/{name}"),
        false => format!("/v1/functions/{name}?{}", query.join("&")),
    }
}

/// Uploads `bytes` as the plan's function to the node, or to every member
/// of its cluster, then sets its variables there; fails naming each node
/// that refused either.
pub(crate) async fn deploy(
    node: &NodeArg,
    plan: DeployPlan<'_>,
    bytes: bytes::Bytes,
) -> Result<()> {
    let DeployPlan {
        name,
        path,
        config,
        all,
    } = plan;
    let client = node.client()?;
    let (targets, path) = if all {
        // Recorded as the cluster's: nodes that join later deploy it too.
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}cluster=true");
        (cluster_members(&client, &node.url).await?, path)
    } else {
        (vec![node.url.clone()], path)
    };
    let mut failed = Vec::new();
    for base in &targets {
        let uploaded = upload(&client, base, &path, bytes.clone()).await;
        let done = match (uploaded, &config) {
            (Ok(info), Some(vars)) => put_config(&client, base, name, vars)
                .await
                .map(|keys| (info, Some(keys))),
            (Ok(info), None) => Ok((info, None)),
            (Err(e), _) => Err(e),
        };
        match done {
            Ok((info, keys)) => println!(
                "deployed {name} to {base}: {} bytes, sha256 {}, compiled in {:.1} ms{}",
                info["size"],
                info["digest"].as_str().unwrap_or("?"),
                info["compile_ms"].as_f64().unwrap_or(0.0),
                keys.map_or_else(String::new, |k| format!(", config: {}", k.join(", ")))
            ),
            Err(e) => {
                eprintln!("{base}: {e:#}");
                failed.push(base.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{name} not deployed to {} of {} node(s): {}",
            failed.len(),
            targets.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The URLs of the live members of `base`'s cluster.
async fn cluster_members(client: &reqwest::Client, base: &str) -> Result<Vec<String>> {
    let response = client
        .get(endpoint(base, "/v1/cluster"))
        .send()
        .await
        .with_context(|| format!("asking {base} for its cluster"))?;
    let view: serde_json::Value = check(response).await?.json().await?;
    let urls: Vec<String> = view["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m["url"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if urls.is_empty() {
        bail!("{base} lists no members");
    }
    Ok(urls)
}

/// Streams `bytes` to `base` with a progress bar, then shows the compile
/// time ticking until the node answers.
async fn upload(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    bytes: bytes::Bytes,
) -> Result<serde_json::Value> {
    let total = bytes.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = bar.clone();
    let chunks: Vec<bytes::Bytes> = bytes.chunks(64 << 10).map(|c| bytes.slice_ref(c)).collect();
    let stream = futures_util::stream::iter(chunks).map(move |chunk| {
        progress.inc(chunk.len() as u64);
        if progress.position() >= total {
            compiling(&progress);
        }
        Ok::<_, std::io::Error>(chunk)
    });
    let response = client
        .put(endpoint(base, path))
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .with_context(|| format!("uploading to {base}"));
    bar.finish_and_clear();
    Ok(check(response?).await?.json().await?)
}

/// Turns the upload bar into a ticking "compiling… 3s" once every byte is
/// sent: the node answers only when the component is compiled.
fn compiling(bar: &indicatif::ProgressBar) {
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} compiling… {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.reset_elapsed();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
}

/// Replaces function `name`'s variables at `base`; returns their names.
async fn put_config(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let response = client
        .put(endpoint(base, &format!("/v1/functions/{name}/config")))
        .json(vars)
        .send()
        .await
        .with_context(|| format!("setting the configuration at {base}"))?;
    let answer: serde_json::Value = check(response).await?.json().await?;
    Ok(answer["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
