//! The dependency graph of a pipeline's SQL models, built from the SQL itself.
//!
//! Each model file is parsed with DataFusion's SQL parser, and the tables it reads (CTE
//! names excluded) become its dependencies. A dependency must be an input table of the
//! pipeline or another model. Models run in dependency order, whatever order the pipeline
//! file lists them in. Errors name the file and, for table references, the line and column.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::{Spanned, visit_relations};

use super::model_name;
use crate::error::{PipelineError, Result};

/// One model file with the tables it reads.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    /// Tables the model reads, sorted by name.
    pub dependencies: Vec<String>,
}

/// Reads, parses and orders model files; `input_tables` are the tables the pipeline provides.
pub fn load_models(paths: &[PathBuf], input_tables: &[&str]) -> Result<Vec<Model>> {
    let mut models = Vec::with_capacity(paths.len());
    for path in paths {
        models.push(parse_model(path)?);
    }

    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    for model in &models {
        for dependency in &model.dependencies {
            if !input_tables.contains(&dependency.as_str()) && !names.contains(&dependency.as_str())
            {
                return Err(unknown_table(model, dependency, input_tables, &names));
            }
        }
    }
    order_models(models)
}

fn parse_model(path: &Path) -> Result<Model> {
    let name = model_name(path)?;
    let bytes = std::fs::read(path).map_err(|e| PipelineError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        PipelineError::Invalid(format!(
            "SQL model file {} is not valid UTF-8; save it as UTF-8",
            path.display()
        ))
    })?;
    // Editors on Windows may start the file with a byte-order mark.
    let sql = text.strip_prefix('\u{feff}').unwrap_or(&text).to_string();
    let invalid = |message: String| {
        PipelineError::Invalid(format!("SQL model {}: {message}", path.display()))
    };

    let mut statements = DFParser::parse_sql(&sql).map_err(|e| invalid(e.to_string()))?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => statement,
        (None, _) => return Err(invalid("the file contains no SQL statement".into())),
        (Some(_), false) => {
            return Err(invalid(
                "the file contains more than one statement; a model is one SELECT query".into(),
            ));
        }
    };
    if !matches!(&statement, Statement::Statement(inner) if matches!(**inner, datafusion::sql::sqlparser::ast::Statement::Query(_)))
    {
        return Err(invalid(
            "a model must be one SELECT (or WITH ... SELECT) query".into(),
        ));
    }

    let (tables, _ctes) =
        resolve_table_references(&statement, true).map_err(|e| invalid(e.to_string()))?;
    let dependencies: BTreeSet<String> = tables.iter().map(|t| t.table().to_string()).collect();
    Ok(Model {
        name,
        path: path.to_path_buf(),
        sql,
        dependencies: dependencies.into_iter().collect(),
    })
}

