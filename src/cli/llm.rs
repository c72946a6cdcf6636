//! The language model backend that `--backend`, `--server` and the other [`LlmArgs`]
//! flags choose, shared by `summarize` and `judge`.

use anyhow::{Context, Result, bail};
use paperclip::pipeline::config::SummariesSection;
use paperclip::summaries::SummaryBackend;
use paperclip::summaries::http::{HttpBackend, HttpBackendConfig};
use paperclip::summaries::local::{LocalBackend, LocalBackendConfig};

use super::LlmArgs;

/// Builds the backend the flags choose; see [`LlmArgs::backend`].
pub(super) fn backend(args: &LlmArgs) -> Result<Box<dyn SummaryBackend>> {
    let kind = args.backend.as_deref().unwrap_or(if args.server.is_some() {
        "http"
    } else {
        "local"
    });
    match (kind, &args.server) {
        ("http", Some(server)) => Ok(Box::new(http_backend(args, server)?)),
        ("http", None) => bail!("--backend http needs --server URL (e.g. http://127.0.0.1:8080)"),
        (_, Some(_)) => bail!(
            "--server is for --backend http; leave it out to run the model in process, or drop --backend local"
        ),
        _ => {
            let section = SummariesSection {
                model_path: args.model_path.clone(),
                threads: args.threads.map(|t| t as usize),
                ..SummariesSection::default()
            };
            let config = LocalBackendConfig {
                model_path: section.local_model_path(),
                threads: section.local_threads(),
            };
            Ok(Box::new(LocalBackend::new(config)?))
        }
    }
}

fn http_backend(args: &LlmArgs, server: &str) -> Result<HttpBackend> {
    let mut config = HttpBackendConfig::new(server.to_string(), args.model.clone());
    config.api_key_env = args.api_key_env.clone();
    config.timeout_secs = args.timeout_secs;
    config.max_concurrency = usize::try_from(args.concurrency).unwrap_or(1);
    HttpBackend::new(config).context("cannot set up the connection to the language model server")
}
