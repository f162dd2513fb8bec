//! Metrics of a real `spegel-node` over a real containerd: the `/metrics` endpoint and the
//! node-exporter textfile, which must parse as Prometheus text every time it is read, while
//! the node rewrites it ten times a second.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spegel_testbed::{Containerd, ImageSpec, SpegelNode, Upstream, http};

const REPO: &str = "test/metrics";

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

#[tokio::test]
async fn the_textfile_and_the_endpoint_count_registry_requests_and_the_textfile_is_never_half_written()
-> Result<()> {
    spegel_testbed::require_root_tools()?;
    let upstream = Upstream::start().await?;
    let layout = tempfile::tempdir()?;
    let spec = ImageSpec {
        layers: vec![300_000],
        multi_platform: false,
    };
    let image = spegel_testbed::build_oci_layout(layout.path(), &spec, "v1")?;
    spegel_testbed::push(&image, &upstream.host(), REPO).await?;
    let containerd = Containerd::start().await?;
    containerd.mirror_to(&upstream.host())?;
    containerd
        .cri_pull(&format!("{}/{REPO}:v1", upstream.host()))
        .await?;
    let metrics_addr = spegel_testbed::port::free_loopback_addr()?.to_string();
    let node = SpegelNode::start(
        &containerd,
        &[
            "--metrics-addr",
            &metrics_addr,
            "--metrics-textfile-interval",
            "100ms",
        ],
    )
    .await?;
    let layer = &image.layer_digests[0];
    let blob = format!("{}/v2/{REPO}/blobs/{layer}", node.url());
    for _ in 0..3 {
        assert_eq!(http::get(&blob, &[]).await?.status, 200);
    }
    assert_eq!(http::head(&blob, &[]).await?.status, 200);

    // Read the textfile as fast as possible while it is being replaced.
    let path = node.textfile_path();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut reads = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        let Ok(text) = std::fs::read_to_string(&path) else {
            tokio::task::yield_now().await;
            continue;
        };
        let final_line = text.lines().last().unwrap_or_default();
        assert!(
            text.ends_with('\n') && final_line.starts_with("spegel_process_cpu_seconds_total "),
            "half-written:\n{text}"
        );
        parse(&text);
        reads += 1;
        last = text;
    }
    assert!(reads > 10, "only {reads} reads");

    let scrape = parse(&last);
    let get = [("handler", "blob"), ("method", "GET"), ("code", "200")];
    let size = sample(&scrape, "http_response_size_bytes", &get).context("no blob GET size")?;
    match &size.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let count = buckets.last().unwrap().count;
            assert_eq!(count, 3.0, "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert!(
        sample(
            &scrape,
            "http_request_duration_seconds",
            &[("handler", "blob"), ("method", "HEAD")]
        )
        .is_some()
    );
    assert!(sample(&scrape, "http_requests_inflight", &[("handler", "blob")]).is_some());
    let rss = sample(&scrape, "spegel_process_resident_memory_bytes", &[]).context("no RSS")?;
    assert!(
        matches!(rss.value, prometheus_parse::Value::Gauge(v) if v > 1e6),
        "{:?}",
        rss.value
    );
    assert!(matches!(
        sample(&scrape, "spegel_process_cpu_seconds_total", &[])
            .context("no CPU")?
            .value,
        prometheus_parse::Value::Counter(_)
    ));

    let endpoint = http::get(&format!("http://{metrics_addr}/metrics"), &[]).await?;
    assert_eq!(endpoint.status, 200);
    assert_eq!(
        endpoint.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let scraped = parse(&endpoint.text());
    assert!(sample(&scraped, "http_response_size_bytes", &get).is_some());
    let openmetrics = http::get(
        &format!("http://{metrics_addr}/metrics"),
        &[("accept", "application/openmetrics-text;version=1.0.0")],
    )
    .await?;
    assert!(openmetrics.text().ends_with("# EOF\n"));
    Ok(())
}

#[tokio::test]
async fn the_textfile_is_removed_on_a_clean_shutdown() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let containerd = Containerd::start().await?;
    let mut node =
        SpegelNode::start(&containerd, &["--metrics-textfile-interval", "100ms"]).await?;
    let path = node.textfile_path();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no textfile at {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(node.terminate().await?.success());

    assert!(!path.exists());
    Ok(())
}