/// Returns the 1-based line and column where `table` is first referenced in the model.
fn locate(model: &Model, table: &str) -> Option<(u64, u64)> {
    let statements = DFParser::parse_sql(&model.sql).ok()?;
    let Some(Statement::Statement(statement)) = statements.front() else {
        return None;
    };
    let mut found = None;
    let _ = visit_relations(statement.as_ref(), |relation| {
        let matches = relation
            .0
            .last()
            .and_then(|part| part.as_ident())
            .is_some_and(|ident| ident.value.eq_ignore_ascii_case(table));
        if matches {
            let start = relation.span().start;
            found = Some((start.line, start.column));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

fn unknown_table(
    model: &Model,
    table: &str,
    input_tables: &[&str],
    models: &[&str],
) -> PipelineError {
    let known: Vec<&str> = input_tables.iter().chain(models).copied().collect();
    let location = locate(model, table)
        .map(|(line, column)| format!(":{line}:{column}"))
        .unwrap_or_default();
    let suggestion = closest(table, &known)
        .map(|name| format!("did you mean {name}? "))
        .unwrap_or_default();
    PipelineError::Invalid(format!(
        "{}{location}: unknown table {table}; {suggestion}known tables: {}",
        model.path.display(),
        known.join(", ")
    ))
}

/// Orders models so every model comes after the models it reads (Kahn's algorithm, keeping
/// the listed order among models that are ready together).
fn order_models(models: Vec<Model>) -> Result<Vec<Model>> {
    let index: HashMap<String, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.clone(), i))
        .collect();
    let mut placed = vec![false; models.len()];
    let mut order = Vec::with_capacity(models.len());

    while order.len() < models.len() {
        let ready = (0..models.len()).find(|&i| {
            !placed[i]
                && models[i]
                    .dependencies
                    .iter()
                    .filter_map(|d| index.get(d))
                    .all(|&d| placed[d])
        });
        match ready {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => return Err(cycle_error(&models, &index, &placed)),
        }
    }

    let mut slots: Vec<Option<Model>> = models.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .map(|i| slots[i].take().expect("each model is placed once"))
        .collect())
}

/// Builds the error that describes one cycle among the models that could not be placed.
fn cycle_error(models: &[Model], index: &HashMap<String, usize>, placed: &[bool]) -> PipelineError {
    let start = (0..models.len())
        .find(|&i| !placed[i])
        .expect("a model is unplaced");
    let mut path = vec![start];
    let mut current = start;
    loop {
        let next = models[current]
            .dependencies
            .iter()
            .filter_map(|d| index.get(d).copied())
            .find(|&d| !placed[d])
            .expect("an unplaced model depends on another unplaced model");
        if let Some(position) = path.iter().position(|&p| p == next) {
            let cycle: Vec<String> = path[position..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|&i| models[i].path.display().to_string())
                .collect();
            return PipelineError::Invalid(format!(
                "SQL models read each other in a cycle: {}; break it so each model only reads earlier ones",
                cycle.join(" -> ")
            ));
        }
        path.push(next);
        current = next;
    }
}

pub use paperclip_pipeline_file::closest;

#[cfg(test)]
mod tests {
    use super::*;

    const INPUTS: [&str; 2] = ["products", "observations"];

    fn write_models(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = files
            .iter()
            .map(|(name, sql)| {
                let path = dir.path().join(name);
                std::fs::write(&path, sql).unwrap();
                path
            })
            .collect();
        (dir, paths)
    }

    #[test]
    fn models_are_ordered_by_dependencies() {
        let (_dir, paths) = write_models(&[
            ("b.sql", "SELECT * FROM a JOIN observations USING (obsid)"),
            (
                "a.sql",
                "WITH x AS (SELECT * FROM products) SELECT * FROM x",
            ),
        ]);
        let models = load_models(&paths, &INPUTS).unwrap();
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            models[0].dependencies,
            ["products"],
            "CTE names are not dependencies"
        );
        assert_eq!(models[1].dependencies, ["a", "observations"]);
    }

    #[test]
    fn unknown_table_names_line_and_closest_name() {
        let (_dir, paths) = write_models(&[("a.sql", "SELECT *\nFROM prodcts")]);
        let error = load_models(&paths, &INPUTS).unwrap_err().to_string();
        assert!(
            error.contains("a.sql:2:6: unknown table prodcts"),
            "{error}"
        );
        assert!(error.contains("did you mean products?"), "{error}");
    }

    #[test]
    fn cycle_is_reported_with_its_files() {
        let (_dir, paths) =
            write_models(&[("a.sql", "SELECT * FROM b"), ("b.sql", "SELECT * FROM a")]);
        let error = load_models(&paths, &INPUTS).unwrap_err().to_string();
        assert!(error.contains("cycle"), "{error}");
        assert!(error.contains("a.sql -> "), "{error}");
        assert!(error.contains("b.sql"), "{error}");
    }

    #[test]
    fn non_query_statements_are_rejected() {
        let (_dir, paths) = write_models(&[("a.sql", "CREATE TABLE t AS SELECT 1")]);
        let error = load_models(&paths, &INPUTS).unwrap_err().to_string();
        assert!(error.contains("must be one SELECT"), "{error}");
        let (_dir, paths) = write_models(&[("a.sql", "SELECT 1; SELECT 2")]);
        let error = load_models(&paths, &INPUTS).unwrap_err().to_string();
        assert!(error.contains("more than one statement"), "{error}");
    }

    #[test]
    fn byte_order_mark_is_skipped_and_bad_bytes_named() {
        let (_dir, paths) = write_models(&[("a.sql", "\u{feff}SELECT 1 AS x")]);
        assert!(load_models(&paths, &INPUTS).is_ok());

        let (dir, paths) = write_models(&[("a.sql", "SELECT 1")]);
        std::fs::write(dir.path().join("a.sql"), b"SELECT '\xff'").unwrap();
        let error = load_models(&paths, &INPUTS).unwrap_err().to_string();
        assert!(
            error.contains("a.sql is not valid UTF-8; save it as UTF-8"),
            "{error}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let (_dir, paths) = write_models(&[("a.sql", "SELEC 1")]);
        let error = load_models(&paths, &INPUTS).unwrap_err().to_string();
        assert!(error.contains("a.sql"), "{error}");
    }
}
