//! Retry logging, in its own test binary: the log capture uses a thread-local
//! subscriber, and tracing caches per-callsite interest across threads, so other tests
//! running in parallel in the same process could hide these events.

mod support;

use paperclip_archive::server::ServeOptions;
use support::{Harness, LogCapture, observation_row};

#[tokio::test]
async fn retry_503_twice_then_success() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let options = ServeOptions {
        fail_first_n: 2,
        fail_status: 503,
        ..ServeOptions::default()
    };
    let harness = Harness::start(
        options,
        |writer| {
            writer
                .add_observations(vec![observation_row(1, 13012)])
                .unwrap();
        },
        |_| {},
    )
    .await;

    let observations = harness
        .client
        .observations_for_proposals(&[13012])
        .await
        .unwrap();

    assert_eq!(observations.len(), 1);
    let stats = harness.client.stats();
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.requests, 3);
    let text = logs.text();
    assert_eq!(
        text.matches("retrying archive request").count(),
        2,
        "{text}"
    );
    assert!(text.contains("Mast.Caom.Filtered"), "{text}");
    assert!(text.contains("attempt=1"), "{text}");
    assert!(text.contains("attempt=2"), "{text}");
    assert!(text.contains("HTTP 503"), "{text}");
}
