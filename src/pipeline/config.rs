//! Loading a pipeline file. [`PipelineConfig::parse`] (in `paperclip_pipeline_file`) reads
//! the text and checks its values. [`load`] then runs the checks that need the file
//! system, the query engine or the scheduler's calendar. Those cover the SQL models,
//! source tables, the catalog path, the prompt template, the schedule and the retention
//! rules.

use std::path::{Path, PathBuf};

pub use paperclip_pipeline_file::*;

use crate::dataset::retention::{RetentionPolicy, Spelling};
use crate::error::PipelineError;
use crate::summaries::prompt::PromptTemplate;

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<PipelineConfig, PipelineError> {
    let invalid = |message: String| PipelineError::Config {
        path: path.to_path_buf(),
        message,
    };
    // A FIFO or a device would block the read or never end.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(invalid(format!(
            "{} is not a regular file; give the path of a pipeline TOML file",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })?;

    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let config = PipelineConfig::parse(&bytes, base_dir).map_err(invalid)?;

    check_beyond_text(&config).map_err(invalid)?;
    Ok(config)
}

/// Runs the checks that read other files or need the scheduler's calendar.
fn check_beyond_text(config: &PipelineConfig) -> Result<(), String> {
    if config.summaries.enabled {
        summary_prompt(config)?;
    }
    if let Some(schedule) = &config.schedule {
        crate::schedule::Schedule::from_section(schedule).map_err(|error| error.to_string())?;
    }
    check_catalog_path(config)?;
    crate::sql::sources::check_sources(config)?;
    RetentionPolicy::from(&config.retention).check(Spelling::PipelineFile)?;
    check_models(config)
}

/// Checks that a catalog given as a path names a file.
fn check_catalog_path(config: &PipelineConfig) -> Result<(), String> {
    if config.archive.catalog_is_url() {
        return Ok(());
    }
    let path = config.resolve(Path::new(&config.archive.catalog));
    if path.is_file() {
        return Ok(());
    }
    Err(format!(
        "archive.catalog = {:?} resolves to {}, which is not a file; paths are relative to the pipeline file",
        config.archive.catalog,
        path.display()
    ))
}

impl From<&RetentionSection> for RetentionPolicy {
    fn from(section: &RetentionSection) -> Self {
        RetentionPolicy {
            keep_last: section.keep_last,
            keep_days: section.keep_days,
        }
    }
}

/// Returns the prompt template of `[summaries]`: the `prompt` file, else the built-in one.
pub fn summary_prompt(config: &PipelineConfig) -> Result<PromptTemplate, String> {
    let Some(path) = &config.summaries.prompt else {
        return Ok(PromptTemplate::current());
    };
    let full = config.resolve(path);
    let text = std::fs::read_to_string(&full).map_err(|e| {
        format!(
            "summaries.prompt = {:?}: cannot read {} ({e}); give a UTF-8 text file relative to the pipeline file",
            path.display().to_string(),
            full.display()
        )
    })?;
    PromptTemplate::parse(&path.display().to_string(), &text)
        .map_err(|e| format!("summaries.prompt = {:?}: {e}", path.display().to_string()))
}

/// Checks that every model file exists, that the models form a graph over known tables,
/// and that `samples_model` names one of them.
fn check_models(config: &PipelineConfig) -> Result<(), String> {
    let mut names = Vec::new();
    for model in &config.sql.models {
        let path = config.resolve(model);
        if !path.is_file() {
            return Err(format!(
                "sql.models lists {}, which resolves to {}, a file that does not exist; paths are relative to the pipeline file",
                model.display(),
                path.display()
            ));
        }
        let name = crate::sql::model_name(&path).map_err(|e| e.to_string())?;
        if super::tables::INPUT_TABLES.contains(&name.as_str()) {
            return Err(format!(
                "sql.models lists {}, whose name {name} is an input table; rename the file",
                model.display()
            ));
        }
        if names.contains(&name) {
            let listed_twice = config.sql.models.iter().filter(|m| *m == model).count() > 1;
            return Err(if listed_twice {
                format!("sql.models lists {} twice; remove one", model.display())
            } else {
                format!(
                    "sql.models lists two models named {name}; each model needs its own file name"
                )
            });
        }
        names.push(name);
    }
    let paths: Vec<PathBuf> = config
        .sql
        .models
        .iter()
        .map(|m| config.resolve(m))
        .collect();
    crate::sql::graph::load_models(&paths, &crate::sql::sources::input_tables(config))
        .map_err(|e| e.to_string())?;
    if let Some(candidates) = &config.sql.candidates_model
        && !names.contains(candidates)
    {
        return Err(format!(
            "sql.candidates_model = {candidates:?} is not one of the models ({}); use the file stem of the model that returns every accepted product, or leave it out",
            names.join(", ")
        ));
    }
    if !names.contains(&config.sql.samples_model) {
        return Err(format!(
            "sql.samples_model = {:?} is not one of the models ({}); use the file stem of the model that returns the samples",
            config.sql.samples_model,
            names.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod summaries_tests;
#[cfg(test)]
mod tests;
